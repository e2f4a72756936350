#!/usr/bin/env python
"""Fail when any module or plugin's documentation does not render in ansible-doc.

ansible-doc exits 0 even for a missing plugin, so the JSON is checked: every module must have
DOCUMENTATION with a short_description, EXAMPLES and RETURN (RETURN may be empty only for roles).
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = 'shadownet.proxmox'
KINDS = {'modules': 'module', 'inventory': 'inventory', 'filter': 'filter', 'lookup': 'lookup',
         'callback': 'callback'}


def plugins():
    for folder, kind in KINDS.items():
        path = os.path.join(ROOT, 'plugins', folder)
        if not os.path.isdir(path):
            continue
        for name in sorted(os.listdir(path)):
            if name.endswith('.py') and not name.startswith('_') and name != '__init__.py':
                if kind == 'filter':
                    continue  # filter files hold several filters; documented in their own YAML if any
                yield kind, name[:-3]


def main():
    failures = []
    count = 0
    for kind, name in plugins():
        count += 1
        fqcn = '{0}.{1}'.format(NS, name)
        proc = subprocess.run(['ansible-doc', '--json', '-t', kind, fqcn], capture_output=True, text=True, check=False)
        try:
            data = json.loads(proc.stdout or '{}').get(fqcn)
        except ValueError:
            data = None
        if not data:
            failures.append('{0} {1}: ansible-doc rendered nothing: {2}'.format(kind, fqcn, proc.stderr.strip()[-400:]))
            continue
        doc = data.get('doc') or {}
        if not doc.get('short_description'):
            failures.append('{0}: no short_description'.format(fqcn))
        if kind == 'module':
            if not data.get('examples'):
                failures.append('{0}: no EXAMPLES'.format(fqcn))
            if data.get('return') is None:
                failures.append('{0}: no RETURN'.format(fqcn))
        print('ok   {0:10} {1}'.format(kind, fqcn))
    for failure in failures:
        print('FAIL ' + failure)
    if count == 0:
        print('FAIL no plugins found')
        return 1
    print('{0} plugins checked, {1} failed'.format(count, len(failures)))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
