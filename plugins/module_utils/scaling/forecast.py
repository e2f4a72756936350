# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Short-horizon forecasts of one metric series, with prediction intervals.

Public entry point: :func:`forecast_series`. It is pure (no I/O) and is used by the
modules, the benchmarks and users' own code.

How a forecast is made
----------------------
* Gaps (``None`` / NaN) are allowed. Leading gaps are dropped, interior gaps are
  interpolated linearly, trailing gaps move the forecast origin back to the last
  observed point (the returned forecast still starts one step after the end of
  ``values``).
* The series is split in a fit window (up to 7 days) and the calibration window
  after it (the last day; at most half the series). Every step count is derived
  from ``step_seconds``: one day is 288 steps at 5 minutes, 1440 at 1 minute, 48 at
  30 minutes.
* Daily season: when the fit window holds 3 days and the M4 competition's test
  (autocorrelation at lag one day, 90%) finds the season there, additive seasonal
  indices are estimated on the fit window (classical decomposition, median per
  phase) and the seasonal members join.
* Hourly season: when the hour is at least 4 whole steps and, in what the daily season leaves, the hourly
  indices explain at least a fifth of the variance around the one-hour moving average (seasonal strength,
  :func:`_hourly_profile`: cron jobs and hourly batches), they are added to the daily ones (a second period, as
  MSTL does); ``hourly`` is then True in the result and the seasonal members join.
