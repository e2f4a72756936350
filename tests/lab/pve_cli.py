"""Stand-ins for a PVE node's `pvesh` and `pvesm`, for role tests that run on this host instead of a PVE node.

`fake_pve_cli(bindir, nodes, storage, snippets_dir)` writes them into ``bindir`` (put it first on PATH):

* ``pvesh get /nodes --output-format json``: ``nodes`` ({name: status}), as pve-manager API2/Nodes.pm ``index``
  lists them (``node``, ``status``, ...);
* ``pvesh get /storage/<id> --output-format json``: ``storage`` (a storage config; pve-storage API2/Storage/
  Config.pm ``read``), or ``storage '<id>' does not exist`` and exit 2 for another id;
* ``pvesm path <storage>:snippets/<name>``: ``<snippets_dir>/<name>`` (pve-storage Plugin.pm ``path``:
  ``get_subdir`` honours the storage's ``content-dirs``, so this is not always ``<path>/snippets``).
"""
import json
import os

PVESH = '''#!/bin/sh
if [ "$1 $2" = "get /nodes" ]; then cat '{nodes}'; exit 0; fi
if [ "$1 $2" = "get /storage/{sid}" ]; then cat '{storage}'; exit 0; fi
echo "storage '${{2#/storage/}}' does not exist" >&2
exit 2
'''
PVESM = '''#!/bin/sh
[ "$1" = path ] || exit 2
case "$2" in
  {sid}:snippets/*) echo '{snippets}'/"${{2#{sid}:snippets/}}" ;;
  *) echo "unable to parse volume ID '$2'" >&2; exit 2 ;;
esac
'''


def fake_pve_cli(bindir, nodes, storage, snippets_dir):
    """Write fake pvesh and pvesm into ``bindir``; returns ``bindir`` as a string."""
    bindir = str(bindir)
    os.makedirs(bindir, exist_ok=True)
    nodes_file = os.path.join(bindir, 'nodes.json')
    storage_file = os.path.join(bindir, 'storage.json')
    with open(nodes_file, 'w', encoding='utf-8') as fh:
        json.dump([{'node': name, 'status': status, 'type': 'node'} for name, status in sorted(nodes.items())], fh)
    with open(storage_file, 'w', encoding='utf-8') as fh:
        json.dump(storage, fh)
    for name, text in (('pvesh', PVESH.format(nodes=nodes_file, storage=storage_file, sid=storage['storage'])),
                       ('pvesm', PVESM.format(sid=storage['storage'], snippets=str(snippets_dir)))):
        path = os.path.join(bindir, name)
        with open(path, 'w', encoding='utf-8') as fh:
            fh.write(text)
        os.chmod(path, 0o755)
    return bindir


LOCAL = {'storage': 'local', 'type': 'dir', 'path': '/var/lib/vz', 'content': 'iso,vztmpl,backup,snippets',
         'digest': '0' * 40}
