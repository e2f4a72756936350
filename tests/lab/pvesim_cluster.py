"""Node networks and HA for ShadowPve (filled in below)."""


class NodeNetworkApi(object):
    def _init_network(self):
        self.node_networks = {}

    def _network_for(self, node):
        return self.node_networks.setdefault(node, {})


class HaApi(object):
    def _init_ha(self):
        self.ha_resources = {}
        self.ha_rules = {}

    def ha_summary(self):
        return {}