* Members (a forecast combination, as the M4 competition's best simple entries do):
  ``naive`` (last value), ``ets`` (ETS(A,Ad,N): additive errors, damped trend),
  ``theta`` (standard Theta: SES with half the fitted drift), ``ar`` (an autoregression on
  the levels, order 1-12 by AIC, with the values a day before as further regressors when
  three days are in the fit window: the one member that reverts to a mean, so it takes part only
  when its fit window holds a whole day, and the mean covers the day's cycle),
  ``season_change`` (the last value plus the median of the changes the same steps brought
  on the last 3 days; with at least a day of history before the calibration window, no
  seasonality test), and with a season ``seasonal_naive`` (same time yesterday),
  ``seasonal_ets``, ``seasonal_theta`` and ``seasonal_ar`` (the same models fitted on the
  seasonally adjusted series, the indices added back).
* A fit window mostly interpolated (less than ``MIN_OBSERVED_FIT`` of it observed: a stateless controller's
  week from PVE is six days of 30-minute means and a day of one-minute rows) cannot estimate parameters for the
  observed day: on the straight lines between the means ETS fits a trend that goes on and the autoregression
  one that extrapolates. The members with estimated parameters (``ESTIMATED``) then sit out and naive, seasonal
  naive and ``season_change`` remain (the season is still tested and its indices estimated on the interpolated
  days); ``sparse_fit`` is True in the result. Where naive is then the only member left that follows the level
  (PVE 8's day of half-hours before its hour of minutes), the tracking signal's drift member may still join it.
* The series is scaled to a standard deviation of ``FIT_SD`` before anything is fitted, and the forecast, its
  intervals and its errors are scaled back: the same load in other units (bytes or MiB) gets the same forecast.
* Each member's parameters are estimated once, by statsmodels, on the fit window; the
  smoothing constants of ETS and Theta are at least ``MIN_SMOOTHING`` (0.05), so that a
  level fitted on a flat, noisy stretch still follows a change after it.
  With those parameters fixed, each member forecasts from every origin of the
  calibration window (rolling origin, only the model state is updated), so every
  error there is out of sample.
* The forecast is the members' weighted mean, with weights inversely proportional
  to each member's mean squared error over the calibration window (Bates & Granger
  1969): a member that does badly on this series counts little, none is chosen
  outright (choosing one on a day's backtest generalises worse: benchmarks/README.md).
  Errors from recent origins weigh more (half-life 2 hours), so a change of
  behaviour inside the calibration day (a ramp that started an hour ago) shows.
* Mean or median: with the same weights, the members' weighted median replaces their
  weighted mean when its absolute error over the whole calibration window (every origin
  counting the same) is the smaller (``combiner`` in the result). A VM that is either busy
  or idle (a batch job, a disk that reads in bursts) is best forecast by one of its two
  states; the mean of the members that follow it and those that revert to the average
  lies between them, where the series never is. On noise that reverts to its level the
  mean's averaging of the members' errors wins. Not after the tracking signal's drift member joined: the
  mean is what keeps a level shift from being extrapolated as a ramp there.
* A change the day's weights cannot see yet: when Trigg's tracking signal of the
  combination's last hour of one-step errors (their sum over the sum of their absolute
  values, at least 8 of them) reaches ``TRACKING_LIMIT`` (0.9) either way, every member
  lags it (after a flat day the smoothing members weigh most, and their level follows a
  fresh ramp slowly). Then a ``drift`` member (the last value plus the slope over the last
  hour) joins, unless one step made more than half of the hour's change (``MAX_JUMP_SHARE``:
  a jump, as a batch VM going from idle to busy, is not a ramp, and its slope carried on
  would double the jump within the hour), the autoregressions leave (they revert to the
  level the series has just left), and the weights come from the last hour's errors only; the interval is
  calibrated on that combination's errors as always. It joins where the caller asked for
  more than one member that follows the level (the default does), even when the fits left
  naive alone; never beside a member asked for alone. The signal is taken on the members
  that follow the level, without the autoregressions, whose reversion would make a level
  shift look like a ramp, and without ``season_change``, whose noisier errors hide a ramp's
  one-sided ones; there, and in the weights after a change, ETS and Theta count in full.
* Weights: ETS and Theta both smooth the level, so when both take part they share one
  member's part of the weights (as do their seasonal forms), the other members keep theirs.
* The prediction interval is split conformal: the (recency-weighted) quantiles of
  the combination's own calibration errors at each horizon step, at
  (1 - level) / 2 and (1 + level) / 2 (finite-sample corrected, widths
  non-decreasing with the step). Its errors lose half their weight every hour,
  faster than the members' weights (2 hours): after a flat day the errors of a ramp
  that started an hour ago hold half the weight, so even a narrow interval's upper
  bound shows the ramp the damped members' mean lags behind.
  They follow the series' real error distribution (skewed bursts included) instead
  of a Gaussian assumption. Too short to calibrate: the random walk's Gaussian
  interval around the last value.
* Series that never go negative (utilisation, bytes/s) get ``mean`` and
  ``lower`` clipped at 0.

statsmodels and numpy are imported lazily; when they are missing a
:class:`MissingForecastLibrary` (an ``ImportError``) is raised, which modules turn
into ``missing_required_lib(exc.library)``. Per-series fits are small: BLAS and
OpenMP are limited to one thread (environment before numpy's first import, and
threadpoolctl when it is installed), because several threads made a fit about 5x
slower on a 2-core machine.
"""

import math
import os
import traceback
import warnings

MODELS = ('naive', 'seasonal_naive', 'season_change', 'ets', 'theta', 'seasonal_ets', 'seasonal_theta', 'ar', 'seasonal_ar')
COMBINE = ('inverse_mse', 'inverse_error', 'equal', 'best')
RECENCY_HALF_LIFE_SECONDS = 2 * 3600     # calibration errors lose half their weight every 2 hours (the weights)...
INTERVAL_HALF_LIFE_SECONDS = 3600        # ...and every hour for the interval, which must follow a fresh change
SEASONAL_MEMBERS = ('seasonal_naive', 'seasonal_ets', 'seasonal_theta', 'seasonal_ar')
# The smallest smoothing constant ETS and Theta may use: fitted on a flat, noisy stretch the best constant is 0, and a
# level smoothed with 0 never follows a change after it (benchmarks/fresh_ramp.py); 0.05 forgets within about 20 steps.
MIN_SMOOTHING = 0.05
CLIP_ERRORS = 3.0                        # ETS and Theta: one-step errors beyond 3x their running mean absolute size
CLIP_SCALE_WEIGHT = 0.05                 # are clipped (robust smoothing); that running mean's weight per step,
CLIP_FLOOR = 0.1                         # and its floor (a tenth of the fit window's mean absolute change);
CLIP_RUN = 3                             # the 3rd error beyond it in a row, same sign, is a change: not clipped
TRACKING_LIMIT = 0.9                     # Trigg's tracking signal over the last hour's one-step errors...
TRACKING_SECONDS = 3600                  # ...(at least MIN_TRACKING_ORIGINS of them): beyond the limit the
MIN_TRACKING_ORIGINS = 8                 # combination lags a change, and the drift member joins, unless one step
MAX_JUMP_SHARE = 0.5                     # made more than half of the last hour's change (a jump, not a ramp)
DEFAULT_MEMBERS = ('naive', 'seasonal_naive', 'season_change', 'ets', 'theta', 'seasonal_theta', 'ar', 'seasonal_ar')
SEASON_CHANGE_SEASONS = 3                # season_change: the median of the last 3 seasons' changes
AR_ORDERS = (1, 2, 3, 4, 6, 8, 12)       # the autoregressive member's candidate orders (AIC chooses on the fit window)
MEAN_REVERTING = ('ar', 'seasonal_ar')   # members that leave when the tracking signal sees a change
NOT_WATCHED = ('season_change',)         # members that follow the level but that the tracking signal does not watch
TWINS = (('ets', 'theta'), ('seasonal_ets', 'seasonal_theta'))   # level smoothers that share one member's weight

DEFAULT_FIT_WINDOW_SECONDS = 7 * 86400   # parameters are estimated on up to 7 days...
DEFAULT_BACKTEST_SECONDS = 86400         # ...and the interval calibrated on the following day
MIN_FIT_POINTS = 24                      # fewer: only naive is fitted
# Members whose parameters are estimated on the fit window; they sit out when less than this share of the fit window
# was observed (the rest interpolated): a stateless controller's week from PVE is a day of one-minute rows after six
# days of 30-minute means, and what is fitted on the straight lines between those means (a trend that goes on, an
# autoregression that extrapolates) is wrong for the one-minute day (benchmarks/stateless_history.py).
ESTIMATED = ('ets', 'theta', 'ar', 'seasonal_ets', 'seasonal_theta', 'seasonal_ar')
MIN_OBSERVED_FIT = 0.5
# The standard deviation the series is scaled to before the fits (the forecast is scaled back), so that a change of
# units does not change the forecast. The forecast is the same at 1, 100 or 1000 (benchmarks/README.md); the
# optimisers stop sooner at 100 than at 1 (a fit takes about a fifth less time).
FIT_SD = 100.0
MIN_BACKTEST_ORIGINS = 12
MIN_CALIBRATION_ERRORS = 20              # fewer errors at one horizon: use those of all horizons
SEASONS_NEEDED = 3                       # the season is removed only with 3 seasons in the fit window (M4)
SEASONALITY_Z = 1.645                    # M4's 90% test
DAY_SECONDS = 86400
HOUR_SECONDS = 3600
HOURS_NEEDED = 24                        # an hourly season is looked for in at least a day of history
HOURLY_STRENGTH = 0.2                    # ...and kept when it explains a fifth of the variance within the hour

_THREAD_VARS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS',
                'BLIS_NUM_THREADS', 'VECLIB_MAXIMUM_THREADS', 'NUMEXPR_NUM_THREADS')


class MissingForecastLibrary(ImportError):
    """A Python library the forecaster needs is not installed.

    ``library`` is the pip name to report with ``missing_required_lib``;
    ``traceback`` is the original import traceback.
    """

    def __init__(self, library, exc):
        super().__init__('%s is required for forecasting: %s' % (library, exc))
        self.library = library
        self.traceback = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class _Libs(object):
    np = None
    ETSModel = None
    SimpleExpSmoothing = None
    threadpool_limits = None


def _libs():
    """Import numpy and statsmodels on first use (they cost 1-3 s to import)."""
    if _Libs.np is not None:
        return _Libs
    import sys
    if 'numpy' not in sys.modules:
        # Only effective before numpy loads its BLAS; later we rely on threadpoolctl.
        for var in _THREAD_VARS:
            os.environ.setdefault(var, '1')
    try:
        import numpy as np
    except ImportError as exc:
        raise MissingForecastLibrary('numpy', exc)
    try:
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel
        from statsmodels.tsa.holtwinters import SimpleExpSmoothing
    except ImportError as exc:
        raise MissingForecastLibrary('statsmodels', exc)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    _Libs.ETSModel = ETSModel
    _Libs.SimpleExpSmoothing = SimpleExpSmoothing
    _Libs.threadpool_limits = threadpool_limits
    _Libs.np = np
    return _Libs


def check_libraries():
    """Raise :class:`MissingForecastLibrary` if the forecaster cannot run here."""
    _libs()


class _OneThread(object):
    """Limit BLAS/OpenMP to one thread for the duration of a fit, when possible."""

    def __init__(self, libs):
        self._ctx = libs.threadpool_limits(limits=1) if libs.threadpool_limits else None

    def __enter__(self):
        if self._ctx is not None:
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False


def _normal_quantile(p):
    """Inverse of the standard normal CDF (Acklam's rational approximation, |err| < 1.2e-9)."""
    if not 0.0 < p < 1.0:
        raise ValueError('probability must be in (0, 1)')
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
         1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
         6.680131188771972e+01, -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
         -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
         3.754408661907416e+00)
    low = 0.02425
    if p < low:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - low:
        return -_normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def _clean(np, values):
    """Float array with interior gaps interpolated; returns (y, observed_mask, trailing_gap)."""
    raw = np.array([float('nan') if v is None else float(v) for v in values], dtype=float)
    raw[~np.isfinite(raw)] = np.nan
    ok = ~np.isnan(raw)
    if not ok.any():
        raise ValueError('the series has no observed values')
    first = int(np.argmax(ok))
    last = len(raw) - 1 - int(np.argmax(ok[::-1]))
    y = raw[first:last + 1]
    mask = ok[first:last + 1]
    if not mask.all():
        idx = np.arange(len(y))
        y = np.interp(idx, idx[mask], y[mask])
    return y, mask, len(raw) - 1 - last


# ---------------------------------------------------------------------------
# Candidates. Each one is fitted on y[:fit_end] and then gives, with its
# parameters fixed, the forecasts from every origin t >= fit_end - 1 (state after
# observing y[t]) for horizons 1..H. The interval comes from their calibration
# errors (_conformal); only naive keeps the random walk's h-step standard
# deviation, for a series too short to calibrate.
# ---------------------------------------------------------------------------

class _Naive(object):
    name = 'naive'

    def __init__(self, libs, y, fit_end, horizon, season=None):
        np = libs.np
        d = np.diff(y[:fit_end])
        self.sigma = float(np.sqrt(np.mean(d * d))) if len(d) else 0.0
        self.y = y
        self.horizon = horizon

    def forecasts(self, origins):
        return self.y[origins][:, None] + _Libs.np.zeros(self.horizon)[None, :]

    def sd(self):
        return self.sigma * _Libs.np.sqrt(_Libs.np.arange(1, self.horizon + 1))


class _SeasonalNaive(object):
    name = 'seasonal_naive'

    def __init__(self, libs, y, fit_end, horizon, season):
        self.m = season
        self.y = y
        self.horizon = horizon

    def forecasts(self, origins):
        np = _Libs.np
        h = np.arange(1, self.horizon + 1)
        lag = self.m * ((h - 1) // self.m + 1)
        return self.y[origins[:, None] + h[None, :] - lag[None, :]]


class _SeasonChange(object):
    """The last value plus the median of the changes that the same steps brought on each of the last
    :data:`SEASON_CHANGE_SEASONS` seasons (from the origin's step to the forecast step): the naive forecast of the
    seasonally differenced series (ARIMA(0,1,0)(0,1,0) with the season's length), with the median of three seasons
    instead of one, so that one unusual day does not become the forecast.

    It follows the level as naive does and the day's shape as the seasonal members do, but without indices
    estimated on the week: the evening ramp of the last three days moves it even when the fit window's median does
    not have it yet, and it needs no seasonality test (on a series without a day's shape its changes are noise,
    and its calibration error gives it little weight). Fewer seasons are used when the history is shorter; none
    (less than one season before the first origin, or a horizon longer than the season) and it leaves.
    """
    name = 'season_change'

    def __init__(self, libs, y, first_origin, horizon, season):
        self.seasons = min(SEASON_CHANGE_SEASONS, first_origin // season) if season and season >= horizon else 0
        if self.seasons < 1:
            raise ValueError('no season before the first origin')
        self.m = season
        self.y = y
        self.steps = libs.np.arange(1, horizon + 1)[None, :]

    def forecasts(self, origins):
        np = _Libs.np
        o = origins[:, None]
        changes = [self.y[o + self.steps - k * self.m] - self.y[o - k * self.m] for k in range(1, self.seasons + 1)]
        return self.y[o] + np.median(changes, axis=0)


class _Clip(object):
    """The cleaning of robust exponential smoothing (after Gelper, Fried and Croux 2010, "Robust forecasting
    with exponential and Holt-Winters smoothing"): a one-step error larger than :data:`CLIP_ERRORS` times the
    running mean absolute one-step error is clipped to that before it updates the state, so that one spike does
    not become the level (or, through ETS's trend, a ramp that goes on after the spike has gone). A lasting change
    is not a spike: the :data:`CLIP_RUN`-th error beyond the limit in a row, all of one sign, passes whole, and so
    do the next ones of that run, so a level shift reaches the state two steps late (the last value and the
    tracking signal's drift member follow it at once). The running scale follows the errors as they are used (its
    weight :data:`CLIP_SCALE_WEIGHT` per step), so it also grows when the series gets noisier. It starts at the fit
    window's mean absolute change and never falls below :data:`CLIP_FLOOR` of that; after a fit window without
    any change it is 0, and every error is clipped to nothing until a run passes.

    Without it, on a series that is flat but for rare spikes (a VM's disk reads) the smoothing members forecast a
    rising level right after a spike, and the combination was 22 times naive's error on one such VM; the run rule
    keeps benchmarks/fresh_ramp.py's level-shift control below `high` (without it, 1 of 20 draws reached it).
    """

    def __init__(self, np, y, fit_end):
        d = np.abs(np.diff(y[:fit_end]))
        self.scale = float(np.mean(d)) if len(d) else 0.0
        self.floor = CLIP_FLOOR * self.scale
        self.run = 0            # consecutive errors beyond the limit, signed

    def __call__(self, error):
        limit = CLIP_ERRORS * self.scale
        if abs(error) <= limit:
            self.run = 0
        else:
            sign = 1 if error > 0 else -1
            self.run = self.run + sign if self.run * sign > 0 else sign
            if abs(self.run) < CLIP_RUN:
                error = sign * limit
        self.scale = max(self.floor, (1.0 - CLIP_SCALE_WEIGHT) * self.scale + CLIP_SCALE_WEIGHT * abs(error))
        return error


class _ETS(object):
    """ETS(A,Ad,N): parameters from statsmodels, state recursion run here with them fixed, the one-step errors
    cleaned by :class:`_Clip`."""
    name = 'ets'

    def __init__(self, libs, y, fit_end, horizon, season=None):
        np = libs.np
        import pandas as pd  # a statsmodels dependency; ETSModel's predictions need an index
        model = libs.ETSModel(pd.Series(y[:fit_end]), error='add', trend='add', damped_trend=True,
                              bounds={'smoothing_level': (MIN_SMOOTHING, 0.9999)})
        # the parameters only: a results object would also smooth the series and compute a Hessian (unused here;
        # about a third of this member's fit on a week of one-minute points)
        p = dict(zip(model.param_names, np.asarray(model.fit(disp=False, return_params=True), dtype=float)))
        self.alpha = p['smoothing_level']
        self.beta = p['smoothing_trend']
        self.phi = p['damping_trend']
        level, trend = p['initial_level'], p['initial_trend']
        # The recursion (Hyndman & Athanasopoulos, FPP3 8.4), over the whole series.
        n = len(y)
        self.level = np.empty(n)
        self.trend = np.empty(n)
        a, b, phi = float(self.alpha), float(self.beta), float(self.phi)
        level, trend = float(level), float(trend)
        clip = _Clip(np, y, fit_end)
        for t, obs in enumerate(y.tolist()):
            pred = level + phi * trend
            e = clip(obs - pred)
            level = pred + a * e
            trend = phi * trend + b * e
            self.level[t] = level
            self.trend[t] = trend
        self.horizon = horizon
        self.damp = np.cumsum(phi ** np.arange(1, horizon + 1))

    def forecasts(self, origins):
        return self.level[origins][:, None] + self.trend[origins][:, None] * self.damp[None, :]


class _Theta(object):
    """Standard Theta (theta=2): SES plus half the OLS drift.

    The parameters are those of statsmodels' ``ThetaModel(..., deseasonalize=False).fit()``
    (OLS slope ``b0`` on a time index, SES ``alpha`` with the level initialised at the first
    value), estimated the same way but with holtwinters' SES, which is several times faster
    than the state-space SES ThetaModel uses and gives the same alpha. The SES recursion's one-step errors are
    cleaned by :class:`_Clip`.
    """
    name = 'theta'

    def __init__(self, libs, y, fit_end, horizon, season=None):
        np = libs.np
        yf = y[:fit_end]
        design = np.column_stack((np.ones(fit_end), np.arange(fit_end, dtype=float)))
        self.b0 = float(np.linalg.lstsq(design, yf, rcond=None)[0][1])
        ses = libs.SimpleExpSmoothing(yf, initialization_method='known', initial_level=float(yf[0])).fit()
        alpha = float(ses.params['smoothing_level'])
        self.alpha = min(max(alpha, MIN_SMOOTHING), 1.0)
        # SES with the level initialised at the first value, as statsmodels does.
        n = len(y)
        self.ses = np.empty(n)      # one-step SES forecast made after observing y[t]
        lvl = float(y[0])
        a = self.alpha
        clip = _Clip(np, y, fit_end)
        for t, obs in enumerate(y.tolist()):
            lvl = lvl + a * clip(obs - lvl)
            self.ses[t] = lvl
        self.horizon = horizon

    def forecasts(self, origins):
        np = _Libs.np
        a = self.alpha
        h = np.arange(self.horizon, dtype=float)[None, :]
        nobs = (origins + 1.0)[:, None]
        drift = 0.5 * self.b0 * (h + 1.0 / a - (1.0 - a) ** nobs / a)
        return self.ses[origins][:, None] + drift


class _Drift(object):
    """The last value plus the slope over the last ``lag`` steps (the random walk with drift, its drift local)."""
    name = 'drift'

    def __init__(self, y, horizon, lag):
        self.y = y
        self.lag = lag
        self.steps = _Libs.np.arange(1, horizon + 1, dtype=float)

    def forecasts(self, origins):
        slope = (self.y[origins] - self.y[origins - self.lag]) / float(self.lag)
        return self.y[origins][:, None] + slope[:, None] * self.steps[None, :]


class _AR(object):
    """AR(p) on the levels, with an intercept, by least squares; the order p by AIC among :data:`AR_ORDERS`. With a
    daily season of ``season`` steps and at least :data:`SEASONS_NEEDED` of them in the fit window, the values one
    day before the forecast step (and one step either side of it) are regressors too, as in a seasonal ARIMA's
    seasonal AR terms: their coefficients say how much yesterday counts, from nothing (noise) to most of it.

    The one member that reverts to a mean: noise around a level that moves little (a busy cluster's average CPU,
    a VM with short dips) is forecast towards that level, where the last value and the smoothing members carry the
    last point's noise or follow it. On a series that wanders like a random walk the fitted coefficients sum to
    about 1 and it stays near the last value; lags beyond the first give it the short momentum of smooth series.
    (The Box-Jenkins AR family, the third of the M4 competition's classic benchmarks beside ETS and Theta.)
    """
    name = 'ar'

    def __init__(self, libs, y, fit_end, horizon, season=None):
        np = libs.np
        self.daily = []
        if season and horizon < season - 1 and fit_end >= SEASONS_NEEDED * season:
            self.daily = [season - 1, season, season + 1]
        orders = [p for p in AR_ORDERS if 10 * (p + 1 + len(self.daily)) <= fit_end - max(self.daily or [0])]
        if not orders:
            raise ValueError('too short for an autoregression')
        top = max(orders + self.daily)
        # standardised on the fit window, so that the intercept and the lags are well conditioned at any scale
        self.mu = float(np.mean(y[:fit_end]))
        self.sd = float(np.std(y[:fit_end])) or 1.0
        self.z = (y - self.mu) / self.sd
        z = self.z[:fit_end]
        # lag k of z[top:]; every order is fitted on the same points, so their AIC compare
        lags = np.column_stack([np.ones(fit_end - top)] + [z[top - k:fit_end - k] for k in range(1, max(orders) + 1)])
        daily = [z[top - k:fit_end - k] for k in self.daily]
        target = z[top:]
        best = None
        for p in orders:
            design = np.column_stack([lags[:, :p + 1]] + daily)
            coef = np.linalg.lstsq(design, target, rcond=None)[0]
            rss = float(np.sum((target - design @ coef) ** 2))
            aic = len(target) * math.log(max(rss, 1e-300) / len(target)) + 2.0 * design.shape[1]
            if best is None or aic < best[0]:
                best = (aic, p, coef)
        self.order, self.coef = best[1], best[2]
        self.horizon = horizon

    def forecasts(self, origins):
        np = _Libs.np
        p = self.order
        # the last p values at each origin, newest first (lag 1 .. lag p)
        recent = np.stack([self.z[origins - k] for k in range(p)], axis=1)
        out = np.empty((len(origins), self.horizon))
        for h in range(self.horizon):
            nxt = self.coef[0] + recent @ self.coef[1:p + 1]
            for coef, k in zip(self.coef[p + 1:], self.daily):
                nxt = nxt + coef * self.z[origins + h + 1 - k]      # observed: h + 1 < k
            out[:, h] = nxt
            recent = np.concatenate((nxt[:, None], recent[:, :-1]), axis=1)
        return self.mu + self.sd * out


_CANDIDATES = {'naive': _Naive, 'seasonal_naive': _SeasonalNaive, 'ets': _ETS, 'theta': _Theta, 'ar': _AR}


# ---------------------------------------------------------------------------
# Seasonality: the M4 competition's benchmarks' test and classical additive
# decomposition (Makridakis, Spiliotis, Assimakopoulos 2020, "The M4 Competition:
# 100,000 time series and 61 forecasting methods", section 2.4).
# ---------------------------------------------------------------------------

def _acf(np, x, max_lag):
    """Sample autocorrelations r_1..r_max_lag (FFT; the usual biased estimator)."""
    x = x - x.mean()
    n = len(x)
    size = 1 << int(math.ceil(math.log(2 * n - 1, 2)))
    f = np.fft.rfft(x, size)
    acov = np.fft.irfft(f * np.conjugate(f), size)[:max_lag + 1]
    if acov[0] <= 0:
        return np.zeros(max_lag)
    return acov[1:] / acov[0]


def is_seasonal(np, y, season, z=SEASONALITY_Z):
    """M4's test: |r_m| > z * sqrt((1 + 2 * sum_{k<m} r_k^2) / n) (90% one-sided for z=1.645)."""
    n = len(y)
    if season < 2 or n < SEASONS_NEEDED * season:
        return False
    r = _acf(np, np.asarray(y, dtype=float), season)
    limit = z * math.sqrt((1.0 + 2.0 * float(np.sum(r[:-1] ** 2))) / n)
    return bool(abs(r[-1]) > limit)


def _hourly_profile(np, y, daily, step_seconds):
    """Additive hourly indices of ``y`` (after the daily indices ``daily``, when given), or None.

    The hour is a season when its strength (Wang, Smith & Hyndman 2006: 1 - Var(remainder) / Var(detrended), on the
    series minus its centred one-hour moving average) is at least ``HOURLY_STRENGTH``: a change that repeats at the
    same minute of every hour (cron jobs, hourly batches). A significance test does not serve here: at a lag of one
    hour the changes of any smooth or spiky series correlate a little, and thousands of points make that significant.
    None when the hour is not a whole number of at least 4 steps, or the fit window holds fewer than
    ``HOURS_NEEDED`` hours.
    """
    per_hour = HOUR_SECONDS / float(step_seconds)
    if per_hour != int(per_hour) or per_hour < 4 or len(y) < HOURS_NEEDED * per_hour:
        return None
    m = int(per_hour)
    if daily is not None and len(daily) % m:
        return None
    rest = y - daily[np.arange(len(y)) % len(daily)] if daily is not None else y
    detr = _detrended(np, rest, m)
    prof = _phase_medians(np, detr, m)
    inside = np.isfinite(detr)               # where the moving average reaches
    remainder = detr[inside] - prof[np.arange(len(rest))[inside] % m]
    var = float(np.var(detr[inside]))
    if var <= 0 or 1.0 - float(np.var(remainder)) / var < HOURLY_STRENGTH:
        return None
    return prof


def seasonal_profile(np, y, season):
    """Additive seasonal indices of ``y`` (classical decomposition, phase 0 = y[0]).

    Trend: centred moving average of one season (2 x m when m is even); the indices are
    the per-phase medians of y - trend (the median, not the mean, so that one busy day or a
    spike does not become a daily pattern), centred on zero. (Smoothing the indices along
    the cycle was tried: it blurs the daily jobs that make the season worth having.)
    """
    return _phase_medians(np, _detrended(np, y, season), season)


def _detrended(np, y, season):
    """``y`` minus its centred moving average of one season (2 x m when m is even); NaN at both ends, where the
    average does not reach."""
    n = len(y)
    if season % 2:
        w = np.ones(season) / season
    else:
        w = np.concatenate(([0.5], np.ones(season - 1), [0.5])) / season
    trend = np.convolve(y, w, mode='valid')              # trend[i] is centred at i + len(w) // 2
    half = len(w) // 2
    detr = np.full(n, np.nan)
    detr[half:half + len(trend)] = y[half:half + len(trend)] - trend
    return detr


def _phase_medians(np, detr, season):
    """The per-phase medians of ``detr`` (phase 0 = its first point; NaN left out), centred on zero."""
    pad = (-len(detr)) % season
    table = np.concatenate((detr, np.full(pad, np.nan))).reshape(-1, season)
    idx = np.nanmedian(table, axis=0)
    idx = np.where(np.isfinite(idx), idx, 0.0)
    return idx - idx.mean()


class _Reseasoned(object):
    """A member fitted on the seasonally adjusted series, with the seasonal indices added back."""

    def __init__(self, model, indices, horizon):
        self.model = model
        self.indices = indices          # indices[p]: phase p, phase 0 = the model's first point
        self.horizon = horizon

    def forecasts(self, origins):
        np = _Libs.np
        tgt = origins[:, None] + np.arange(1, self.horizon + 1)[None, :]
        return self.model.forecasts(origins) + self.indices[np.mod(tgt, len(self.indices))]


def _result(np, name, mean, offsets, nonneg, skip, extra, levels):
    """The result dict; ``offsets`` holds ``(lower, upper)`` offsets from the mean per level of ``levels`` (the
    first is the interval, the others the ``bands``)."""
    mean = np.asarray(mean, dtype=float)[skip:]

    def bound(off, side):
        v = mean + side(np.asarray(off, dtype=float)[skip:], 0.0)
        return [float(x) for x in (np.maximum(v, 0.0) if nonneg else v)]
    intervals = [{'level': lv, 'lower': bound(lo, np.minimum), 'upper': bound(hi, np.maximum)}
                 for lv, (lo, hi) in zip(levels, offsets)]
    out = {'mean': [float(v) for v in (np.maximum(mean, 0.0) if nonneg else mean)],
           'lower': intervals[0]['lower'], 'upper': intervals[0]['upper'], 'model': name, 'level': levels[0],
           'bands': intervals[1:]}
    out.update(extra)
    return out


def _gaussian(levels, sd):
    """``(lower, upper)`` offsets per level of a Gaussian with standard deviation ``sd`` (per step)."""
    return [(-z * sd, z * sd) for z in (_normal_quantile(0.5 + lv / 2.0) for lv in levels)]


def _weighted_quantile(np, sorted_e, cum, q):
    """The smallest of the sorted errors whose cumulative weight ``cum`` reaches q (of the total weight)."""
    i = int(np.searchsorted(cum, q * cum[-1], side='left'))
    return float(sorted_e[min(i, len(sorted_e) - 1)])


def _conformal(np, errors, valid, levels, recency):
    """Per-horizon quantiles of the out-of-sample errors (actual - forecast) at (1 -+ level) / 2, for each level:
    a list of ``(lower, upper)`` offsets.

    Split conformal prediction (Vovk et al.; for time series Stankeviciute et al. 2021): the
    errors come from forecasts made from origins after the fit window, so the interval is
    calibrated on what the model did not see. Recent origins weigh more (``recency``, one
    weight per origin; Barber, Candes, Ramdas, Tibshirani 2023, "Conformal prediction beyond
    exchangeability"), with the new point's own weight counted as unbounded error so the
    interval keeps its finite-sample coverage. The widths are made non-decreasing in the
    horizon (a later step is never known better than an earlier one).
    """
    horizon = errors.shape[1]
    lo = np.empty((len(levels), horizon))
    hi = np.empty((len(levels), horizon))
    w_all = np.broadcast_to(recency[:, None], errors.shape)
    for h in range(horizon):
        ok = valid[:, h]
        if ok.sum() < MIN_CALIBRATION_ERRORS:
            ok = valid
            e, w = errors[ok], w_all[ok]
        else:
            e, w = errors[:, h][ok], recency[ok]
        order = np.argsort(e)
        e, cum = e[order], np.cumsum(w[order])
        inflate = (cum[-1] + 1.0) / cum[-1]       # the new point, weight 1 (the most recent)
        for i, level in enumerate(levels):
            q = (1.0 - (1.0 - level) / 2.0) * inflate
            hi[i, h] = _weighted_quantile(np, e, cum, min(1.0, q))
            lo[i, h] = _weighted_quantile(np, e, cum, max(0.0, 1.0 - q))
    hi = np.maximum.accumulate(np.maximum(hi, 0.0), axis=1)
    lo = -np.maximum.accumulate(np.maximum(-lo, 0.0), axis=1)
    return list(zip(lo, hi))


def _weighted_median(np, forecasts, weights):
    """Per element, the weighted median of the members' ``forecasts`` (arrays of one shape; ``weights`` summing to 1):
    the smallest value whose members' weights, with those of the smaller values, reach half."""
    stack = np.stack(forecasts)
    order = np.argsort(stack, axis=0, kind='stable')
    reached = np.cumsum(np.asarray(weights, dtype=float)[order], axis=0) >= 0.5 - 1e-12
    pick = np.take_along_axis(order, np.argmax(reached, axis=0)[None], axis=0)
    return np.take_along_axis(stack, pick, axis=0)[0]


def _spread(np, y):
    """Whether the change from ``y[0]`` to ``y[-1]`` is spread over the steps between (a ramp), not mostly made by one of
    them (a jump): no single step's change exceeds :data:`MAX_JUMP_SHARE` of the whole change."""
    net = abs(float(y[-1] - y[0]))
    return net > 0 and float(np.max(np.abs(np.diff(y)))) <= MAX_JUMP_SHARE * net


def tracking_signal(np, errors):
    """Trigg's tracking signal of ``errors``: their sum over the sum of their absolute values, from -1 (every
    forecast too high) to 1 (every forecast too low); 0 when there are none (Trigg 1964, over a window instead
    of exponentially smoothed)."""
    total = float(np.sum(np.abs(errors))) if len(errors) else 0.0
    return float(np.sum(errors)) / total if total > 0 else 0.0


def _weights(names, combine, sq, scores, twins=None):
    """The combination's weights (summing to 1) from the members' calibration MSE ``sq`` or MAE ``scores``.

    Members of one group of ``twins`` (default :data:`TWINS`, read at the call) that are both there share one
    member's part: each one's inverse error is divided by how many of its group take part. Inverse-error weights (Bates and Granger) treat the members' errors
    as independent; ETS(A,Ad,N) and Theta both smooth the level with a trend and their forecasts nearly coincide, so
    counted in full the one behaviour weighs twice and every other member (the autoregression above all) less.
    """
    if combine == 'equal':
        inv = [1.0] * len(names)
    elif combine == 'inverse_mse':
        inv = [1.0 / max(sq[nm], 1e-300) for nm in names]
    elif combine == 'best':
        best = min(names, key=lambda k: scores[k])
        inv = [1.0 if nm == best else 0.0 for nm in names]
    else:
        inv = [1.0 / max(scores[nm], 1e-300) for nm in names]
    for group in TWINS if twins is None else twins:
        share = float(len([nm for nm in group if nm in names]))
        inv = [v / share if nm in group else v for v, nm in zip(inv, names)]
    return [v / sum(inv) for v in inv]


def _hindcast(np, f, lead, targets, gap, nonneg):
    """``f`` (the calibration forecasts, one row per origin, the first origin ``targets`` steps before the last
    point) at ``lead`` steps: the forecast of each of the last ``targets - lead + 1`` points, then ``gap`` Nones."""
    made = f[:targets - lead + 1, lead - 1]
    made = np.maximum(made, 0.0) if nonneg else made
    return {'lead': lead, 'mean': [float(v) for v in made] + [None] * gap}


def forecast_series(values, step_seconds, horizon_steps, level=0.8, models=None,
                    fit_window_steps=None, backtest_steps=None, season_steps=None, deseasonalize=None,
                    combine='inverse_mse', bands=(), hindcast_steps=None):
    """Forecast ``horizon_steps`` points after the end of ``values``.

    :param values: the series, oldest first, one value per ``step_seconds``;
        ``None`` or NaN for gaps.
    :param step_seconds: spacing of the points (seconds); the daily season in steps is
        derived from it.
    :param horizon_steps: how many points to forecast (>= 1).
    :param level: central coverage of the prediction interval (0.8 = 10th..90th
        percentile).
    :param models: the members of the combination (default :data:`DEFAULT_MEMBERS`);
        ``['naive']`` alone gives the last value.
    :param fit_window_steps: at most this many points, before the calibration window, are
        the parameters estimated on (default 7 days of steps).
    :param backtest_steps: the calibration window: the last points, forecast from rolling
        origins with the fitted parameters fixed; their errors set the interval (default
        one day of steps, at most half the series).
    :param season_steps: season length (default one day of steps, when that is whole).
    :param deseasonalize: ``None`` (default) tests the fit window for the season (M4's
        test); ``True``/``False`` force the seasonal members in or out.
    :param bands: further interval levels (e.g. ``(0.5, 0.95)`` for a fan chart), calibrated the same way as
        ``level``'s; they cost one quantile per level and step, not another fit.
    :param hindcast_steps: also return ``hindcast``: what the forecast said ``hindcast_steps`` steps before each
        point of the calibration window (for a report's "forecast against actual" line).
    :param combine: ``inverse_mse`` (default: weights inversely proportional to each
        member's calibration mean squared error, Bates and Granger's weights),
        ``inverse_error`` (to its mean absolute error), ``equal`` (the plain mean) or ``best``
        (only the member with the lowest calibration MAE: the selection this replaced, for
        comparisons).
    :returns: dict with ``mean``, ``lower``, ``upper`` (``horizon_steps`` floats each),
        ``model`` (``combination``, or the one member's name, or ``naive`` when the series is
        too short), ``members``, ``weights`` (per member, summing to 1), ``seasonal`` (a daily
        or hourly season was found and the seasonal members could take part), ``hourly`` (the hourly one),
        ``interval``
        (``conformal``, or ``gaussian`` when too short to calibrate), ``level``, ``backtest``
        (recency-weighted mean absolute error over the calibration window per member, of the
        combination and of naive; empty when the series is too short) and ``origin_gap``
        (trailing gap steps that were skipped), ``bands`` (per level of ``bands``: ``level``, ``lower``,
        ``upper``), ``tracking_signal`` (Trigg's, of the last hour's one-step errors: -1..1) and ``tracking``
        (it passed :data:`TRACKING_LIMIT`, so the ``drift`` member joined and the weights follow the last hour),
        ``sparse_fit`` (less than :data:`MIN_OBSERVED_FIT` of the fit window was observed, so the members with
        estimated parameters sat out), ``combiner`` (``mean`` or ``median``: how the members were combined);
        with ``hindcast_steps``, ``hindcast``: ``lead`` (the steps, at most ``horizon_steps``) and ``mean``, the
        combination's forecast of each of the last ``len(mean)`` points of ``values`` made ``lead`` steps before it,
        from the calibration window's rolling origins (the members' parameters fitted before that window, the final
        weights; None for a trailing gap), or None when the series was too short to calibrate.
    :raises MissingForecastLibrary: numpy or statsmodels are not installed.
    :raises ValueError: bad arguments or no observed value at all.
    """
    horizon_steps = int(horizon_steps)
    if horizon_steps < 1:
        raise ValueError('horizon_steps must be >= 1')
    if not step_seconds or step_seconds <= 0:
        raise ValueError('step_seconds must be > 0')
    levels = [level] + [float(b) for b in bands or ()]
    if not all(0.0 < lv < 1.0 for lv in levels):
        raise ValueError('level and bands must be between 0 and 1 (exclusive)')
    members = list(DEFAULT_MEMBERS if models is None else models)
    unknown = set(members) - set(MODELS)
    if unknown:
        raise ValueError('unknown model(s): %s; choose from %s' % (', '.join(sorted(unknown)), ', '.join(MODELS)))
    if not members:
        members = ['naive']
    # the drift member joins a combination the caller asked for (more than one member that follows the level), not a
    # member asked for alone, whatever members are left after the fits
    drift_may_join = len([m for m in members if m not in MEAN_REVERTING]) > 1
    if combine not in COMBINE:
        raise ValueError('combine must be one of %s' % ', '.join(COMBINE))
    if hindcast_steps is not None and int(hindcast_steps) < 1:
        raise ValueError('hindcast_steps must be >= 1')

    libs = _libs()
    np = libs.np
    y, observed, gap = _clean(np, values)
    # Fitted on the series scaled to a standard deviation of FIT_SD, and the forecast scaled back: statsmodels' ETS
    # and SES optimisers stop on absolute tolerances, so without it the same load in bytes and in MiB (or a load of
    # about 0.4 that moves by 0.01) was forecast differently, by up to 3.5%.
    scale = float(np.std(y)) / FIT_SD
    if not (scale > 0.0 and math.isfinite(scale)):
        scale = 1.0
    out = _forecast(libs, y / scale, observed, gap, step_seconds, horizon_steps, levels, members, drift_may_join,
                    fit_window_steps, backtest_steps, season_steps, deseasonalize, combine, hindcast_steps)
    if scale != 1.0:
        _rescale(out, scale)
    return out


def _rescale(out, scale):
    """Multiply the values and errors of a result computed on the series divided by ``scale`` back by it."""
    def times(values):
        return [None if v is None else v * scale for v in values]
    for key in ('mean', 'lower', 'upper'):
        out[key] = times(out[key])
    for band in out['bands']:
        band['lower'], band['upper'] = times(band['lower']), times(band['upper'])
    out['backtest'] = dict((name, error * scale) for name, error in out['backtest'].items())
    if out.get('hindcast'):
        out['hindcast']['mean'] = times(out['hindcast']['mean'])


def _forecast(libs, y, observed, gap, step_seconds, horizon_steps, levels, members, drift_may_join,
              fit_window_steps, backtest_steps, season_steps, deseasonalize, combine, hindcast_steps):
    """forecast_series' work on the cleaned series ``y`` (see there for the arguments and the result)."""
    np = libs.np
    nonneg = bool(np.min(y) >= 0)
    horizon = horizon_steps + gap          # forecast from the last observation
    n = len(y)
    extra = {'backtest': {}, 'origin_gap': gap, 'members': ['naive'], 'weights': {'naive': 1.0}, 'seasonal': False,
             'hourly': False, 'interval': 'gaussian', 'tracking': False, 'tracking_signal': 0.0, 'sparse_fit': False,
             'combiner': 'mean'}
    if hindcast_steps is not None:
        extra['hindcast'] = None

    if np.ptp(y) == 0.0:
        return _result(np, 'naive', np.full(horizon, y[-1]), [(np.zeros(horizon), np.zeros(horizon))] * len(levels),
                       nonneg, gap, extra, levels)

    per_day = DAY_SECONDS / float(step_seconds)
    bt = int(backtest_steps or max(1, round(DEFAULT_BACKTEST_SECONDS / float(step_seconds))))
    fw = int(fit_window_steps or max(1, round(DEFAULT_FIT_WINDOW_SECONDS / float(step_seconds))))
    bt = min(bt, max(0, n // 2))
    fit_end = n - bt
    fw = min(fw, fit_end)
    if fw < MIN_FIT_POINTS or bt - horizon < MIN_BACKTEST_ORIGINS or members == ['naive']:
        # Too short to estimate and calibrate anything honestly (or asked for): the last value.
        naive = _Naive(libs, y, n, horizon)
        return _result(np, 'naive', naive.forecasts(np.array([n - 1]))[0], _gaussian(levels, naive.sd()), nonneg, gap,
                       extra, levels)

    season = int(season_steps) if season_steps else (int(per_day) if per_day == int(per_day) else 0)
    season_ok = season > 1 and fw >= SEASONS_NEEDED * season
    if 'seasonal_naive' in members and not (season > horizon and fit_end - season >= max(MIN_FIT_POINTS, season)):
        members.remove('seasonal_naive')

    # Work on the recent part only: the fit window, the calibration window, and one season
    # before them when seasonal naive or the season's change needs it.
    keep = fw + bt + (season if {'seasonal_naive', 'season_change'} & set(members) else 0)
    start = max(0, n - keep)
    yw = y[start:]
    obs = observed[start:]
    fe = len(yw) - bt                           # fit on yw[fs:fe]
    fs = fe - fw
    if fw < per_day and 'ar' in members:
        # the mean it reverts to would be that of part of a day (benchmarks/stateless_history.py, a day of
        # history: 1.037 times naive's error with it, 1.012 without)
        members.remove('ar')
    if float(np.mean(obs[fs:fe])) < MIN_OBSERVED_FIT:
        members = [m for m in members if m not in ESTIMATED] or ['naive']
        extra['sparse_fit'] = True

    origins = np.arange(fe - 1, len(yw) - 1)     # state after observing yw[t]
    steps = np.arange(1, horizon + 1)
    tgt = origins[:, None] + steps[None, :]
    valid = tgt < len(yw)
    tgt_c = np.minimum(tgt, len(yw) - 1)
    valid &= obs[tgt_c]                          # score only on observed (not interpolated) values
    actual = yw[tgt_c]
    last = np.array([len(yw) - 1])

    def decay(half_life_seconds):
        """One weight per origin, halving every ``half_life_seconds`` back from the newest (weight 1)."""
        return 0.5 ** ((origins[-1] - origins) / max(1.0, half_life_seconds / float(step_seconds)))
    recency = decay(RECENCY_HALF_LIFE_SECONDS)         # the members' weights
    w_err = np.where(valid, recency[:, None], 0.0)

    def mae(f, w=w_err):
        return float(np.sum(np.abs(f - actual) * w) / max(np.sum(w), 1e-300))

    def mse(f, w=w_err):
        return float(np.sum((f - actual) ** 2 * w) / max(np.sum(w), 1e-300))

    seasonal = bool(season_ok and (deseasonalize if deseasonalize is not None else is_seasonal(np, yw[fs:fe], season)))
    # indices estimated on the fit window only; phase p of yw is (p - fs) mod len(prof)
    prof = seasonal_profile(np, yw[fs:fe], season) if seasonal else None
    hourly = _hourly_profile(np, yw[fs:fe], prof, step_seconds) if deseasonalize is not False else None
    if hourly is not None:
        # the hour repeats whole inside the day (the day's length is a multiple of the hour's)
        prof = hourly if prof is None else prof + hourly[np.arange(len(prof)) % len(hourly)]
        extra['hourly'] = True
    profile = None
    if prof is not None:
        profile = prof[(np.arange(len(yw)) - fs) % len(prof)]
        extra['seasonal'] = True

    cal, final, sq = {}, {}, {}
    scores = {}
    with warnings.catch_warnings(), _OneThread(libs):
        warnings.simplefilter('ignore')
        naive = _Naive(libs, yw, fe, horizon)
        scores['naive'] = mae(naive.forecasts(origins))
        for name in MODELS:
            if name not in members or (name in SEASONAL_MEMBERS and profile is None):
                continue
            try:
                if name == 'naive':
                    model, shift = naive, 0
                elif name == 'seasonal_naive':
                    model, shift = _SeasonalNaive(libs, yw, fe, horizon, season), 0
                elif name == 'season_change':
                    model, shift = _SeasonChange(libs, yw, int(origins[0]), horizon, season), 0
                elif name in SEASONAL_MEMBERS:
                    base = _CANDIDATES[name[len('seasonal_'):]](libs, (yw - profile)[fs:], fe - fs, horizon, season)
                    model, shift = _Reseasoned(base, prof, horizon), fs
                else:
                    model, shift = _CANDIDATES[name](libs, yw[fs:], fe - fs, horizon, season), fs
                f = model.forecasts(origins - shift)
                f_last = model.forecasts(last - shift)[0]
            except Exception:  # a member that cannot be fitted leaves the combination
                continue
            if not (np.all(np.isfinite(f)) and np.all(np.isfinite(f_last))):
                continue
            scores[name] = mae(f)
            sq[name] = mse(f)
            cal[name], final[name] = f, f_last

    if not cal:
        return _result(np, 'naive', naive.forecasts(last)[0], _gaussian(levels, naive.sd()), nonneg, gap, extra, levels)
    names = [name for name in MODELS if name in cal]
    # Weights inversely proportional to each member's out-of-sample error over the calibration window.
    weights = _weights(names, combine, sq, scores)
    f = sum(w * cal[nm] for w, nm in zip(weights, names))
    # Trigg's tracking signal: when nearly all of the last hour's one-step errors have one sign, every member lags
    # a change (a fresh ramp, a level shift) that the day's weights cannot see yet. The drift member (the last
    # value plus the last hour's slope) then joins, and the weights follow the last hour's errors only.
    # The signal is that of the members that follow the level: the autoregression reverts to the fit window's
    # mean, so it lags any change by construction (it would make a level shift look like a ramp), and it leaves
    # when the drift member joins. Nor does it look at season_change: on a flat history its forecast is the last
    # value plus three days' noise, and those noisier errors hid a ramp's one-sided ones (benchmarks/fresh_ramp.py:
    # 14 of 20 noisy ramps seen at one-minute steps with a week of history, 19 without it). Each smoothing member
    # counts in full here and in the weights after a change (no TWINS share): their lag behind a ramp is what the
    # signal looks for, and with more weight on naive's noisy errors it missed slow ramps at one-minute steps
    # (tests/unit/test_forecast.py); with the share the drift member took more weight after a level shift, and
    # fresh_ramp.py's level-shift control reached `high` in 1 of 20 draws.
    followers = [nm for nm in names if nm not in MEAN_REVERTING] or names
    watched = [nm for nm in followers if nm not in NOT_WATCHED] or followers
    f_follow = sum(w * cal[nm] for w, nm in zip(_weights(watched, combine, sq, scores, twins=()), watched))
    window = max(MIN_TRACKING_ORIGINS, int(round(TRACKING_SECONDS / float(step_seconds))))
    recent = origins > origins[-1] - window
    signal = tracking_signal(np, (actual - f_follow)[:, 0][recent & valid[:, 0]])
    extra['tracking_signal'] = round(signal, 4)
    # Where a sparse fit window left naive as the only follower (PVE 8's `day` of half-hours before the `hour` of
    # minutes), the drift member is what follows a fresh ramp. A jump is not a ramp: when one step of the last hour
    # made more than MAX_JUMP_SHARE of its change (a batch VM going from idle to busy), the hour's slope would carry
    # the jump on into the next hour (a Bitbrains VM's forecast was 549 times the last value's error).
    if abs(signal) >= TRACKING_LIMIT and combine == 'inverse_mse' and drift_may_join and origins[0] >= window \
            and _spread(np, yw[-window - 1:]):
        drift = _Drift(yw, horizon, window)
        cal['drift'], final['drift'] = drift.forecasts(origins), drift.forecasts(last)[0]
        names = followers + ['drift']
        scores['drift'] = mae(cal['drift'])
        w_recent = np.where(valid & recent[:, None], 1.0, 0.0)
        weights = _weights(names, combine, dict((nm, mse(cal[nm], w_recent)) for nm in names), scores, twins=())
        f = sum(w * cal[nm] for w, nm in zip(weights, names))
        extra['tracking'] = True
    mean = sum(w * final[nm] for w, nm in zip(weights, names))
    name = names[0] if len(names) == 1 else 'combination'
    if combine == 'best':
        name = names[weights.index(1.0)]
    if len(names) > 1 and not extra['tracking']:
        # The members' weighted mean or their weighted median, whichever had the smaller absolute error over the
        # whole calibration window (every origin counting the same: a property of the series, not of its last hour).
        by_median = _weighted_median(np, [cal[nm] for nm in names], weights)
        if mae(by_median, valid) < mae(f, valid):
            f = by_median
            mean = _weighted_median(np, [final[nm] for nm in names], weights)
            extra['combiner'] = 'median'
    if len(names) > 1:
        scores['combination'] = mae(f)
    offsets = _conformal(np, actual - f, valid, levels, decay(INTERVAL_HALF_LIFE_SECONDS))
    if hindcast_steps is not None:
        extra['hindcast'] = _hindcast(np, f, min(int(hindcast_steps), horizon_steps), len(yw) - origins[0] - 1, gap,
                                      nonneg)
    extra.update(backtest=scores, members=names, interval='conformal',
                 weights=dict((nm, round(w, 4)) for w, nm in zip(weights, names)))
    return _result(np, name, mean, offsets, nonneg, gap, extra, levels)
