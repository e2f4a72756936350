#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: forecast
short_description: Forecast each service's load from the metrics history and decide whether it should scale
version_added: 0.1.0
description:
  - For every service of the given plans, reads the service's history (written by M(shadownet.proxmox.metrics)),
    forecasts CPU, memory and network demand with prediction intervals (a weighted combination of naive, ETS,
    Theta and, when the history shows a daily season, seasonal models; intervals from out-of-sample errors) and
    runs the scaling policy on it.
  - A scale-up fires when the forecast's upper bound crosses C(high) within C(horizon), or when the shadow,
    normalised for its size and the mirror's sample rate, runs hotter than the primaries for C(duration).
    A scale-down needs every metric's forecast to stay under C(low) for C(duration). Instance bounds, cooldowns
    and a stabilisation window stop flapping.
  - The last scaling action and the cooldown deadlines are read from PVE (the C(scaling) key of the metadata
    block in the primaries' descriptions), so any controller sees the same state.
  - Changes nothing in PVE; it only returns decisions for M(shadownet.proxmox.scale). The recommendation of
    every run is appended to the history store for the stabilisation window (not in check mode).
  - Needs the Python libraries statsmodels and numpy on the host that runs the module.
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - shadownet.proxmox.api
attributes:
  check_mode:
    description: Reads only; the recommendation is not recorded in the history.
    support: full
  diff_mode:
    description: Nothing changes.
    support: none
requirements:
  - statsmodels
  - numpy
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
      - The SQLite history file M(shadownet.proxmox.metrics) writes.
      - Defaults to E(SHADOWNET_HISTORY), else C(~/.local/share/shadownet/history.sqlite).
    type: path
  history_window:
    description:
      - How much history, in seconds, the forecasts use. The forecaster fits on up to 7 days before its last day
        and needs 3 days plus that day to use a daily season, so less than 4 days forgoes the season.
    type: int
    default: 604800
  level:
    description:
      - Central coverage of the prediction interval whose upper bound is tested against the thresholds.
      - 0.5 was chosen on the Bitbrains traces (benchmarks/README.md); higher levels scale out earlier and keep
        more capacity.
    type: float
    default: 0.5
  models:
    description:
      - The members of the forecast combination (default C(naive), C(ets), C(theta), and with a daily season
        C(seasonal_naive) and C(seasonal_theta)). C(seasonal_ets) is ETS on the deseasonalised series (slower).
      - Seasonal members take part only when the history holds at least 3 days plus the calibration day and
        shows a daily season.
    type: list
    elements: str
    choices: [naive, seasonal_naive, ets, theta, seasonal_ets, seasonal_theta]
  forecast_only:
    description:
      - Mark every decision as not to be acted on (M(shadownet.proxmox.scale) then only reports it). A plan's
        C(scaling) entry with C(forecast_only) true does the same for its service.
    type: bool
    default: false
  max_cores:
    description: Vertical mode, the most cores one instance may get (default the plan's cores times instances.max).
    type: int
  max_memory:
    description: Vertical mode, the most memory in MiB one instance may get (default memory times instances.max).
    type: int
'''

EXAMPLES = r'''
- name: Decide per service
  shadownet.proxmox.forecast:
    plans: "{{ shadownet_result.plans }}"
  register: shadownet_forecast

- name: Print one line per service
  ansible.builtin.debug:
    msg: "{{ shadownet_forecast.decisions | map(attribute='line') | list }}"
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
      description: Per metric, the model (C(combination), or the one member asked for), the peak of the upper bound
        per instance within the horizon and the mean at the horizon, as utilisation.
      type: dict
    basis_time:
      description: Time of the last scaling action recorded in PVE when the decision was made (null if none).
      type: float
    made_at:
      description: When the decision was made (UNIX seconds).
      type: float
    line:
      description: One readable line (current, forecast, decision, reason).
      type: str
  sample:
    - template: shop
      service: web
      action: scale_up
      act: true
      target: {instances: 3}
      instances: 2
      utilisation: {cpu: 0.62, memory: 0.5, net: 0.01}
      forecast: {cpu: {model: combination, peak_upper: 0.78, mean_at_horizon: 0.74}}
      reason: "cpu forecast upper bound 78% per instance crosses high 70% in 7m: 2 -> 3 instances"
'''

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import scaling


def main():
    argument_spec = api_utils.api_argument_spec()
    argument_spec.update(
        plans=dict(type='raw', required=True),
        services=dict(type='list', elements='str'),
        history_path=dict(type='path'),
        history_window=dict(type='int', default=604800),
        level=dict(type='float', default=0.5),
        models=dict(type='list', elements='str',
                    choices=['naive', 'seasonal_naive', 'ets', 'theta', 'seasonal_ets', 'seasonal_theta']),
        forecast_only=dict(type='bool', default=False),
        max_cores=dict(type='int'),
        max_memory=dict(type='int'),
    )
    module = api_utils.api_module(argument_spec)
    p = module.params
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import forecast as forecast_utils
    try:
        forecast_utils.check_libraries()
    except forecast_utils.MissingForecastLibrary as exc:
        module.fail_json(msg=missing_required_lib(exc.library), exception=exc.traceback)
    try:
        plans, dummy = scaling.plans_and_templates(p['plans'], None)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    decisions = []
    try:
        api = api_utils.PveApi.from_module(module)
        resources = api.resources('vm')
        with scaling.open_history(scaling.history_path(p['history_path'])) as store:
            for name in sorted(plans):
                decisions.extend(scaling.forecast_plan(
                    api, plans[name], store, window=p['history_window'], level=p['level'], models=p['models'],
                    forecast_only=p['forecast_only'], services=p['services'], max_cores=p['max_cores'],
                    max_memory=p['max_memory'], resources=resources))
            if not module.check_mode:
                scaling.record_recommendations(store, decisions)
    except api_utils.PveApiError as exc:
        api_utils.fail_json_from(module, exc, decisions=decisions)
    except forecast_utils.MissingForecastLibrary as exc:
        module.fail_json(msg=missing_required_lib(exc.library), exception=exc.traceback)
    except (scaling.ScalingError, ValueError) as exc:
        module.fail_json(msg=str(exc), decisions=decisions)
    module.exit_json(changed=False, decisions=decisions)


if __name__ == '__main__':
    main()
