"""Pure rules of core/clone.py: which errors say a vmid is taken, and which listed VM is a clone of ours."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import clone


@pytest.mark.parametrize('message,taken', [
    # qemu-server clone_vm, before its task, on the local node
    ('unable to create VM 101: config file already exists', True),
    # in the task: pmxcfs refuses the rename when the vmid exists on another node (memdb.c)
    ("clone failed: close (rename) atomic file '/etc/pve/nodes/pve1/qemu-server/101.conf' failed: File exists", True),
    # in the task: another clone holds the new vmid's config lock (lock_config_full, 1 s)
    ("clone failed: can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout", True),
    # ... but the source's lock (lock-9000) is not a collision of vmid 101
    ("can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout", False),
    ("VM 101 already exists on node 'pve2'", True),
    ('clone failed: storage ceph-vm is full', False),
])
def test_collision_messages(message, taken):
    assert clone.collision(message, 101) is taken


def test_a_vm_listed_before_pvestatd_named_it_is_ours_but_not_another_name():
    # /cluster/resources names a VM from pvestatd's status: nothing before the first round, then qemu-server vmstatus'
    # "VM <vmid>" for a config without a name (the temporary config of a running clone).
    assert clone.ours({'vmid': 101}, 'web-1')
    assert clone.ours({'vmid': 101, 'name': 'VM 101'}, 'web-1')
    assert clone.ours({'vmid': 101, 'name': 'web-1'}, 'web-1')
    assert not clone.ours({'vmid': 101, 'name': 'VM 102'}, 'web-1')
    assert not clone.ours({'vmid': 101, 'name': 'db-1'}, 'web-1')
