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
        (C(rrddata) C(day), where PVE 9 keeps a day at one minute; C(month), 30 days at 30 minutes, when O(shadownet.proxmox.forecast#module:history_window)
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
        description:
          - Backend V(prometheus), the base URL of the Prometheus HTTP API (C(https://prometheus.example.com:9090), no
            C(/api/v1)); the server must hold prometheus-pve-exporter's cluster metrics. Falls back to
            E(SHADOWNET_PROMETHEUS_URL).
          - One C(query_range) per metric for all managed VMs (7 in all), never one per VM; a window over 11,000 steps
            is split into a few queries per metric.
        type: str
      ca_path:
        description: Backend V(prometheus), a CA file to verify its certificate. Falls back to E(SHADOWNET_PROMETHEUS_CA_PATH).
        type: path
      validate_certs:
        description: Backend V(prometheus), verify its TLS certificate (on unless set to false; false only for a lab).
        type: bool
      bearer_token:
        description:
          - Backend V(prometheus), a bearer token (never in a message). Falls back to E(SHADOWNET_PROMETHEUS_TOKEN).
          - Give either O(history.bearer_token) or O(history.username) and O(history.password), not both.
        type: str
      username:
        description: Backend V(prometheus), basic auth user. Falls back to E(SHADOWNET_PROMETHEUS_USER).
        type: str
      password:
        description: Backend V(prometheus), basic auth password. Falls back to E(SHADOWNET_PROMETHEUS_PASSWORD).
        type: str
      timeout:
        description: Backend V(prometheus), seconds per HTTP request (also sent as the query's C(timeout)); 30 when unset.
        type: float
      retries:
        description:
          - Backend V(prometheus), retries of a request that failed in a way that may pass (connection refused or
            dropped, a timeout, HTTP 429 or 5xx), with backoff and jitter; 3 when unset. A refused query (400, 422)
            or refused credentials (401, 403) are not retried.
        type: int
      queries:
        description:
          - Backend V(prometheus), PromQL templates per metric that replace the built-in ones. Keys C(cpu), C(maxcpu),
            C(mem), C(maxmem), C(netin), C(netout), C(info); null switches an optional one off (not C(cpu)).
          - 'Placeholders: C($selector), the label matcher of the managed VMs (plain text: id=~"qemu/(101|102)"); C($step), the
            step (C(1m)); C($rate_window), twice the step and at least C(2m). Write a literal C($) as C($$).'
          - 'The defaults (PromQL, plain text here): cpu avg_over_time(pve_cpu_usage_ratio{$selector}[$step]);
            maxcpu last_over_time(pve_cpu_usage_limit{$selector}[$step]); mem
            avg_over_time(pve_memory_usage_bytes{$selector}[$step]); maxmem
            last_over_time(pve_memory_size_bytes{$selector}[$step]); netin
            rate(pve_network_receive_bytes_total{$selector}[$rate_window]); netout the same with transmit; info
            max by (id, name) (last_over_time(pve_guest_info{$selector}[$step])), which tells a reused vmid apart by
            the name of the VM that held it.'
          - 'Add matchers to select one cluster where a Prometheus holds several, for example
            avg_over_time(pve_cpu_usage_ratio{$selector, job="pve-prod"}[$step]).'
        type: dict
      step:
        description:
          - Backend V(prometheus), the C(query_range) step in seconds, a multiple of 60; 60 when unset. Evaluated at the
            ends of steps; with a scrape interval over a minute raise it (each value then covers the minutes of its step).
        type: int
'''
