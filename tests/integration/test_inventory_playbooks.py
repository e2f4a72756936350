"""The mirror and VIP playbooks target the groups the pve inventory plugin builds for the lab cluster."""
import os
import re

from ansible_collections.shadownet.proxmox.plugins.modules import linked_clone
from lab.modrun import run_module
from lab.playbook import ROOT, ansible_playbook
from lab.shop import plan_of

TEMPLATE = os.path.join(ROOT, 'inventories', 'lab', 'templates', 'shop.yml.j2')


def list_hosts(pvesim, playbook):
    proc = ansible_playbook(['-i', os.path.join(ROOT, 'inventories', 'lab', 'pve.yml'), '--list-hosts',
                             '-e', '{"shadownet_templates": ["%s"]}' % TEMPLATE, playbook],
                            sim=pvesim, env=dict(ANSIBLE_INVENTORY_ENABLED='shadownet.proxmox.pve'))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    plays = re.split(r'\n\s*play #\d+', proc.stdout)[1:]
    return [sorted(h.strip() for h in re.findall(r'^\s{6}(\S+)\s*$', play, re.M)) for play in plays]


def test_playbooks_target_the_inventory_groups(pvesim, pve_conn):
    import yaml
    from jinja2 import Template
    data = yaml.safe_load(Template(open(TEMPLATE).read()).render())
    plan = plan_of(data)
    run_module(linked_clone, dict(pve_conn, plan=plan))
    managed = sorted(v['name'] for v in plan['vms'])
    mirror_plays = list_hosts(pvesim, 'mirror.yml')
    assert mirror_plays[0] == ['localhost']
    assert mirror_plays[1] == ['pve1', 'pve2', 'pve3']
    vip_plays = list_hosts(pvesim, 'vip.yml')
    assert vip_plays[1] == managed
