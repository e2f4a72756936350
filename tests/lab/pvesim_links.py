"""Link state of lab guests, for ShadowPve: a NIC's `link_down` in the VM config drives a real device.

On real PVE, `link_down=1` on a running VM's NIC is QMP `set_link ... off`: the guest sees carrier loss. The
simulator does the same for NICs bound to a device of the namespace lab (usually the host end `tap<vmid>i<n>` of
a veth pair in the lab's node namespace): when a config update changes the NIC's `link_down`, it runs
`ip link set <dev> down|up` there. Without a binding nothing happens, so tests of other modules are unaffected.

    pve.bind_link(100, 'net0', 'tap101i0', ns=lab.node)
"""

import re
import subprocess

from fakepve.model import PveError

__all__ = ['LinkBindings']

_LINK_DOWN = re.compile(r'(?:^|,)link_down=(1|true|yes|on)(?:,|$)', re.I)


def is_down(value):
    """True if a net property string has link_down set."""
    return bool(value) and bool(_LINK_DOWN.search(str(value)))


class LinkBindings(object):
    """Mixin of ShadowPve: vmid -> {netN: (device, namespace)} and the `ip link` calls they cause."""

    def _init_links(self):
        self.link_bindings = {}
        # (vmid, netN, device, 'down' | 'up') in the order they were applied.
        self.link_events = []

    def bind_link(self, vmid, nic, dev, ns=None):
        """Drive device ``dev`` (in network namespace ``ns``; None: this one) from the NIC's link_down."""
        if not re.match(r'^net\d+$', nic):
            raise ValueError('a NIC key looks like net0, not {0!r}'.format(nic))
        self.link_bindings.setdefault(int(vmid), {})[nic] = (dev, ns)

    def unbind_links(self, vmid=None):
        if vmid is None:
            self.link_bindings.clear()
        else:
            self.link_bindings.pop(int(vmid), None)

    def _link_states(self, vm):
        bound = self.link_bindings.get(vm.vmid)
        if not bound:
            return None
        return dict((key, is_down(vm.config.get(key))) for key in bound)

    def _sync_links(self, vm, before):
        """Apply what changed since ``before`` (from _link_states) to the bound devices."""
        if before is None:
            return
        after = self._link_states(vm) or {}
        for key, down in sorted(after.items()):
            if before.get(key) == down:
                continue
            dev, ns = self.link_bindings[vm.vmid][key]
            argv = ['ip'] + (['-n', ns] if ns else []) + ['link', 'set', 'dev', dev, 'down' if down else 'up']
            res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            if res.returncode != 0:
                raise PveError(500, 'lab link binding of VM {0} {1}: {2}'.format(vm.vmid, key, res.stderr.strip()))
            self.link_events.append((vm.vmid, key, dev, 'down' if down else 'up'))
