# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The benchmarks do not run in the test suite (they need the traces, the lab and minutes each), so a name one of them
takes from a project module that no longer has it is only found when someone runs that benchmark:
``stateless_history.py`` called ``forecast_accuracy.ORIGINS`` and ``naive_value`` for months after both were gone.
This reads every benchmark (no import, no run) and checks that each name it takes from a project module, by
``from M import name`` or as ``alias.name`` after ``import M as alias``, is defined at the top level of M."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, 'benchmarks')
COLLECTION = 'ansible_collections.shadownet.proxmox.'
MODULE_ATTRIBUTES = {'__file__', '__name__', '__doc__', '__dict__', '__spec__', '__path__', '__loader__'}


def module_file(name):
    """The project file of module ``name`` (a benchmark helper, the lab, the collection), or None for others."""
    parts = name.split('.')
    if name.startswith(COLLECTION):
        base = os.path.join(ROOT, *parts[3:])
    elif parts[0] == 'lab':
        base = os.path.join(ROOT, 'tests', *parts)
    elif len(parts) == 1:
        base = next((os.path.join(d, name) for d in (BENCH, os.path.join(BENCH, 'community'))
                     if os.path.exists(os.path.join(d, name + '.py'))), None)
        if base is None:
            return None
    else:
        return None
    for path in (base + '.py', os.path.join(base, '__init__.py')):
        if os.path.exists(path):
            return path
    return None


def top_level_names(path):
    """Names a module defines at its top level (also inside top-level if / try blocks)."""
    names = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split('.')[0] for a in node.names)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in [node.body, node.orelse, node.finalbody] + [h.body for h in node.handlers]:
                    visit(block)
    with open(path) as fh:
        visit(ast.parse(fh.read(), path).body)
    return names


def missing_references(path):
    """``(line, 'module.name')`` for every name ``path`` takes from a project module that does not define it."""
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    aliases, missing = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and module_file(a.name):
                    aliases[a.asname] = a.name
                elif not a.asname and '.' not in a.name and module_file(a.name):
                    aliases[a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and module_file(node.module):
            defined = top_level_names(module_file(node.module))
            for a in node.names:
                sub = node.module + '.' + a.name
                if a.name not in defined and module_file(sub):          # a submodule of a package
                    aliases[a.asname or a.name] = sub
                elif a.name != '*' and a.name not in defined:
                    missing.append((node.lineno, sub))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = aliases[node.value.id]
            if node.attr not in top_level_names(module_file(module)) | MODULE_ATTRIBUTES:
                missing.append((node.lineno, '%s.%s' % (module, node.attr)))
    return missing


BENCHMARKS = sorted(f for f in os.listdir(BENCH) if f.endswith('.py'))


@pytest.mark.parametrize('name', BENCHMARKS)
def test_every_name_a_benchmark_takes_from_a_project_module_exists(name):
    assert missing_references(os.path.join(BENCH, name)) == []


def test_the_check_finds_a_name_that_is_gone(tmp_path):
    """The check itself: the two names stateless_history.py used to take from forecast_accuracy.py are reported,
    the ones it takes now are not."""
    script = tmp_path / 'old_bench.py'
    script.write_text('import forecast_accuracy as fa\nfrom _traces import vm_names, load_vm\n'
                      'print(fa.WEEK, fa.ORIGINS, fa.naive_value, fa.last_observed, vm_names, load_vm)\n')
    assert missing_references(str(script)) == [(3, 'forecast_accuracy.ORIGINS'), (3, 'forecast_accuracy.naive_value')]
    script.write_text('from lab.netns import Lab, NoSuchThing\n')
    assert missing_references(str(script)) == [(1, 'lab.netns.NoSuchThing')]
