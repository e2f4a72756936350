"""The simulator's privilege names, roles and permission checks are PVE 9's (tests/lab/pvesim_perms.py)."""
import pytest

from lab.pvesim import DEFAULT_CLUSTER, ShadowPve, load_cluster


def token_api(pvesim, userid, grants=(), exact=()):
    """proxmoxer on a new token of `userid` (privsep 0) holding `grants` [(path, privs...)] and `exact` ones."""
    import proxmoxer
    secret = '5ad0e7e7-1ab0-4000-8000-0000000000aa'
    pvesim.pve.apitokens[userid + '!t'] = secret
    for path, *privs in grants:
        pvesim.pve.grant(userid, path, *privs)
    for path, *privs in exact:
        pvesim.pve.grant_exact(userid, path, *privs)
    return proxmoxer.ProxmoxAPI(pvesim.host, port=pvesim.port, user=userid, token_name='t', token_value=secret,
                                verify_ssl=pvesim.cafile)


def refused(call):
    import proxmoxer
    with pytest.raises(proxmoxer.core.ResourceException) as err:
        call()
    return err.value


# ------------------------------------------------------------------------------ privilege names and roles

def test_cluster_file_role_with_vm_monitor_is_refused():
    cluster = {'nodes': [{'name': 'pve1'}], 'roles': {'Old': ['VM.Audit', 'VM.Monitor']}}
    with pytest.raises(ValueError) as err:
        load_cluster(ShadowPve(), cluster)
    assert "role 'Old'" in str(err.value) and "invalid privilege 'VM.Monitor'" in str(err.value)
    cluster = {'nodes': [{'name': 'pve1'}], 'users': [{'userid': 'a@pve', 'acl': [{'path': '/', 'privs': ['VM.Monitor']}]}]}
    with pytest.raises(ValueError) as err:
        load_cluster(ShadowPve(), cluster)
    assert "invalid privilege 'VM.Monitor'" in str(err.value)


def test_lab_cluster_roles_are_valid_pve9_privileges():
    pve = ShadowPve()
    load_cluster(pve, DEFAULT_CLUSTER)
    assert 'VM.Monitor' not in set().union(*pve.roles.values())
    assert {'Sys.Console', 'Sys.Modify'} <= pve.roles['ShadownetRoot']


def test_role_api_refuses_unknown_privileges_as_pve(proxmoxer_api):
    # pve-access-control API2/Role.pm create_role: format pve-priv-list -> AccessControl.pm verify_privname.
    err = refused(lambda: proxmoxer_api.access.roles.post(roleid='Old', privs='VM.Audit,VM.Monitor'))
    assert err.status_code == 400 and "invalid privilege 'VM.Monitor'" in str(err)
    proxmoxer_api.access.roles.post(roleid='Ops', privs='VM.Audit VM.GuestAgent.Audit')
    listed = dict((r['roleid'], r) for r in proxmoxer_api.access.roles.get())
    assert listed['Ops']['privs'] == 'VM.Audit,VM.GuestAgent.Audit' and not listed['Ops']['special']
    assert listed['PVEAuditor']['special'] and 'VM.GuestAgent.Audit' in listed['PVEAuditor']['privs']
    err = refused(lambda: proxmoxer_api.access.roles('Ops').put(privs='VM.Monitor', append=1))
    assert err.status_code == 400 and "invalid privilege 'VM.Monitor'" in str(err)
    proxmoxer_api.access.roles('Ops').put(privs='VM.PowerMgmt', append=1)
    assert proxmoxer_api.access.roles('Ops').get() == {'VM.Audit': 1, 'VM.GuestAgent.Audit': 1, 'VM.PowerMgmt': 1}
    assert 'already exists' in str(refused(lambda: proxmoxer_api.access.roles.post(roleid='Ops')))
    assert refused(lambda: proxmoxer_api.access.roles.post(roleid='PVEMine')).status_code == 400


# ------------------------------------------------------------------------------ checks inside PVE's methods

