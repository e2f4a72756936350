"""rrddata helpers shared by the tests: made-up answers in PVE's shape, and a spy on the timeframes the simulator
answers (its request log has no query strings)."""

END = 1_800_000_000   # a multiple of 1800


def rows(step, count, end=END, value=lambda t: 0.5, gaps=()):
    """An rrddata answer: `count` rows `step` apart ending at `end` (each labelled with its interval's end)."""
    out = []
    for i in range(count):
        t = end - step * (count - 1 - i)
        out.append({'time': t} if t in gaps else {'time': t, 'cpu': value(t), 'maxcpu': 2})
    return out


def record_rrddata(pvesim, monkeypatch):
    """The timeframes of the rrddata requests the simulator answers, in order (a list that grows as they come)."""
    from lab import pvesim_qemu
    seen = []
    real = pvesim_qemu.rrd_fetch

    def spy(series, timeframe, *args, **kwargs):
        seen.append(timeframe)
        return real(series, timeframe, *args, **kwargs)
    monkeypatch.setattr(pvesim_qemu, 'rrd_fetch', spy)
    return seen
