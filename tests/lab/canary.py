"""The replay agent's counters file (issue 13 contract, format version 1) as the tests and `make lab` put it into
a shadow guest of the simulator (ShadowPve.put_guest_file / POST /_sim/guest_file)."""
import json
import time

STATS_PATH = '/run/shadownet-replay/stats.json'


def counters(when=None, requests=0, window_requests=0, p95=None, p50=None, window_seconds=60, started=None):
    """The JSON text the replay agent writes: `when` its time (default now), p95/p50 in seconds (None: no request
    in the window)."""
    when = time.time() if when is None else when
    bounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, '+Inf']
    return json.dumps({
        'version': 1, 'time': when, 'started': when - 3600 if started is None else started, 'mode': 'http',
        'target': '127.0.0.1:80', 'flows_seen': requests // 4, 'flows_replayed': requests // 4, 'flows_partial': 0,
        'requests_replayed': requests, 'bytes_replayed': 900 * requests, 'reassembly_gaps': 0,
        'errors': {'connect': 0, 'timeout': 0},
        'latency_seconds': {'le': bounds, 'counts': [0] * (len(bounds) - 1) + [requests], 'count': requests,
                            'sum': (p50 or 0.0) * requests},
        'window_seconds': window_seconds,
        'window': {'requests': window_requests, 'latency_p50_seconds': p50, 'latency_p95_seconds': p95, 'errors': 0},
    }, sort_keys=True)
