# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load a helper of ``benchmarks/`` (not a package) by its file, for the tests that check it or share its shapes."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(ROOT, 'benchmarks')


def load(name):
    """The module ``benchmarks/<name>.py``, loaded afresh under the name ``bench_<name>``; the benchmarks' own
    folder goes on ``sys.path`` as when they run, for their ``import _traces``."""
    if BENCHMARKS not in sys.path:
        sys.path.append(BENCHMARKS)
    spec = importlib.util.spec_from_file_location('bench_' + name.lstrip('_'),
                                                  os.path.join(BENCHMARKS, name + '.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
