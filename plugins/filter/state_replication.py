# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the state_replication role; the rules live in module_utils/failover/replication.py."""


from ansible.errors import AnsibleFilterError

from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import replication as replication_utils


def state_replication_model(settings, inventory=None):
    """What the role does on this host (``replication_utils.build_model``); ``errors`` lists what is wrong."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError('state_replication_model: the settings must be a mapping, got %s'
                                 % type(settings).__name__)
    return replication_utils.build_model(settings, list(inventory) if inventory is not None else None)


class FilterModule:
    def filters(self):
        return {
            'state_replication_model': state_replication_model,
        }