def test_startup_needs_sys_modify_on_root(pvesim, proxmoxer_api):
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=100, name='web-1')
    api = token_api(pvesim, 'ops@pve', grants=[('/vms', 'VM.Config.Options', 'VM.Audit')])
    api.nodes('pve1').qemu(100).config.put(description='ok', onboot=1)
    err = refused(lambda: api.nodes('pve1').qemu(100).config.put(startup='order=1'))
    assert err.status_code == 403 and '(/, Sys.Modify)' in str(err)
    pvesim.pve.grant_exact('ops@pve', '/', 'Sys.Modify')
    api.nodes('pve1').qemu(100).config.put(startup='order=1')
    assert pvesim.pve.vm(100).config['startup'] == 'order=1'


def test_cloudinit_keys_take_network_or_cloudinit(pvesim, proxmoxer_api):
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=100, name='web-1')
    api = token_api(pvesim, 'ops@pve', grants=[('/vms', 'VM.Config.Network', 'VM.Audit')])
    api.nodes('pve1').qemu(100).config.put(ciuser='admin')  # check_vm_perm(..., any => 1)
    other = token_api(pvesim, 'hw@pve', grants=[('/vms', 'VM.Config.HWType', 'VM.Audit')])
    err = refused(lambda: other.nodes('pve1').qemu(100).config.put(ciuser='x'))
    assert 'VM.Config.Cloudinit|VM.Config.Network' in str(err)


def test_nic_needs_sdn_use_on_its_bridge_old_and_new(pvesim, proxmoxer_api):
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=100, name='web-1')
    api = token_api(pvesim, 'ops@pve', grants=[('/vms', 'VM.Config.Network', 'VM.Audit'),
                                               ('/sdn/zones/localnetwork/vmbr1', 'SDN.Use')])
    # The clone's net0 is on vmbr0: replacing it needs SDN.Use on vmbr0 too (update_vm_api).
    err = refused(lambda: api.nodes('pve1').qemu(100).config.put(net0='virtio,bridge=vmbr1'))
    assert err.status_code == 403 and '/sdn/zones/localnetwork/vmbr0, SDN.Use' in str(err)
    api.nodes('pve1').qemu(100).config.put(net1='virtio,bridge=vmbr1')
    # A tagged NIC is checked on the VLAN's path (GuestHelpers.pm check_vnet_access).
    pvesim.pve.grant('ops@pve', '/sdn/zones/localnetwork/vmbr2/30', 'SDN.Use')
    api.nodes('pve1').qemu(100).config.put(net2='virtio,bridge=vmbr2,tag=30')
    err = refused(lambda: api.nodes('pve1').qemu(100).config.put(net3='virtio,bridge=vmbr2,tag=20'))
    assert '/sdn/zones/localnetwork/vmbr2/20, SDN.Use' in str(err)
    pvesim.pve.grant('ops@pve', '/sdn/zones/localnetwork/vmbr0', 'SDN.Use')
    api.nodes('pve1').qemu(100).config.put(net0='virtio,bridge=vmbr1', delete='net1')


def test_clone_needs_storage_and_bridge_access(pvesim):
    grants = [('/vms', 'VM.Clone', 'VM.Allocate', 'VM.Audit')]
    api = token_api(pvesim, 'ops@pve', grants=grants)
    err = refused(lambda: api.nodes('pve1').qemu(9000).clone.post(newid=100, name='web-1'))
    assert err.status_code == 403 and 'Datastore.AllocateSpace' in str(err)
    pvesim.pve.grant('ops@pve', '/storage', 'Datastore.AllocateSpace')
    err = refused(lambda: api.nodes('pve1').qemu(9000).clone.post(newid=100, name='web-1'))
    assert err.status_code == 403 and '/sdn/zones/localnetwork/vmbr0, SDN.Use' in str(err)
    assert pvesim.pve.vm(100) is None
    pvesim.pve.grant('ops@pve', '/sdn', 'SDN.Use')
    api.nodes('pve1').qemu(9000).clone.post(newid=100, name='web-1')
    assert pvesim.pve.vm(100) is not None


