# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment(object):
    # The `history` option of the metrics and forecast modules (module_utils/scaling/history_backends.py).
    DOCUMENTATION = r'''
options:
  history:
    description:
      - Where the forecasts' history comes from.
      - V(pve) (the default) is stateless. The forecast reads the managed VMs' own RRD history from PVE on every run
        (C(rrddata) C(day), where PVE 9 keeps a day at one minute; C(month), 30 days at 30 minutes, when O(history_window)
        of M(shadownet.proxmox.forecast) is longer than a day; C(hour) as well where C(day) comes back in half-hours,
        PVE 8) and keeps nothing, so a fresh controller (an AWX job's container) forecasts from its first run.
      - V(sqlite) does the same reads and merges them into a SQLite file (O(history.path)), a cache for history beyond
        the 30 days PVE keeps and for the stabilisation window's past recommendations. O(history_path) or the
        E(SHADOWNET_HISTORY) environment variable select it, as in earlier releases.
      - V(prometheus) reads the history from a Prometheus that scrapes prometheus-pve-exporter (C(query_range)).
    type: dict
    suboptions:
      backend:
        description:
          - V(pve), V(sqlite) or V(prometheus). Falls back to E(SHADOWNET_HISTORY_BACKEND), else V(sqlite) when a
            path is given (O(history.path), O(history_path) or E(SHADOWNET_HISTORY)), else V(pve).
        type: str
        choices: [pve, sqlite, prometheus]
      path:
        description:
          - The SQLite file of backend V(sqlite) (created with its directory when missing). Defaults to
            O(history_path), E(SHADOWNET_HISTORY), else C(~/.local/share/shadownet/history.sqlite).
        type: path
      url:
        description: Backend V(prometheus), the base URL of the Prometheus HTTP API. Falls back to E(SHADOWNET_PROMETHEUS_URL).
        type: str
      ca_path:
        description: Backend V(prometheus), a CA file to verify its certificate. Falls back to E(SHADOWNET_PROMETHEUS_CA_PATH).
        type: path
      validate_certs:
        description: Backend V(prometheus), verify its TLS certificate (on unless set to false).
        type: bool
      bearer_token:
        description: Backend V(prometheus), a bearer token. Falls back to E(SHADOWNET_PROMETHEUS_TOKEN).
        type: str
      username:
        description: Backend V(prometheus), basic auth user. Falls back to E(SHADOWNET_PROMETHEUS_USER).
        type: str
      password:
        description: Backend V(prometheus), basic auth password. Falls back to E(SHADOWNET_PROMETHEUS_PASSWORD).
        type: str
      timeout:
        description: Backend V(prometheus), seconds per HTTP request.
        type: float
      retries:
        description: Backend V(prometheus), retries of a failed request.
        type: int
      queries:
        description: Backend V(prometheus), PromQL templates per metric that replace the built-in ones.
        type: dict
      step:
        description: Backend V(prometheus), the C(query_range) step in seconds.
        type: int
'''
