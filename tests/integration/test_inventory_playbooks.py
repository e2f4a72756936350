"""The mirror and VIP playbooks target the groups the pve inventory plugin builds for the lab cluster."""
import copy
import os
import re
import subprocess

from ansible_collections.shadownet.proxmox.plugins.module_utils.plan import plan_from_template
from ansible_collections.shadownet.proxmox.plugins.modules import linked_clone
from lab.modrun import run_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, 'inventories', 'lab', 'templates', 'shop.yml.j2')


def list_hosts(pvesim, playbook):
    env = dict(os.environ, **pvesim.environ())
    env.update(ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.build', 'collections'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_INVENTORY_ENABLED='shadownet.proxmox.pve')
    proc = subprocess.run([os.path.join(ROOT, '.venv', 'bin', 'ansible-playbook'), '-i',
                           os.path.join(ROOT, 'inventories', 'lab', 'pve.yml'), '--list-hosts',
                           '-e', '{"shadownet_templates": ["%s"]}' % TEMPLATE,
                           os.path.join(ROOT, 'playbooks', playbook)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    plays = re.split(r'\n\s*play #\d+', proc.stdout)[1:]
    return [sorted(h.strip() for h in re.findall(r'^\s{6}(\S+)\s*$', play, re.M)) for play in plays]


def test_playbooks_target_the_inventory_groups(pvesim, pve_conn):
    import yaml
    from jinja2 import Template
    data = yaml.safe_load(Template(open(TEMPLATE).read()).render())
    plan = plan_from_template(copy.deepcopy(data))[1]
    run_module(linked_clone, dict(pve_conn, plan=plan))
    managed = sorted(v['name'] for v in plan['vms'])
    mirror_plays = list_hosts(pvesim, 'mirror.yml')
    assert mirror_plays[0] == ['localhost']
    assert mirror_plays[1] == ['pve1', 'pve2', 'pve3']
    vip_plays = list_hosts(pvesim, 'vip.yml')
    assert vip_plays[1] == managed
