"""The shadownet.proxmox.pve inventory plugin, run by ansible-inventory against the PVE simulator.

The lab cluster gets the managed guests of the plan's example (docs/plan.md): two primaries and a shadow of
shop/web, one primary of shop/db without a metadata block, and one guest the collection does not manage.
"""
import os

import pytest

from lab.inventory import AUDITOR, LAB_FILE, add_lab_guests, env_for, inventory


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


def test_a_guest_made_since_pvestatds_last_round_is_listed_by_its_name(lab):
    # pve-manager Cluster.pm resources: a VM's name comes from pvestatd's status (every 10 s): a VM made since is
    # listed without a name and with status 'unknown'; its status/current names it.
    lab.pve.add_vm(206, 'shop-web-3', node='pve2', status='running', pool='shadownet', config={
        'cores': 2, 'memory': 2048, 'tags': 'shadownet;sn-shop;sn-web;sn-primary'})
    listing = inventory(LAB_FILE, env_for(lab))
    hostvars = listing['_meta']['hostvars']
    assert hostvars['shop-web-3']['pve_vmid'] == 206 and hostvars['shop-web-3']['pve_status'] == 'running'
    assert 'shop-web-3' in listing['pve_running']['hosts']


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
