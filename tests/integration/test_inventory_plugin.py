"""The shadownet.proxmox.pve inventory plugin, run by ansible-inventory against the PVE simulator.

The lab cluster gets the managed guests of the plan's example (docs/plan.md): two primaries and a shadow of
shop/web, one primary of shop/db without a metadata block, and one guest the collection does not manage.
"""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
ANSIBLE_INVENTORY = os.path.join(ROOT, '.venv', 'bin', 'ansible-inventory')
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
    token_id, secret = token or (pvesim.token_id, pvesim.token_secret)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, PROXMOX_HOST=pvesim.host,
               PROXMOX_PORT=str(pvesim.port), PROXMOX_USER=token_id.split('!')[0], PROXMOX_TOKEN_ID=token_id,
               PROXMOX_TOKEN_SECRET=secret, PROXMOX_CA_PATH=pvesim.cafile, ANSIBLE_INVENTORY_UNPARSED_FAILED='1',
               ANSIBLE_NOCOLOR='1')
    env.pop('PROXMOX_PASSWORD', None)
    env.update(extra)
    return env


def inventory(path, env, *args, check=True):
    proc = subprocess.run([ANSIBLE_INVENTORY, '-i', str(path), '--list'] + list(args), env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr
    return unwrap(json.loads(proc.stdout))


def plugin_vars(hostvars):
    """The variables the plugin and the file's compose set (group_vars of inventories/lab are someone else's)."""
    return dict((k, v) for k, v in hostvars.items() if k.startswith(('pve_', 'sn_', 'ansible_')))


def groups_of(listing):
    """{group: (sorted hosts, sorted children)} without the empty ones."""
    out = {}
    for name, group in listing.items():
        if name == '_meta':
            continue
        hosts, children = sorted(group.get('hosts', [])), sorted(group.get('children', []))
        if hosts or children:
            out[name] = (hosts, children)
    return out


@pytest.fixture
def lab(pvesim):
    add_lab_guests(pvesim.pve)
    return pvesim


def test_lab_inventory_groups_and_hostvars_are_exact(lab):
    listing = inventory(LAB_FILE, env_for(lab))
    assert groups_of(listing) == {
        'all': ([], ['primary', 'pve_node_pve1', 'pve_node_pve2', 'pve_node_pve3', 'pve_nodes', 'pve_running',
                     'pve_stopped', 'shadow', 'shadownet', 'ungrouped']),
        'shadownet': ([], ['sn_shop']),
        'sn_shop': ([], ['sn_shop_db', 'sn_shop_web']),
        'sn_shop_web': (['shop-web-1', 'shop-web-2', 'shop-web-shadow'], []),
        'sn_shop_db': (['shop-db-1'], []),
        'primary': (['shop-db-1', 'shop-web-1', 'shop-web-2'], []),
        'shadow': (['shop-web-shadow'], []),
        'pve_node_pve1': (['shop-db-1', 'shop-web-1'], []),
        'pve_node_pve2': (['shop-web-2'], []),
        'pve_node_pve3': (['shop-web-shadow'], []),
        'pve_nodes': (['pve1', 'pve2', 'pve3'], []),
        'pve_running': (['shop-web-1', 'shop-web-2', 'shop-web-shadow'], []),
        'pve_stopped': (['shop-db-1'], []),
    }
    hostvars = listing['_meta']['hostvars']
    assert sorted(hostvars) == ['pve1', 'pve2', 'pve3', 'shop-db-1', 'shop-web-1', 'shop-web-2', 'shop-web-shadow']
    assert plugin_vars(hostvars['shop-web-shadow']) == {
        'ansible_host': '10.10.0.53', 'ansible_user': 'debian',
        'pve_vmid': 203, 'pve_name': 'shop-web-shadow', 'pve_node': 'pve3', 'pve_status': 'running',
        'pve_cores': 1, 'pve_memory': 512, 'pve_tags': ['shadownet', 'sn-shadow', 'sn-shop', 'sn-web'],
        'pve_lock': None, 'pve_agent_addresses': ['10.10.0.11', '10.10.0.53'], 'sn_managed': True,
        'sn_template': 'shop', 'sn_service': 'web', 'sn_role': 'shadow', 'sn_index': 1, 'sn_vip': '10.10.0.100/24',
        'sn_shadows': ['shop-web-1', 'shop-web-2'], 'sn_shadowed_by': None,
        'sn_meta': {'v': 1, 'role': 'shadow', 'template': 'shop', 'service': 'web', 'index': 1,
                    'shadows': ['shop-web-1', 'shop-web-2'], 'vip': '10.10.0.100/24',
                    'scaling': {'last': 'up', 'cooldown_until': 1767225600}}}
    web1 = hostvars['shop-web-1']
    assert (web1['ansible_host'], web1['pve_agent_addresses']) == ('10.10.0.11', ['10.10.0.11'])
    assert (web1['sn_role'], web1['sn_index'], web1['sn_shadowed_by'], web1['sn_shadows']) == \
        ('primary', 1, 'shop-web-shadow', [])
    web2 = hostvars['shop-web-2']
    assert (web2['ansible_host'], web2['pve_agent_addresses'], web2['sn_index']) == ('10.10.0.12', [], 2)
    db = hostvars['shop-db-1']
    assert (db['sn_template'], db['sn_service'], db['sn_role'], db['sn_meta']) == ('shop', 'db', 'primary', {})
    assert (db['pve_cores'], db['pve_memory'], db['pve_status'], db['ansible_host']) == (8, 4096, 'stopped',
                                                                                         '10.10.1.5')
    assert plugin_vars(hostvars['pve1']) == {
        'ansible_host': '192.0.2.11', 'ansible_user': 'root', 'pve_node': 'pve1', 'pve_node_status': 'online',
        'pve_cpus': hostvars['pve1']['pve_cpus'], 'pve_memory': hostvars['pve1']['pve_memory'],
        'pve_guests': ['shop-db-1', 'shop-web-1']}
    assert isinstance(hostvars['pve1']['pve_cpus'], int) and hostvars['pve1']['pve_memory'] > 0
    # Only the managed guests' configs and the running agent-enabled ones' agents were read.
    paths = [p for m, p, b in lab.requests() if m == 'GET']
    assert not any('/205/' in p for p in paths)
    assert sorted(p.split('/qemu/')[1].split('/')[0] for p in paths if p.endswith('/agent/network-get-interfaces')) == \
        ['201', '202', '203']


def test_keyed_groups_compose_groups_and_options(lab, tmp_path):
    source = tmp_path / 'keyed.pve.yml'
    source.write_text('\n'.join([
        'plugin: shadownet.proxmox.pve',
        'managed_only: false',
        'add_nodes: false',
        'want_agent: false',
        'strict: true',
        'keyed_groups:',
        '  - {key: sn_role | default("none"), prefix: role}',
        '  - {key: pve_tags, prefix: tag}',
        '  - {key: pve_node, separator: "", prefix: on_}',
        'groups:',
        '  big: pve_cores >= 4',
        'compose:',
        '  sn_vrrp_peer: sn_shadowed_by | default("")',
        '  memory_gib: pve_memory / 1024',
        '']))
    listing = inventory(source, env_for(lab))
    groups = groups_of(listing)
    assert groups['role_primary'] == (['shop-db-1', 'shop-web-1', 'shop-web-2'], [])
    assert groups['role_shadow'] == (['shop-web-shadow'], [])
    assert groups['role_none'] == (['legacy'], [])
    assert groups['tag_prod'] == (['legacy'], [])
    assert groups['tag_sn_shadow'] == (['shop-web-shadow'], [])
    assert groups['tag_shadownet'][0] == ['shop-db-1', 'shop-web-1', 'shop-web-2', 'shop-web-shadow']
    assert groups['on_pve2'] == (['legacy', 'shop-web-2'], [])
    assert groups['big'] == (['shop-db-1'], [])
    assert 'pve_nodes' not in groups
    hostvars = listing['_meta']['hostvars']
    assert hostvars['shop-web-1']['sn_vrrp_peer'] == 'shop-web-shadow'
    assert hostvars['legacy']['sn_managed'] is False and hostvars['legacy']['memory_gib'] == 1.0
    # want_agent: false: no agent call, addresses from cloud-init only.
    assert 'ansible_host' not in hostvars['shop-web-1'] and hostvars['shop-web-2']['ansible_host'] == '10.10.0.12'
    assert not any(p.endswith('network-get-interfaces') for m, p, b in lab.requests())

    # strict: an expression that does not evaluate is an error, not a silently missing group.
    source.write_text('plugin: shadownet.proxmox.pve\nstrict: true\ngroups:\n  oops: no_such_var > 1\n')
    proc = inventory(source, env_for(lab), check=False)
    assert proc.returncode != 0 and 'no_such_var' in proc.stderr


def test_cache_serves_the_second_run_and_flush_refreshes(lab, tmp_path):
    source = tmp_path / 'cached.shadownet.yml'
    source.write_text('plugin: shadownet.proxmox.pve\ncache: true\ncache_plugin: ansible.builtin.jsonfile\n'
                      'cache_connection: {0}\ncache_timeout: 600\n'.format(tmp_path / 'cache'))
    env = env_for(lab)
    first = inventory(source, env)
    assert 'shop-web-3' not in first['_meta']['hostvars']
    assert os.listdir(str(tmp_path / 'cache'))
    lab.pve.add_vm(206, 'shop-web-3', node='pve3', status='stopped', config={
        'cores': 2, 'memory': 2048, 'tags': 'shadownet;sn-shop;sn-web;sn-primary'})
    mark = lab.mark()
    second = inventory(source, env)
    assert second == first
    assert lab.requests(mark) == []  # served from the cache: not one API call
    third = inventory(source, env, '--flush-cache')
    assert 'shop-web-3' in third['sn_shop_web']['hosts']
    assert third['_meta']['hostvars']['shop-web-3']['pve_node'] == 'pve3'
    assert lab.requests(mark)


def test_read_only_token_lists_guests_without_agent_addresses(lab):
    # The auditor token has VM.Audit and Sys.Audit but no agent rights: every guest is listed, agent addresses
    # are missing, and the run does not fail.
    listing = inventory(LAB_FILE, env_for(lab, token=AUDITOR))
    hostvars = listing['_meta']['hostvars']
    assert sorted(listing['sn_shop_web']['hosts']) == ['shop-web-1', 'shop-web-2', 'shop-web-shadow']
    assert hostvars['shop-web-shadow']['sn_shadows'] == ['shop-web-1', 'shop-web-2']
    assert hostvars['shop-web-1']['pve_agent_addresses'] == []
    assert hostvars['shop-web-2']['ansible_host'] == '10.10.0.12'


def test_errors_are_clear(lab):
    proc = inventory(LAB_FILE, env_for(lab, token=('root@pam!shadownet', 'wrong-secret')), check=False)
    assert proc.returncode != 0
    assert 'shadownet.proxmox.pve' in proc.stderr and 'credentials' in proc.stderr


def test_verify_file_accepts_only_its_file_names(tmp_path):
    from ansible_collections.shadownet.proxmox.plugins.inventory.pve import InventoryModule
    plugin = InventoryModule()
    for name, accepted in (('pve.yml', True), ('lab.pve.yaml', True), ('shadownet.yml', True),
                           ('x-shadownet.yaml', True), ('cluster.yml', False), ('pve.json', False)):
        path = tmp_path / name
        path.write_text('plugin: shadownet.proxmox.pve\n')
        assert plugin.verify_file(str(path)) is accepted, name
    assert plugin.verify_file(str(tmp_path / 'missing.pve.yml')) is False
