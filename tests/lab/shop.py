"""The 'shop' template the integration tests build against the simulator, its plan, the build, and injected load.

`SHOP`: one web service, two primaries on vmbr0 with a VIP, a shadow at half size (the failover, drill and
replication tests); `SCALED_SHOP`: the same with instance scaling 1..4 and cooldowns 3m up / 10m down (the
metrics, forecast and scale tests). `shop_template(**top_level_keys)` makes a variant; `plan_of(template)` plans it
(a deep copy: the test's template stays as it is); `build(...)` clones and starts its primaries, then its shadows,
as the shadow_network role does. The `plan` and `built` fixtures (tests/integration/conftest.py) use these.

`series`, `inject` and the RISING / FLAT / FALLING curves are per-minute CPU loads for rrddata; `primaries` lists the
web primaries the simulator holds.
"""
import copy
import time

from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import plan_from_template
from ansible_collections.shadownet.proxmox.plugins.modules import linked_clone
from lab.modrun import run_module

GIB = 1024 ** 3

SHOP = {
    'name': 'shop',
    'nodes': ['pve1', 'pve2', 'pve3'],
    'networks': [{'name': 'front', 'type': 'bridge', 'bridge': 'vmbr0', 'cidr': '10.10.0.0/24',
                  'gateway': '10.10.0.1'}],
    'services': [
        {'name': 'web', 'template': 9000, 'instances': 2, 'cores': 2, 'memory': 2048, 'networks': ['front'],
         'vip': '10.10.0.100/24', 'critical': True},
    ],
    'shadow': {'enabled': True, 'size': 0.5, 'replication': {'fidelity': 'differential', 'paths': ['/var/lib/app']}},
}


def shop_template(**changes):
    """A deep copy of SHOP with these top-level keys replaced (or added)."""
    template = copy.deepcopy(SHOP)
    template.update(copy.deepcopy(changes))
    return template


# Pieces the tests put together with shop_template: the front network as an SDN vnet, and two more services.
VNET_FRONT = {'name': 'front', 'type': 'vnet', 'cidr': '10.10.0.0/24', 'gateway': '10.10.0.1'}
CACHE = {'name': 'cache', 'template': 9000, 'instances': 1, 'cores': 1, 'memory': 1024, 'networks': ['front'],
         'critical': False}
DB = {'name': 'db', 'template': 9000, 'instances': 1, 'cores': 1, 'memory': 1024, 'networks': ['front'],
      'critical': True}

SCALED_SHOP = shop_template(scaling={'instances': {'min': 1, 'max': 4}, 'cooldown': {'up': '3m', 'down': '10m'}})


def plan_of(template=SHOP):
    """The plan of ``template`` (validated; the template itself is not touched)."""
    return plan_from_template(copy.deepcopy(template))[1]


def build(pvesim, pve_conn, plan, state='started'):
    """Clone the plan's primaries, then its shadows (linked_clone, as the shadow_network role calls it);
    {name: simulator VM} of the plan's VMs. The test then goes on a while later: pvestatd has listed the new VMs
    as they are (the simulator's `statd_round`), as it has by the time a timer or the next play looks."""
    for role in ('primary', 'shadow'):
        run_module(linked_clone, dict(pve_conn, plan=plan, roles=[role], state=state))
    pvesim.pve.statd_round()
    names = set(vm['name'] for vm in plan['vms'])
    return dict((vm.name, vm) for vm in pvesim.pve.vms if vm.name in names)


# ------------------------------------------------------------------------------------------------ load

RISING = [0.10 + 0.0075 * i for i in range(70)]          # 10% -> 62%, high is 70%
FLAT = [0.5] * 70
FALLING = [0.5 - 0.008 * i for i in range(50)] + [0.1] * 20


def series(values, end=None, cores=2, mem=0.5, net=0.0):
    """rrd points, one per minute ending at the current minute: cpu from values, memory and net flat."""
    end = int(end or time.time()) // 60 * 60
    start = end - 60 * (len(values) - 1)
    return [{'time': start + 60 * i, 'cpu': v, 'maxcpu': cores, 'mem': mem * 2 * GIB, 'maxmem': 2 * GIB,
             'netin': net, 'netout': net} for i, v in enumerate(values)]


def inject(pvesim, vms, values, **kw):
    """Serve ``series(values, **kw)`` as the rrddata of every web primary among ``vms`` ({name: VM})."""
    for name, vm in vms.items():
        if name.startswith('shop-web-') and name != 'shop-web-shadow':
            pvesim.pve.inject_rrd(vm.vmid, series(values, **kw))


def primaries(pvesim):
    """The names of the web primaries in the simulator, sorted."""
    return sorted(vm.name for vm in pvesim.pve.vms if vm.name and vm.name.startswith('shop-web-')
                  and vm.name != 'shop-web-shadow')
