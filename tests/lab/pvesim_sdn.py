"""SDN zones, vnets and subnets for ShadowPve (filled in below)."""


class SdnApi(object):
    def _init_sdn(self):
        self.sdn = {'running': {'zones': {}, 'vnets': {}, 'subnets': {}},
                    'pending': {'zones': {}, 'vnets': {}, 'subnets': {}}, 'lock': None}

    def sdn_summary(self):
        return {}
