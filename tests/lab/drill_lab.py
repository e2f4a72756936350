# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A failover drill in the namespace lab: real keepalived guests whose links the PVE simulator drives.

Used by tests/integration/test_failover_drill.py and by `make lab` (``python tests/lab/drill_lab.py``).

* :func:`root_client` gives the process's own (root) namespace a veth into a lab bridge with an address in the lab
  subnet, so a module running here (the drill's prober) reaches the VIP that lives inside the lab's namespaces.
* :class:`DrillGuests` runs the vip_failover role's keepalived config for a primary and a shadow guest (the
  harness of tests/lab/vrrp_lab.py) on addresses and MACs of the caller's choosing: the MACs are
  the ones PVE has in the VMs' configs, so the drill tells the responders apart as on a real network.
* The simulator binds the primary's NIC to the guest's host-side device (``ShadowPve.bind_link`` or the control
  channel's ``POST /_sim/link``): ``link_down=1`` through the API takes the guest's carrier away.

Everything is created inside namespaces of one :class:`lab.netns.Lab` (closed by its owner), except the root end
of the client veth, which goes with its peer when the lab's node namespace is deleted (and is deleted explicitly).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def harness():
    """lab/vrrp_lab.py (role rendering, keepalived guests), imported when first used: this file also runs as a
    script, which puts tests/ on sys.path first."""
    path = os.path.join(ROOT, 'tests')
    if path not in sys.path:
        sys.path.insert(0, path)
    from lab import vrrp_lab  # pylint: disable=import-outside-toplevel
    return vrrp_lab


def _ip(*args, check=True):
    return subprocess.run(['ip'] + list(args), check=check, capture_output=True, text=True, timeout=30)


class RootClient(object):
    """A veth from this (root) namespace to ``bridge`` in the lab's node namespace, with ``cidr`` here."""

    def __init__(self, lab, bridge, cidr, name=None):
        self.lab = lab
        self.name = name or 'snd%d' % (os.getpid() % 1000000)
        self.peer = 'drl-%s' % self.name[-6:]
        self.cidr = cidr
        _ip('link', 'add', self.name, 'type', 'veth', 'peer', 'name', self.peer, 'netns', lab.node)
        try:
            _ip('-n', lab.node, 'link', 'set', self.peer, 'master', bridge, 'up')
            subprocess.run(['sysctl', '-q', '-w', 'net.ipv6.conf.%s.disable_ipv6=1' % self.name], check=False,
                           capture_output=True, timeout=10)
            _ip('addr', 'add', cidr, 'dev', self.name)
            _ip('link', 'set', self.name, 'up')
        except BaseException:
            self.close()
            raise

    @property
    def address(self):
        return self.cidr.split('/')[0]

    def close(self):
        _ip('link', 'del', self.name, check=False)


def root_client(lab, bridge, cidr, name=None):
    return RootClient(lab, bridge, cidr, name)


class DrillGuests(object):
    """keepalived guests 'primary' and 'shadow' (vip_failover role config) on ``bridge`` of ``lab``.

    ``addrs``: {role: (lab vmid, address)}; ``macs``: {role: MAC of the VM's NIC on the VIP network in PVE}.
    The guests' UDP echo (port ``harness().ECHO_PORT``) answers with the guest's role and the datagram.
    """

    def __init__(self, lab, hosts, addrs, vip, macs=None, bridge='vmbr0'):
        self.vip = vip
        self.vrrp = harness().VrrpLab(lab, hosts, addrs=addrs, vip=vip, macs=macs, bridge=bridge, client=False)

    def host_dev(self, role):
        """The guest NIC's device in the node namespace (what PVE's tap device is)."""
        return self.vrrp.guests[role].nics[0].host

    def ready(self, timeout=20.0):
        v = self.vrrp
        return v.wait_state('primary', 'MASTER', timeout) and v.wait_state('shadow', 'BACKUP', timeout) \
            and v.settle()

    def masters_since(self, wall):
        """{role: how often it entered MASTER since wall-clock ``wall``}."""
        events = self.vrrp.events_since(wall)
        return dict((r, sum(1 for who, st in events if who == r and st == 'MASTER')) for r in ('primary', 'shadow'))

    def close(self):
        self.vrrp.close()


# ------------------------------------------------------------------------------------ make lab: the CLI


def _control(url, token, path, body):
    """POST to a launched simulator's control channel (root@pam token, certificate verified)."""
    ctx = ssl.create_default_context(cafile=os.environ['PROXMOX_CA_PATH'])
    req = urllib.request.Request(url + '/_sim/' + path, data=json.dumps(body).encode(), method='POST',
                                 headers={'Content-Type': 'application/json',
                                          'Authorization': 'PVEAPIToken=%s' % token})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return json.loads(resp.read().decode())


def _vm_config(url, token, node, vmid):
    ctx = ssl.create_default_context(cafile=os.environ['PROXMOX_CA_PATH'])
    req = urllib.request.Request('%s/api2/json/nodes/%s/qemu/%s/config' % (url, node, vmid),
                                 headers={'Authorization': 'PVEAPIToken=%s' % token})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return json.loads(resp.read().decode())['data']


def main(argv=None):
    """make lab's drill: keepalived guests for the service's first primary and its shadow, the simulator's link
    binding, a client veth in this namespace, then playbooks/failover.yml with failover_step=drill."""
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument('spec', help='JSON file: {"plan": plan, "vmids": {name: vmid}, "nodes": {name: node}}')
    parser.add_argument('--service', default='web')
    parser.add_argument('--inventory', default=os.path.join(ROOT, 'inventories', 'lab', 'hosts.yml'))
    parser.add_argument('--extra-vars', default='{}', help='JSON extra variables for the failover playbook')
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error('needs root (network namespaces)')
    for path in (os.path.join(ROOT, '.build', 'collections'), os.path.join(ROOT, 'tests')):
        if path not in sys.path:
            sys.path.insert(0, path)
    from lab.netns import Lab, cleanup_stale  # pylint: disable=import-outside-toplevel
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr  # pylint: disable=import-outside-toplevel

    with open(args.spec) as handle:
        spec = json.load(handle)
    plan, vmids, nodes = spec['plan'], spec['vmids'], spec['nodes']
    entry = next(v for v in plan['vrrp'] if v['service'] == args.service)
    vip = entry['vip'] if '/' in entry['vip'] else entry['vip'] + '/24'
    prefix = vip.split('/')[1]
    net = vip.split('/')[0].rsplit('.', 1)[0]
    primary = next(m for m in entry['members'] if m['role'] == 'primary' and m['index'] == 1)
    shadow = next(m for m in entry['members'] if m['role'] == 'shadow')
    url = 'https://%s:%s' % (os.environ['PROXMOX_HOST'], os.environ['PROXMOX_PORT'])
    token = '%s!%s=%s' % (os.environ['PROXMOX_USER'], os.environ['PROXMOX_TOKEN_ID'],
                          os.environ['PROXMOX_TOKEN_SECRET'])
    macs = {}
    for role, member in (('primary', primary), ('shadow', shadow)):
        cfg = _vm_config(url, token, nodes[member['vm']], vmids[member['vm']])
        macs[role] = propstr.parse_net(cfg['net%d' % member['nic']])['macaddr']
    addrs = {'primary': (int(vmids[primary['vm']]), net + '.11'), 'shadow': (int(vmids[shadow['vm']]), net + '.12')}
    h = harness()
    workdir = tempfile.mkdtemp(prefix='sn-lab-drill-%d-' % os.getpid())
    cleanup_stale()
    lab = Lab()
    guests = client = None
    bound = False
    rc = 1
    try:
        res, hosts = h.render(workdir, extra=dict(h.LAB_VARS), instances=h.unicast_instances(addrs=addrs, vip=vip))
        if res.returncode != 0:
            sys.stdout.write(res.stdout[-3000:] + res.stderr[-2000:])
            return 1
        guests = DrillGuests(lab, hosts, addrs, vip, macs)
        client = root_client(lab, 'vmbr0', '%s.3/%s' % (net, prefix))
        if not guests.ready():
            print('drill lab: keepalived did not converge (primary MASTER, shadow BACKUP)')
            return 1
        _control(url, token, 'link', {'vmid': vmids[primary['vm']], 'nic': 'net%d' % primary['nic'],
                                      'dev': guests.host_dev('primary'), 'ns': lab.node})
        bound = True
        print('drill lab: %s (vmid %s) and %s (vmid %s) run keepalived in namespaces (VIP %s, preempt_delay %ss); '
              'the simulator drives %s net%d; probing from %s in this namespace'
              % (primary['vm'], vmids[primary['vm']], shadow['vm'], vmids[shadow['vm']], vip,
                 h.LAB_VARS['vip_failover_preempt_delay'], primary['vm'], primary['nic'], client.address))
        sys.stdout.flush()
        extra = {'failover_service': args.service, 'failover_step': 'drill',
                 'failover_drill': {'port': h.ECHO_PORT, 'protocol': 'udp', 'interval': 10, 'hold': 1,
                                    'settle': 2, 'timeout': 20}}
        extra.update(json.loads(args.extra_vars))
        wall = time.time()
        proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i',
                               args.inventory, os.path.join(ROOT, 'playbooks', 'failover.yml'),
                               '-e', json.dumps(extra)], capture_output=True, text=True, timeout=600, check=False,
                              cwd=ROOT)
        for line in proc.stdout.splitlines():
            if '"msg"' in line or line.startswith(('TASK', 'PLAY RECAP', 'fatal', 'localhost')):
                print(line)
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-2000:])
        masters = guests.masters_since(wall)
        print('drill lab: keepalived transitions to MASTER during the drill: %s %d, %s %d'
              % (shadow['vm'], masters['shadow'], primary['vm'], masters['primary']))
        rc = proc.returncode
    finally:
        if bound:
            try:
                _control(url, token, 'link', {'vmid': vmids[primary['vm']], 'unbind': True})
            except OSError:
                pass
        if guests is not None:
            guests.close()
        if client is not None:
            client.close()
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == '__main__':
    sys.exit(main())
