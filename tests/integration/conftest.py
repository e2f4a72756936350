"""Fixtures for tests against the PVE simulator (tests/lab/pvesim.py): pvesim, pve_conn, proxmoxer_api.

`pvesim` is a started simulator with the lab cluster (inventories/lab/cluster.yml) for one test: time_scale 0,
127.0.0.1, a port the system picks, served in a background thread. It exposes url, host, port, cafile,
token_id, token_secret, pve (the ShadowPve: add VMs, inject rrd series, faults ...), call(coro) to run a
coroutine on the simulator's loop, and the request log: mark() and writes(since=mark) (the non-GET requests
sent after the mark), requests(since=mark). `make_ha` makes VMs HA resources as site.yml's ha_rule step does.
`plan` is the plan of the test module's TEMPLATE (lab.shop.SHOP when the module has none); `built` clones and starts
its primaries, then its shadows ({name: simulator VM}).
"""
import os
import shutil

import pytest

from lab.modrun import run_module
from lab.pvesim import DEFAULT_CLUSTER, start_in_thread
from lab.shop import SHOP, build, plan_of


@pytest.fixture
def pvesim(tmp_path):
    server = start_in_thread(cluster_file=DEFAULT_CLUSTER, host='127.0.0.1', port=0, time_scale=0,
                             certs_dir=str(tmp_path / 'pvesim-certs'))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pve_conn(pvesim):
    """The auth parameters every module of the collection takes, for the pvesim fixture."""
    return {'api_host': pvesim.host, 'api_port': pvesim.port, 'api_user': pvesim.token_id.split('!')[0],
            'api_token_id': pvesim.token_id,
            'api_token_secret': pvesim.token_secret, 'ca_path': pvesim.cafile, 'validate_certs': True}


@pytest.fixture
def proxmoxer_api(pvesim):
    """proxmoxer.ProxmoxAPI on the pvesim fixture, with the API token and certificate verification on."""
    proxmoxer = pytest.importorskip('proxmoxer')
    user, _, token = pvesim.token_id.partition('!')
    return proxmoxer.ProxmoxAPI(pvesim.host, port=pvesim.port, user=user, token_name=token,
                                token_value=pvesim.token_secret, verify_ssl=pvesim.cafile, timeout=30)


@pytest.fixture
def make_ha(pve_conn):
    """make_ha(template, (vm, other), ...): the ha_rule module with one negative resource-affinity rule per pair
    (rule id sn_<vm>_anti), which also makes every VM named an HA resource (state started), as site.yml does."""
    from ansible_collections.shadownet.proxmox.plugins.modules import ha_rule

    def make(template, *pairs):
        rules = [{'rule': 'sn_{0}_anti'.format(first.replace('-', '_')), 'type': 'resource-affinity',
                  'resources': [first, second], 'affinity': 'negative', 'nodes': None, 'strict': False,
                  'comment': 'shadownet {0}: keep {1} off the node of {2}'.format(template, second, first)}
                 for first, second in pairs]
        return run_module(ha_rule, dict(pve_conn, template=template, rules=rules))
    return make


@pytest.fixture
def plan(request):
    """The plan of the test module's TEMPLATE, or of lab.shop.SHOP."""
    return plan_of(getattr(request.module, 'TEMPLATE', SHOP))


@pytest.fixture
def built(pvesim, pve_conn, plan):
    """The plan's primaries, then its shadows, cloned and started: {name: simulator VM}."""
    return build(pvesim, pve_conn, plan)


@pytest.fixture
def sshd_privsep_dir():
    """sshd needs its privilege separation directory; create it only when missing, remove only ours."""
    path = '/run/sshd'
    created = not os.path.isdir(path)
    if created:
        os.makedirs(path, mode=0o755)
    try:
        yield path
    finally:
        if created:
            shutil.rmtree(path, ignore_errors=True)
