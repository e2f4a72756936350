"""playbooks/failover.yml reads the guests' keepalived state files (vip_failover's contract) on its own."""
import json
import re

import yaml

from lab.playbook import VENV_PY, ansible_playbook
from lab.shop import SHOP as TEMPLATE


def test_playbook_reads_keepalived_state_from_the_guests(pvesim, pve_conn, tmp_path, built):
    # The guests, as the pve inventory lists them, with their vip_failover state directories (here: local dirs).
    hosts = {}
    for name, state, health in (('shop-web-1', 'BACKUP', '1'), ('shop-web-2', 'BACKUP', '1'),
                                ('shop-web-shadow', 'MASTER', '0')):
        state_dir = tmp_path / name
        state_dir.mkdir()
        (state_dir / 'shop-web.state').write_text(json.dumps(
            {'time': 1795487098.1, 'instance': 'shop-web', 'state': state, 'priority': 100}) + '\n')
        (state_dir / 'shop-web.health').write_text(health + '\n')
        hosts[name] = {'ansible_connection': 'local', 'sn_template': 'shop', 'sn_service': 'web',
                       'vip_failover_state_dir': str(state_dir),
                       'ansible_python_interpreter': VENV_PY}
    inventory = tmp_path / 'inventory.yml'
    inventory.write_text(yaml.safe_dump({'all': {
        'hosts': {'localhost': {'ansible_connection': 'local',
                                'ansible_python_interpreter': VENV_PY}},
        'children': {'shadownet': {'hosts': hosts}}}}))
    proc = ansible_playbook(['-i', inventory, 'failover.yml',
                             '-e', json.dumps({'shadownet_templates': [TEMPLATE], 'failover_service': 'web',
                                               'failover_step': 'detect'})], sim=pvesim)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    detect = re.findall(r'"msg": "(detect: [^"]*)"', proc.stdout)
    assert detect and 'VIP on shop-web-shadow' in detect[0], proc.stdout[-3000:]
