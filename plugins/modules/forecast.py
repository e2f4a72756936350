#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: forecast
short_description: Forecast each service's load from the metrics history and decide whether it should scale
version_added: 0.1.0
description:
  - For every service of the given plans, reads the service's history from the O(history) backend (by default
    straight from PVE's own RRD, so no state is needed on the controller; see O(history)), forecasts CPU, memory
    and network demand with prediction intervals (a weighted combination of naive, ETS, Theta and, when the history
    shows a daily season, seasonal models, their weighted mean or median, whichever did better on the last day;
    intervals from out-of-sample errors) and runs the scaling policy on it.
  - A scale-up fires when the forecast's upper bound crosses C(high) within C(horizon), or when the shadow,
    normalised for its size and the mirror's flow sample rate, runs hotter than the primaries for C(duration), or
    when the shadow's replay p95 stays above C(scaling.latency.p95_ms) for C(scaling.latency.for). The two shadow
    signals need a live canary, that is fresh replay counters of the shadow, read through the guest agent
    (C(file-read), privilege C(VM.GuestAgent.FileRead)). The shadow signal uses the shadow's CPU only (its memory
    does not follow the sampled traffic).
    A scale-down needs every metric's forecast to stay under C(low) for C(duration). Instance bounds, cooldowns
    and a stabilisation window stop flapping.
  - The last scaling action and the cooldown deadlines are read from PVE (the C(scaling) key of the metadata
    block in the primaries' descriptions), so any controller sees the same state.
  - Changes nothing in PVE; it only returns decisions for M(shadownet.proxmox.scale). The recommendation of
    every run is appended to the history store for the stabilisation window (not in check mode; kept between runs
    only by the V(sqlite) backend; the cooldowns, kept in PVE, hold with every backend).
  - "With backends V(pve) and V(sqlite), one run makes one C(/cluster/resources) request plus, per VM of the services,
    one C(rrddata) request per timeframe: C(day) (PVE 9: 1440 one-minute rows), C(month) as well when O(history_window)
    is longer than a day (the default, a week), and C(hour) as well where C(day) came back in half-hours (PVE 8). So
    1 + 2 x VMs requests with the default window on PVE 9 (1 + 3 x VMs on PVE 8; 1 + VMs on PVE 9 with
    O(history_window=86400)), O(parallel) at a time. With V(sqlite), a VM whose last day is already in the file is read with C(hour) only."
  - A service with a primary whose history could not be read decides nothing (C(blocked_by) C(history)); the reason
    names the VM and the error. The other services still decide.
  - Each decision's C(line) ends with how much history its forecast had, for example
    C((history 1d 0h at 60 s + 6d 23h at 30 min)).
  - Needs the Python libraries statsmodels and numpy on the host that runs the module.
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - shadownet.proxmox.api
  - shadownet.proxmox.history
attributes:
  check_mode:
    description:
      - Reads only; the recommendation is not recorded in the history. Nothing is written to PVE.
      - With O(report), the report is still written (a local file on the host that runs the module, marked as a
        what-if). It is the run's output, like the returned decisions, and a what-if report is what a check-mode
        or forecast-only run is for. Leave O(report) out to write nothing at all.
    support: full
  diff_mode:
    description: Nothing changes.
    support: none
requirements:
  - statsmodels
  - numpy
  - matplotlib (optional, for the plots of O(report))
options:
  plans:
    description:
      - The plans, as M(shadownet.proxmox.template) returns them (C(result.plans)), one plan, or a list of plans.
    type: raw
    required: true
  services:
    description: Only these service names (default all services of every plan).
    type: list
    elements: str
  history_path:
    description:
      - The SQLite history file, for compatibility; the same as O(history.path) (and it selects O(history.backend)
        V(sqlite) when no backend is given).
    type: path
  history_window:
    description:
      - How much history, in seconds, the forecasts use. Beyond a day (86400) the V(pve) backend also reads PVE's
        C(month) (30-minute rows for up to 30 days), one more request per VM.
      - The default is a week (604800), the last day at full resolution and the six days before it as PVE's
        half-hours, two C(rrddata) requests per VM on PVE 9. On the Bitbrains traces (benchmarks/README.md) a week
        forecast better than a day (relMAE 0.824 against 0.896); 86400 halves the requests and forgoes the season.
      - The forecaster fits on up to 7 days before the last day and uses a daily season only with 3 days plus
        that day, so a window under 4 days forgoes the season (benchmarks/README.md, forecast accuracy).
    type: int
    default: 604800
  parallel:
    description: How many C(rrddata) requests are in flight at the same time (backends V(pve) and V(sqlite)).
    type: int
    default: 4
  level:
    description:
      - Central coverage of the prediction interval whose upper bound is tested against the thresholds.
      - 0.3 (the 65th percentile), the scaling policy's default (benchmarks/README.md); higher levels scale out
        earlier and keep more capacity.
    type: float
    default: 0.3
  models:
    description:
      - The members of the forecast combination (default C(naive), C(ets), C(theta), C(ar), C(season_change), and
        with a daily season C(seasonal_naive), C(seasonal_theta) and C(seasonal_ar)). C(seasonal_ets) is ETS on the
        deseasonalised series (slower).
      - C(season_change) is the last value plus the median of the changes the same steps brought on the last 3 days
        (fewer with less history); it takes part whenever a day of history precedes the calibration day.
      - C(ets) and C(theta) both smooth the level, so when both take part they share one member's weight (so do
        C(seasonal_ets) and C(seasonal_theta)). Both are robust to spikes, since a one-step error beyond 3 times their
        running mean absolute error is clipped before it moves the level, unless it is the third of a run of one
        sign (a lasting change).
      - C(ar) is an autoregression on the levels (order 1 to 12 by AIC; with three days of history in its fit
        window the values a day before are regressors too), the one member that reverts to a mean (noise around a
        level that moves little); it leaves when the drift member joins, and takes part only when the history
        before the calibration day holds a whole day.
      - Seasonal members take part only when the history holds at least 3 days plus the calibration day and
        shows a daily season.
      - When less than half of the history before the calibration day was observed (the rest interpolated, as in
        a week read from PVE without a history store, six days of 30-minute means before a day of one-minute
        rows), the members whose parameters are fitted (C(ets), C(theta), C(ar) and their seasonal forms) sit out,
        and C(naive), C(seasonal_naive) and C(season_change) remain.
      - A C(drift) member (the last value plus the last hour's slope) joins on its own when nearly every one-step
        error of the last hour has one sign (Trigg's tracking signal), that is on a fresh ramp or level shift
        that every other member lags; not when only one member that follows the level was asked for (C(ar)
        does not follow it), so that a model asked for alone gives its own forecast.
    type: list
    elements: str
    choices: [naive, seasonal_naive, season_change, ets, theta, seasonal_ets, seasonal_theta, ar, seasonal_ar]
  forecast_only:
    description:
      - Mark every decision as not to be acted on (M(shadownet.proxmox.scale) then only reports it). A plan's
        C(scaling) entry with C(forecast_only) true does the same for its service.
    type: bool
    default: false
  max_cores:
    description: Vertical mode, the most cores one instance may get (default the plan's cores times instances.max).
      Never more than the CPUs of the smallest node the primaries run on (PVE starts no VM with more); a decision
      capped there says so in its reason and C(capped_by).
    type: int
  max_memory:
    description: Vertical mode, the most memory in MiB one instance may get (default memory times instances.max).
    type: int
  report:
    description:
      - Write an HTML report of this run on the host that runs the module (the controller in
        C(playbooks/reconcile.yml)), one self-contained file (no external files or network; the plots are embedded
        PNGs) with the run's metadata, an index of the services and their decisions, and per service a plot of the
        last two days of each metric the decision used, the forecast mean and interval over the horizon, the
        forecast against what happened (what the same forecast said one horizon before each point of the last
        day, as AWS predictive scaling's console compares forecast and actual load), the
        C(high)/C(low) thresholds as capacity lines for the current size and C(high) for the decided size, and
        the decision line with its reason.
      - Writes C(<dir>/report-<UTC time>.html), replaces C(<dir>/latest.html) with a copy of it (both atomically)
        and deletes all but the newest O(report.keep) reports. The series stay out of the module's result.
      - The plots need the Python library matplotlib (optional); without it the report is written without plots,
        with a note saying how to install it, and the module warns.
      - A report that cannot be written (for example an unwritable O(report.dir)) is a warning, not a failure;
        the decisions are returned and scaling goes on.
      - Omit the option for no report; an empty dict writes one to the default directory.
    type: dict
    suboptions:
      dir:
        description:
          - Directory of the reports (created when missing).
          - Defaults to E(SHADOWNET_REPORT_DIR), else C(~/.local/share/shadownet/reports).
        type: path
      keep:
        description: How many reports to keep (the newest); C(0) keeps every report.
        type: int
        default: 10
'''

EXAMPLES = r'''
- name: Decide per service
  shadownet.proxmox.forecast:
    plans: "{{ shadownet_result.plans }}"
  register: shadownet_forecast

- name: Print one line per service
  ansible.builtin.debug:
    msg: "{{ shadownet_forecast.decisions | map(attribute='line') | list }}"

- name: Decide and write a what-if report (forecast-only), keeping the last 20
  shadownet.proxmox.forecast:
    plans: "{{ shadownet_result.plans }}"
    forecast_only: true
    report:
      dir: /var/lib/shadownet/reports
      keep: 20
  register: shadownet_forecast

- name: Where the report is
  ansible.builtin.debug:
    msg: "{{ shadownet_forecast.report_path }}"
'''

RETURN = r'''
decisions:
  description:
    - One decision per service, for M(shadownet.proxmox.scale). Keys of the policy (action, act, target,
      amount, signal, metric, reason, blocked_by, cooldown, next_cooldown, recommendations, signals) plus the ones
      below.
  returned: always
  type: list
  elements: dict
  contains:
    template:
      description: Template name.
      type: str
    service:
      description: Service name.
      type: str
    action:
      description: C(scale_up), C(scale_down) or C(none).
      type: str
    act:
      description: Whether M(shadownet.proxmox.scale) should act on it (false when forecast-only or nothing to do).
      type: bool
    target:
      description: Horizontal, C(instances); vertical, C(cores) and C(memory).
      type: dict
    reason:
      description: Why, in words.
      type: str
    instances:
      description: Primaries found in the cluster.
      type: int
    utilisation:
      description: Newest mean utilisation of the primaries per metric (net as a fraction of C(net.high)).
      type: dict
    forecast:
      description:
        - Per metric, the model (C(combination), or the one member asked for), the peak of the upper bound
          per instance within the horizon and the mean at the horizon, as utilisation.
        - C(relative_mae) says how far to trust it, as AWS predictive scaling's forecast-only mode is used to
          judge that. It is the forecast's mean absolute error over the last value's on the last day of history,
          out of sample, recent hours weighing more. Below 1 the forecast beat the last value. It is null when the
          history was too short to calibrate.
      type: dict
    basis_time:
      description: Time of the last scaling action recorded in PVE when the decision was made (null if none).
      type: float
    made_at:
      description: When the decision was made (UNIX seconds).
      type: float
    canary:
      description:
        - The service's canary, read from the shadow's replay agent counters file (C(shadow.replay.stats_path)) with
          one guest agent C(file-read) per shadow (privilege C(VM.GuestAgent.FileRead) on the shadow).
        - C(live) false with a C(reason) starting C(no canary) when the service has no shadow or no
          C(shadow.replay.port), or the agent, the file or the privilege is missing, or the file is stale; the
          shadow signal (seed rule) and the latency signal are then not used.
        - C(counters) holds the replayed requests and the window's p95 and p50 latency (seconds).
      type: dict
    latency:
      description:
        - The canary latency signal (only when C(scaling.latency.p95_ms) is set and the canary is live), with C(up),
          C(p95_ms), C(threshold_ms), C(held_seconds), C(for_seconds), C(detail).
      type: dict
      returned: when the latency signal was evaluated
    line:
      description: One readable line (current, forecast, canary, decision, reason, and how much history the forecast had).
      type: str
    history:
      description:
        - How much history the forecast had, from the primary with the longest one. C(seconds) in all, C(parts)
          (seconds, step of the rows in seconds or null for older points from the SQLite file, source) and C(text).
      type: dict
      sample: {seconds: 86400, parts: [[86400, 60, pve]], text: "history 1d 0h at 60 s"}
  sample:
    - template: shop
      service: web
      action: scale_up
      act: true
      target: {instances: 3}
      instances: 2
      utilisation: {cpu: 0.62, memory: 0.5, net: 0.01}
      forecast: {cpu: {model: combination, peak_upper: 0.78, mean_at_horizon: 0.74, relative_mae: 0.81}}
      reason: "cpu forecast upper bound 78% per instance crosses high 70% in 7m: 2 -> 3 instances"
history:
  description:
    - What the history backend did. C(backend), C(path) (the SQLite file, backend V(sqlite), else null), C(requests)
      (PVE C(rrddata) requests), C(queries) (Prometheus queries), C(points) (points loaded), C(warnings) and
      C(errors) (VMs whose history could not be read; the other VMs still count).
  returned: always
  type: dict
  sample: {backend: pve, path: null, requests: 3, queries: 0, points: 4320, warnings: [], errors: []}
requests:
  description:
    - Number of PVE API requests the run made. With backends V(pve) and V(sqlite) that is one C(/cluster/resources)
      plus VMs x timeframes C(rrddata) requests (C(day); C(month) too when O(history_window) is longer than a day;
      C(hour) too on PVE 8), so 1 + 2 x VMs on PVE 9 with the default week; with V(prometheus), one.
  returned: always
  type: int
  sample: 4
report_path:
  description: The HTML report of this run (null when it could not be written; see the warnings).
  returned: when O(report) is given
  type: str
  sample: /var/lib/shadownet/reports/report-20261206T070000Z.html
report_latest:
  description: C(latest.html) in the report directory, a copy of the newest report.
  returned: when O(report) is given and the report was written
  type: str
  sample: /var/lib/shadownet/reports/latest.html
'''

import time

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import forecast as forecast_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history_backends
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import scaling


def main():
    argument_spec = api_utils.api_argument_spec()
    argument_spec.update(
        plans=dict(type='raw', required=True),
        services=dict(type='list', elements='str'),
        history=history_backends.history_argument_spec(),
        history_path=dict(type='path'),
        history_window=dict(type='int', default=604800),
        parallel=dict(type='int', default=4),
        level=dict(type='float', default=0.3),
        models=dict(type='list', elements='str',
                    choices=list(forecast_utils.MODELS)),
        forecast_only=dict(type='bool', default=False),
        max_cores=dict(type='int'),
        max_memory=dict(type='int'),
        report=dict(type='dict', options=dict(dir=dict(type='path'), keep=dict(type='int', default=10))),
    )
    module = api_utils.api_module(argument_spec)
    p = module.params
    if not 0 < p['level'] < 1:        # NaN too: it would fail only after the history was read
        module.fail_json(msg='level must be above 0 and below 1 (0.3: the 65th percentile), got {0!r}'.format(p['level']))
    for key, unit in (('max_cores', 'cores'), ('max_memory', 'MiB')):
        if p[key] is not None and p[key] < 1:
            module.fail_json(msg='{0} must be at least 1 ({1}), got {2}: leave it unset for the plan\'s size times '
                                 'instances.max'.format(key, unit, p[key]))
    try:
        forecast_utils.check_libraries()
    except forecast_utils.MissingForecastLibrary as exc:
        module.fail_json(msg=missing_required_lib(exc.library), exception=exc.traceback)
    try:
        plans, dummy = scaling.plans_and_templates(p['plans'], None)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    try:
        config = history_backends.history_config(p['history'], p['history_path'])
    except history_backends.HistoryConfigError as exc:
        module.fail_json(msg=str(exc))
    decisions = []
    used = {} if p['report'] is not None else None
    started = time.time()
    api = None
    try:
        api = api_utils.PveApi.from_module(module)
        decisions, loaded = scaling.forecast_with_history(
            api, plans, config, window=p['history_window'], parallel=max(1, p['parallel']),
            check_mode=module.check_mode, level=p['level'], models=p['models'], forecast_only=p['forecast_only'],
            services=p['services'], max_cores=p['max_cores'], max_memory=p['max_memory'], report=used)
    except api_utils.PveApiError as exc:
        api_utils.fail_json_from(module, exc, decisions=decisions, requests=len(api.calls) if api else 0)
    except forecast_utils.MissingForecastLibrary as exc:
        module.fail_json(msg=missing_required_lib(exc.library), exception=exc.traceback)
    except (scaling.ScalingError, ValueError) as exc:
        module.fail_json(msg=str(exc), decisions=decisions)
    for warning in loaded['warnings']:
        module.warn(warning)
    # Per-VM detail stays out of the result (thousands of VMs): each decision carries its own `history`.
    loaded = dict((k, v) for k, v in loaded.items() if k != 'vms')
    result = dict(changed=False, decisions=decisions, history=loaded, requests=len(api.calls))
    if p['report'] is not None:
        result.update(write_report(module, p, loaded, sorted(plans), decisions, used, started))
    module.exit_json(**result)


def write_report(module, p, loaded, templates, decisions, used, now):
    """The run's HTML report; a report that cannot be written is a warning (the decisions still count)."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import report as report_utils
    try:
        out = report_utils.run_report(p['report'], templates, decisions, used, now,
                                      history_backends.describe(loaded), check_mode=module.check_mode,
                                      forecast_only=p['forecast_only'],
                                      **report_utils.run_settings(p['history_window'], p['level']))
    except (OSError, ValueError) as exc:
        module.warn('report not written: {0}'.format(exc))
        return dict(report_path=None)
    if out['note']:
        module.warn(out['note'])
    return dict(report_path=out['path'], report_latest=out['latest'])


if __name__ == '__main__':
    main()
