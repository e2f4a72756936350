"""The lab's managed guests for the inventory plugin's tests, and ansible-inventory run against the simulator.

`add_lab_guests` adds the guests of the plan's example (docs/plan.md) to a ShadowPve: two primaries and a shadow of
shop/web, one primary of shop/db without a metadata block, and one guest the collection does not manage.
"""
import json
import os

from lab.playbook import ROOT, ansible_env, run_ansible

LAB_FILE = os.path.join(ROOT, 'inventories', 'lab', 'pve.yml')
AUDITOR = ('auditor@pve!readonly', '5ad0e7e7-1ab0-4000-8000-000000000003')  # lab-only, inventories/lab/cluster.yml


def meta_description(meta, text=''):
    body = json.dumps(meta, sort_keys=True, separators=(',', ':'))
    return '{0}\n<!-- shadownet:begin -->\n{1}\n<!-- shadownet:end -->'.format(text, body)


def iface(name, mac, *addresses):
    return {'name': name, 'hardware-address': mac,
            'ip-addresses': [{'ip-address': a, 'ip-address-type': 'ipv6' if ':' in a else 'ipv4', 'prefix': 24}
                             for a in addresses]}


LOOPBACK = iface('lo', '00:00:00:00:00:00', '127.0.0.1', '::1')


def add_lab_guests(pve):
    common = {'agent': 1, 'sockets': 1}
    web1 = pve.add_vm(201, 'shop-web-1', node='pve1', status='running', pool='shadownet', config=dict(
        common, cores=2, memory=2048, tags='shadownet;sn-shop;sn-web;sn-primary',
        net0='virtio=BC:24:11:00:02:01,bridge=front9q0',
        description=meta_description({'v': 1, 'role': 'primary', 'template': 'shop', 'service': 'web', 'index': 1,
                                      'shadowed_by': 'shop-web-shadow', 'vip': '10.10.0.100/24'}, 'Shop web')))
    web1.agent = {'interfaces': [LOOPBACK, iface('eth0', 'bc:24:11:00:02:01', '10.10.0.11', 'fe80::be24:11ff:fe00:201')]}
    # Agent enabled in the config but not running in the guest: the cloud-init address is used.
    pve.add_vm(202, 'shop-web-2', node='pve2', status='running', pool='shadownet', config=dict(
        common, cores=2, memory=2048, tags='shadownet;sn-shop;sn-web;sn-primary',
        net0='virtio=BC:24:11:00:02:02,bridge=front9q0', ipconfig0='ip=10.10.0.12/24,gw=10.10.0.1',
        description=meta_description({'v': 1, 'role': 'primary', 'template': 'shop', 'service': 'web', 'index': 2,
                                      'shadowed_by': 'shop-web-shadow', 'vip': '10.10.0.100/24'})))
    shadow = pve.add_vm(203, 'shop-web-shadow', node='pve3', status='running', pool='shadownet', config=dict(
        common, cores=1, memory=512, tags='shadownet;sn-shop;sn-web;sn-shadow',
        net0='virtio=BC:24:11:00:02:03,bridge=sfro3mzq', net1='virtio=BC:24:11:00:02:13,bridge=front9q0',
        description=meta_description({'v': 1, 'role': 'shadow', 'template': 'shop', 'service': 'web', 'index': 1,
                                      'shadows': ['shop-web-1', 'shop-web-2'], 'vip': '10.10.0.100/24',
                                      'scaling': {'last': 'up', 'cooldown_until': 1767225600}})))
    # eth0 sits on the isolated twin and carries shop-web-1's address; eth1 is the VRRP NIC.
    shadow.agent = {'interfaces': [LOOPBACK, iface('eth0', 'bc:24:11:00:02:03', '10.10.0.11'),
                                   iface('eth1', 'bc:24:11:00:02:13', '10.10.0.53')]}
    pve.add_vm(204, 'shop-db-1', node='pve1', status='stopped', config=dict(
        common, cores=4, sockets=2, memory=4096, tags='shadownet;sn-shop;sn-db;sn-primary',
        ipconfig0='ip=10.10.1.5/24'))
    pve.add_vm(205, 'legacy', node='pve2', status='running', config={'cores': 1, 'memory': 1024, 'tags': 'prod'})
    pve.statd_round()       # a cluster that has been running: pvestatd has named every VM in /cluster/resources


def unwrap(value):
    """ansible-inventory marks plugin strings as untrusted in its JSON: {'__ansible_unsafe': 'x'} -> 'x'."""
    if isinstance(value, dict):
        if set(value) == {'__ansible_unsafe'}:
            return value['__ansible_unsafe']
        return dict((k, unwrap(v)) for k, v in value.items())
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def env_for(pvesim, token=None, **extra):
    """The environment of an ansible-inventory run against ``pvesim`` with ``token`` ((token id, secret); default
    the simulator's root token): unparsed sources fail the run."""
    token_id, secret = token or (pvesim.token_id, pvesim.token_secret)
    return ansible_env(PROXMOX_HOST=pvesim.host, PROXMOX_PORT=pvesim.port, PROXMOX_USER=token_id.split('!')[0],
                       PROXMOX_TOKEN_ID=token_id, PROXMOX_TOKEN_SECRET=secret, PROXMOX_CA_PATH=pvesim.cafile,
                       ANSIBLE_INVENTORY_UNPARSED_FAILED='1', **extra)


def inventory(path, env, *args, check=True):
    """``ansible-inventory -i PATH --list ARGS`` in ``env`` (from :func:`env_for`): the listing, strings unwrapped
    (or, with check=False, the CompletedProcess)."""
    proc = run_ansible('ansible-inventory', ['-i', path, '--list'] + list(args), environ=env, timeout=120)
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr
    return unwrap(json.loads(proc.stdout))