def test_vnet_and_subnet_writes_check_the_vnet_path(pvesim, proxmoxer_api):
    proxmoxer_api.cluster.sdn.zones.post(zone='lab', type='simple')
    proxmoxer_api.cluster.sdn.vnets.post(vnet='front', zone='lab')
    api = token_api(pvesim, 'ops@pve', grants=[('/sdn/zones/lab/other', 'SDN.Allocate'),
                                               ('/sdn/zones/lab/front', 'SDN.Audit')])
    assert api.cluster.sdn.vnets('front').subnets.get() == []
    err = refused(lambda: api.cluster.sdn.vnets('front').subnets.post(subnet='10.1.0.0/24', type='subnet'))
    assert err.status_code == 403 and '/sdn/zones/lab/front, SDN.Allocate' in str(err)
    err = refused(lambda: api.cluster.sdn.vnets('front').put(alias='x'))
    assert '/sdn/zones/lab/front, SDN.Allocate' in str(err)
    assert '/sdn/zones/lab/front, SDN.Allocate' in str(refused(lambda: api.cluster.sdn.vnets('front').delete()))
    pvesim.pve.grant('ops@pve', '/sdn/zones/lab/front', 'SDN.Allocate')
    api.cluster.sdn.vnets('front').subnets.post(subnet='10.1.0.0/24', type='subnet')
    api.cluster.sdn.vnets('front').put(alias='x')


# ------------------------------------------------------------------------------ listings, propagation

def test_cluster_status_needs_sys_audit_and_exact_acl_does_not_propagate(pvesim):
    api = token_api(pvesim, 'ops@pve', grants=[('/vms', 'VM.Audit')])
    assert refused(lambda: api.cluster.status.get()).status_code == 403
    pvesim.pve.grant_exact('ops@pve', '/', 'Sys.Audit')
    assert any(item['type'] == 'cluster' for item in api.cluster.status.get())
    # Not propagated: nothing on /nodes/<node>, so no node usage in the listings (Cluster.pm resources).
    node = next(n for n in api.cluster.resources.get(type='node') if n['node'] == 'pve1')
    assert 'maxmem' not in node and node['status'] == 'online'
    assert 'maxmem' not in next(n for n in api.nodes.get() if n['node'] == 'pve1')
    pvesim.pve.grant('ops@pve', '/nodes', 'Sys.Audit')
    assert next(n for n in api.cluster.resources.get(type='node') if n['node'] == 'pve1')['maxmem'] > 0


def test_resources_hide_pool_and_storage_without_audit(pvesim, proxmoxer_api):
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=100, name='web-1', pool='shadownet')
    api = token_api(pvesim, 'ops@pve', grants=[('/vms', 'VM.Audit')])
    vm = next(r for r in api.cluster.resources.get(type='vm') if r['vmid'] == 100)
    assert 'pool' not in vm
    assert api.cluster.resources.get(type='storage') == []
    pvesim.pve.grant('ops@pve', '/pool/shadownet', 'Pool.Audit')
    pvesim.pve.grant('ops@pve', '/storage', 'Datastore.Audit')
    assert next(r for r in api.cluster.resources.get(type='vm') if r['vmid'] == 100)['pool'] == 'shadownet'
    assert api.cluster.resources.get(type='storage')


def test_node_network_lists_bridges_the_user_may_see(pvesim):
    api = token_api(pvesim, 'ops@pve', grants=[('/nodes', 'Sys.Audit')])
    assert [i['iface'] for i in api.nodes('pve1').network.get()] == ['eno1']
    pvesim.pve.grant('ops@pve', '/sdn/zones/localnetwork/vmbr0/10', 'SDN.Use')  # a VLAN of it is enough
    assert sorted(i['iface'] for i in api.nodes('pve1').network.get()) == ['eno1', 'vmbr0']
