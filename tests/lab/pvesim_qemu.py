"""rrddata, migrate, hookscripts, MACs and hot-plug for ShadowPve (filled in below)."""


class QemuExtras(object):
    def _init_qemu_extras(self):
        self.rrd = {}

    def inject_rrd(self, vmid, points):
        self.rrd[int(vmid)] = [dict(p) for p in points]

    def set_stats(self, vmid, **stats):
        self.vm(int(vmid)).stats.update(stats)

    def add_snippet(self, volid, size=512):
        sid, _, name = volid.partition(':')
        self.store_file(sid, name.split('/', 1)[1], size, content='snippets')
