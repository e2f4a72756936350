"""Shared pytest setup: the collection is importable as ansible_collections.shadownet.proxmox."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
LINK = os.path.join(COLLECTIONS, 'ansible_collections', 'shadownet', 'proxmox')

if not os.path.exists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(ROOT, LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
os.environ.setdefault('ANSIBLE_COLLECTIONS_PATH', COLLECTIONS)
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
if os.path.join(ROOT, 'tests') not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, 'tests'))

SKIPS_ALLOWED = 'SHADOWNET_ALLOW_SKIPS'


def pytest_addoption(parser):
    parser.addoption('--fail-on-skip', action='store_true', default=False,
                     help='fail the run when a test is skipped (make test passes it; set %s=1 to allow skips, '
                          'e.g. without root or keepalived)' % SKIPS_ALLOWED)


def _skipped(config):
    reporter = config.pluginmanager.get_plugin('terminalreporter')
    return len(reporter.stats.get('skipped', [])) if reporter is not None else 0


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    count = _skipped(config)
    if count and config.getoption('fail_on_skip'):
        terminalreporter.write_line('%d test(s) skipped: a skipped test tested nothing, so the run fails (the '
                                    'SKIPPED lines say why; run as root after scripts/setup-system.sh and '
                                    'scripts/setup-venv.sh, or set %s=1 to allow skips)'
                                    % (count, SKIPS_ALLOWED), red=True, bold=True)


def pytest_sessionfinish(session, exitstatus):
    if session.config.getoption('fail_on_skip') and _skipped(session.config) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
