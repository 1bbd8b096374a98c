"""Physics baselines, numpy, vectorised over samples: CV, CA, CTRV.

Each is a small frozen dataclass implementing sim.forecast.Predictor. They read the target's
own past only (n_neighbors = 0) and work at any step (dt_s = None). The current velocity is
History.vxy[:, -1] (the track's velocity: the simulator's, or the one differentiated from
smoothed positions for NGSIM); rates of change (acceleration, turn rate) are finite
differences over the last `window_s` seconds of the contiguous valid past.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from sim.forecast import History, Prediction

MIN_COURSE_SPEED_MPS = 1.0  # below this the direction of travel is taken from the heading
FIT_MAX_SAMPLES = 2000  # the Kalman filter's 5 noise parameters are fitted on at most this


def valid_run(valid: np.ndarray) -> np.ndarray:
    """(S,) number of contiguous valid steps ending at the prediction time (>= 1).
    valid: (S, H) bool."""
    invalid_from_end = ~valid[:, ::-1]
    run = np.argmax(invalid_from_end, axis=1)
    return np.where(invalid_from_end.any(axis=1), run, valid.shape[1])


def lookback(history: History, window_s: float) -> np.ndarray:
    """(S,) steps back (>= 0) to difference over: window_s in steps, capped by the contiguous
    valid past."""
    n = max(int(round(window_s / history.dt_s)), 1)
    return np.minimum(n, valid_run(history.valid) - 1)


def course(history: History) -> np.ndarray:
    """(S, H) rad, direction of travel: the velocity's direction, or the heading when slower
    than MIN_COURSE_SPEED_MPS."""
    v = history.vxy
    moving = np.hypot(v[..., 0], v[..., 1]) >= MIN_COURSE_SPEED_MPS
    return np.where(moving, np.arctan2(v[..., 1], v[..., 0]), history.heading)


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angle difference folded into [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _at_lookback(arr: np.ndarray, back: np.ndarray) -> np.ndarray:
    """arr (S, H, ...) at step H - 1 - back[s]."""
    idx = arr.shape[1] - 1 - back
    return arr[np.arange(arr.shape[0]), idx]


def future_times(horizon_steps: int, dt_s: float) -> np.ndarray:
    """(F,) s, times of the predicted steps after the prediction time."""
    return dt_s * np.arange(1, horizon_steps + 1)


def single_mode(xy: np.ndarray, sigma_m: np.ndarray | None = None) -> Prediction:
    """A K = 1 Prediction from (S, F, 2) positions (and optional (S, F, 2) std devs)."""
    return Prediction(xy=xy[:, None], prob=np.ones((xy.shape[0], 1)),
                      sigma_m=None if sigma_m is None else sigma_m[:, None])


def _check(history: History, horizon_steps: int) -> None:
    if horizon_steps < 1:
        raise ValueError(f"horizon_steps must be >= 1, got {horizon_steps}")


@dataclass(frozen=True)
class ConstantVelocity:
    """x(t) = x0 + v0 t: the current velocity held over the horizon."""

    name: str = "cv"
    dt_s: float | None = None
    n_neighbors: int = 0

    def predict(self, history: History, horizon_steps: int) -> Prediction:
        _check(history, horizon_steps)
        t = future_times(horizon_steps, history.dt_s)
        p0, v0 = history.xy[:, -1], history.vxy[:, -1]
        return single_mode(p0[:, None] + v0[:, None] * t[None, :, None])


@dataclass(frozen=True)
class ConstantAcceleration:
    """x(t) = x0 + v0 t + a t^2 / 2, a = the velocity change over the last window_s seconds.
    Vehicles do not reverse: when the along-track part of a opposes v0, the vehicle stops
    at t* = |v0| / |a_along| and holds that position (lateral motion stops with it)."""

    window_s: float = 1.0
    name: str = "ca"
    dt_s: float | None = None
    n_neighbors: int = 0

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s must be positive, got {self.window_s}")

    def predict(self, history: History, horizon_steps: int) -> Prediction:
        _check(history, horizon_steps)
        t = future_times(horizon_steps, history.dt_s)
        back = lookback(history, self.window_s)
        p0, v0 = history.xy[:, -1], history.vxy[:, -1]
        v_then = _at_lookback(history.vxy, back)
        a = np.where(back[:, None] > 0, (v0 - v_then) / (np.maximum(back, 1) * history.dt_s)
                     [:, None], 0.0)
        speed = np.hypot(v0[:, 0], v0[:, 1])
        psi = course(history)[:, -1]
        along = a[:, 0] * np.cos(psi) + a[:, 1] * np.sin(psi)
        t_stop = np.where(along < 0, speed / np.where(along < 0, -along, 1.0), np.inf)
        te = np.minimum(t[None, :], t_stop[:, None])[..., None]  # (S, F, 1)
        return single_mode(p0[:, None] + v0[:, None] * te + 0.5 * a[:, None] * te ** 2)


@dataclass(frozen=True)
class ConstantTurnRateVelocity:
    """CTRV: speed and turn rate held. Speed |v0|, direction of travel psi0 (the course),
    turn rate omega = the course change over the last window_s seconds.
    x(t) = x0 + v/omega (sin(psi0 + omega t) - sin psi0), y likewise (straight when
    |omega| < 1e-4 rad/s)."""

    window_s: float = 1.0
    name: str = "ctrv"
    dt_s: float | None = None
    n_neighbors: int = 0

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s must be positive, got {self.window_s}")

    def predict(self, history: History, horizon_steps: int) -> Prediction:
        _check(history, horizon_steps)
        t = future_times(horizon_steps, history.dt_s)[None, :]
        back = lookback(history, self.window_s)
        psi = course(history)
        psi0 = psi[:, -1]
        omega = np.where(back > 0, wrap(psi0 - _at_lookback(psi, back))
                         / (np.maximum(back, 1) * history.dt_s), 0.0)
        speed = np.hypot(history.vxy[:, -1, 0], history.vxy[:, -1, 1])
        xy = ctrv_positions(history.xy[:, -1], speed, psi0, omega, t)
        return single_mode(xy)


def ctrv_positions(p0: np.ndarray, speed: np.ndarray, psi0: np.ndarray, omega: np.ndarray,
                   t: np.ndarray) -> np.ndarray:
    """(S, F, 2) positions on circular arcs. p0 (S, 2) m, speed (S,) m/s, psi0 (S,) rad,
    omega (S,) rad/s, t (1, F) s."""
    straight = np.abs(omega) < 1e-4
    w = np.where(straight, 1.0, omega)[:, None]
    v, p = speed[:, None], psi0[:, None]
    ang = p + w * t
    dx = np.where(straight[:, None], v * t * np.cos(p), v / w * (np.sin(ang) - np.sin(p)))
    dy = np.where(straight[:, None], v * t * np.sin(p), v / w * (np.cos(p) - np.cos(ang)))
    return p0[:, None] + np.stack([dx, dy], axis=-1)


# ---- Kalman filter ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def singer_matrices(dt_s: float, tau_s: float, sigma_a_mps2: float):
    """Discrete transition F (3, 3) and process noise Q (3, 3) of one axis of the Singer model
    (Singer 1970): state (position m, velocity m/s, acceleration m/s^2), the acceleration a
    zero-mean Ornstein-Uhlenbeck process da = -a / tau dt + sqrt(2 sigma_a^2 / tau) dW with
    time constant tau_s and stationary std sigma_a_mps2. Exact discretisation (Van Loan)."""
    from scipy.linalg import expm

    a = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0 / tau_s]])
    gqg = np.zeros((3, 3))
    gqg[2, 2] = 2.0 * sigma_a_mps2 ** 2 / tau_s
    m = np.zeros((6, 6))
    m[:3, :3], m[:3, 3:], m[3:, 3:] = -a, gqg, a.T
    e = expm(m * dt_s)
    f = e[3:, 3:].T
    q = f @ e[:3, 3:]
    return f, 0.5 * (q + q.T)


@dataclass(frozen=True, eq=False)
class _KalmanInputs:
    """A History in each target's current course frame: measurements z (S, H, 2 axes
    lon/lat, 2 position/velocity), first contiguous valid step `start` and run length (S,),
    cos/sin of the course (S, 1), current position p0 (S, 2), dt_s."""

    z: np.ndarray
    start: np.ndarray
    run: np.ndarray
    c: np.ndarray
    sn: np.ndarray
    p0: np.ndarray
    dt_s: float

    @staticmethod
    def of(history: History) -> _KalmanInputs:
        run = valid_run(history.valid)
        psi0 = course(history)[:, -1]
        c, sn = np.cos(psi0)[:, None], np.sin(psi0)[:, None]
        p0 = history.xy[:, -1]
        dx = np.nan_to_num(history.xy[..., 0] - p0[:, None, 0])
        dy = np.nan_to_num(history.xy[..., 1] - p0[:, None, 1])
        vx, vy = np.nan_to_num(history.vxy[..., 0]), np.nan_to_num(history.vxy[..., 1])
        z = np.stack([np.stack([dx * c + dy * sn, vx * c + vy * sn], -1),
                      np.stack([dy * c - dx * sn, vy * c - vx * sn], -1)], axis=2)
        return _KalmanInputs(z, history.valid.shape[1] - run, run, c, sn, p0, history.dt_s)


@functools.lru_cache(maxsize=64)
def _kalman_tables(sigma_lon_mps2: float, sigma_lat_mps2: float, tau_s: float,
                   sigma_pos_m: float, sigma_vel_mps: float, dt_s: float, n_hist: int,
                   horizon_steps: int):
    """KalmanFilter._tables: (F (3, 3), gains (n_hist, 2, 3, 2), variances (n_hist, F, 2))."""
    f, q_lon = singer_matrices(dt_s, tau_s, sigma_lon_mps2)
    _, q_lat = singer_matrices(dt_s, tau_s, sigma_lat_mps2)
    q = np.stack([q_lon, q_lat])  # (2, 3, 3)
    r = np.diag([sigma_pos_m ** 2, sigma_vel_mps ** 2])
    hm = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    p = np.zeros((2, 3, 3))
    for ax, sig_a in enumerate((sigma_lon_mps2, sigma_lat_mps2)):
        p[ax] = np.diag([sigma_pos_m ** 2, sigma_vel_mps ** 2, sig_a ** 2])
    gains = np.zeros((n_hist, 2, 3, 2))
    p_after = np.zeros((n_hist, 2, 3, 3))
    p_after[0] = p
    eye = np.eye(3)
    for n in range(1, n_hist):
        p = f @ p @ f.T + q
        s_inv = np.linalg.inv(hm @ p @ hm.T + r)  # (2, 2, 2)
        k = p @ hm.T @ s_inv  # (2, 3, 2)
        gains[n] = k
        p = (eye - k @ hm) @ p
        p = 0.5 * (p + np.swapaxes(p, 1, 2))
        p_after[n] = p
    var = np.zeros((n_hist, horizon_steps, 2))
    p = p_after
    for j in range(horizon_steps):
        p = f @ p @ f.T + q
        var[:, j] = p[..., 0, 0]
    for a in (f, gains, var):
        a.setflags(write=False)
    return f, gains, var


@dataclass(frozen=True)
class KalmanFilter:
    """A Kalman filter on the Singer manoeuvring-target model, run over each target's
    contiguous valid past and then predicted forward (mean and covariance).

    Frame: the target's current course (the direction of its current velocity), centred on
    its current position, so the longitudinal and lateral axes get their own noise.
    State per axis: position (m), velocity (m/s), acceleration (m/s^2).
    Process noise: acceleration is an Ornstein-Uhlenbeck process with time constant tau_s
        and stationary std sigma_lon_mps2 (along the course) / sigma_lat_mps2 (across); tau
        -> 0 tends to constant velocity, tau -> infinity to constant acceleration.
    Measurements: at every valid step the track's position (std sigma_pos_m per axis) and
        velocity (std sigma_vel_mps per axis), independent.
    Initialisation at the first step of the contiguous valid past: that position and
        velocity with their measurement variances, acceleration 0 with the stationary one.
    Output: the predicted mean (K = 1), and sigma_m the predicted position std on world x and
        y (the course-frame covariance rotated; the x-y correlation is dropped). Vehicles do
        not reverse: the longitudinal position is held at its running maximum.
    The defaults were fitted on simulated training episodes (docs/forecast_benchmark.md);
    the forecast benchmark refits them (`fitted`) on the training split of its own data.
    """

    sigma_lon_mps2: float = 0.45
    sigma_lat_mps2: float = 0.63
    tau_s: float = 8.0
    sigma_pos_m: float = 0.01
    sigma_vel_mps: float = 0.015
    name: str = "kalman"
    dt_s: float | None = None
    n_neighbors: int = 0

    FIT_FIELDS = ("sigma_lon_mps2", "sigma_lat_mps2", "tau_s", "sigma_pos_m", "sigma_vel_mps")
    fit_max_samples = FIT_MAX_SAMPLES  # `fitted` uses an evenly spaced subset of at most this

    def __post_init__(self) -> None:
        for f in self.FIT_FIELDS:
            v = getattr(self, f)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"KalmanFilter.{f} must be a positive number, got {v}")

    def params(self) -> dict:
        return {f: getattr(self, f) for f in self.FIT_FIELDS}

    def _tables(self, dt_s: float, n_hist: int, horizon_steps: int):
        """Gains (n_hist, 2, 3, 2) by steps since initialisation, and predicted position
        variances (n_hist, F, 2) by contiguous run length - 1. Covariances do not depend on
        the measurements, so they are computed once per (parameters, dt, lengths) and cached
        (read-only arrays): a closed loop asks for the same tables every step."""
        return _kalman_tables(self.sigma_lon_mps2, self.sigma_lat_mps2, self.tau_s,
                              self.sigma_pos_m, self.sigma_vel_mps, float(dt_s), int(n_hist),
                              int(horizon_steps))

    def predict(self, history: History, horizon_steps: int) -> Prediction:
        _check(history, horizon_steps)
        return self._predict(_KalmanInputs.of(history), horizon_steps)

    def _predict(self, m: _KalmanInputs, horizon_steps: int) -> Prediction:
        s, h = m.z.shape[:2]
        f, gains, var = self._tables(m.dt_s, h, horizon_steps)
        z, start, run, c, sn, p0 = m.z, m.start, m.run, m.c, m.sn, m.p0
        x = np.zeros((s, 2, 3))
        ft = f.T.copy()
        for st in np.unique(start):  # samples whose past starts at the same step share gains
            idx = np.flatnonzero(start == st)
            zz = z[idx]
            xs = np.zeros((len(idx), 2, 3))
            xs[:, :, :2] = zz[:, st]
            for j in range(st + 1, h):
                xp = np.dot(xs.reshape(-1, 3), ft).reshape(len(idx), 2, 3)
                k = gains[j - st]  # (2, 3, 2)
                inn = zz[:, j] - xp[:, :, :2]  # (S', 2, 2)
                xs = xp + k[..., 0] * inn[:, :, None, 0] + k[..., 1] * inn[:, :, None, 1]
            x[idx] = xs
        # positions ahead: row 0 of F^j for j = 1..F, applied in one product
        powers = np.empty((horizon_steps, 3))
        fj = np.eye(3)
        for j in range(horizon_steps):
            fj = f @ fj
            powers[j] = fj[0]
        out = np.dot(x.reshape(-1, 3), np.ascontiguousarray(powers.T)).reshape(s, 2, horizon_steps)
        lon = np.maximum.accumulate(np.concatenate([x[:, 0, :1], out[:, 0]], axis=1),
                                    axis=1)[:, 1:]
        lat = out[:, 1]
        var_s = var[run - 1]  # (S, F, 2) lon, lat
        xy = np.stack([p0[:, None, 0] + lon * c - lat * sn,
                       p0[:, None, 1] + lon * sn + lat * c], axis=-1)
        var_x = c ** 2 * var_s[..., 0] + sn ** 2 * var_s[..., 1]
        var_y = sn ** 2 * var_s[..., 0] + c ** 2 * var_s[..., 1]
        return single_mode(xy, np.sqrt(np.stack([var_x, var_y], -1)))

    def fitted(self, history: History, future_xy: np.ndarray) -> KalmanFilter:
        """A copy with the noise parameters that minimise the Gaussian negative
        log-likelihood of `future_xy` (S, F, 2) on these (training) samples: coordinate
        descent over log-spaced grids, two sweeps, on at most FIT_MAX_SAMPLES samples."""
        from dataclasses import replace

        from predictor.metrics import gaussian_nll

        if history.n_samples > FIT_MAX_SAMPLES:  # evenly spaced subset
            pick = np.linspace(0, history.n_samples - 1, FIT_MAX_SAMPLES).round().astype(int)
            history, future_xy = history.take(pick), future_xy[pick]
        horizon = future_xy.shape[1]
        grids = {
            "sigma_lon_mps2": np.geomspace(0.05, 4.0, 9),
            "sigma_lat_mps2": np.geomspace(0.02, 2.0, 9),
            "tau_s": np.geomspace(0.25, 64.0, 9),
            "sigma_pos_m": np.geomspace(0.01, 5.0, 7),
            "sigma_vel_mps": np.geomspace(0.005, 4.0, 7),
        }

        inputs = _KalmanInputs.of(history)

        def score(kf: KalmanFilter) -> float:
            pred = kf._predict(inputs, horizon)
            return float(np.mean(gaussian_nll(pred.xy[:, 0], pred.sigma_m[:, 0], future_xy)))

        best, best_score = self, score(self)
        for _ in range(2):
            for name, grid in grids.items():
                for value in grid:
                    cand = replace(best, **{name: float(value)})
                    sc = score(cand)
                    if sc < best_score - 1e-9:
                        best, best_score = cand, sc
        return best


# ---- multimodal constant velocity --------------------------------------------------------------

LATERAL = ("keep", "left", "right")  # lateral hypotheses: no change, one lane left / right
LONGITUDINAL = ("steady", "brake", "accel")  # longitudinal: v held, braking, accelerating
N_HYPOTHESES = len(LATERAL) * len(LONGITUDINAL)  # hypothesis index = 3 * lateral + longitudinal
N_BINS = 9  # context bin index = 3 * lateral bin (straight, left, right) + longitudinal bin


# P(hypothesis | context bin) fitted on the training split of the simulated highway suite
# (docs/forecast_benchmark.md, "Fitted defaults"); the benchmark refits it on its own data.
FITTED_TABLE = (
    (0.9470, 0.0040, 0.0180, 0.0130, 0.0010, 0.0010, 0.0140, 0.0010, 0.0010),
    (0.4160, 0.5450, 0.0010, 0.0110, 0.0050, 0.0010, 0.0090, 0.0110, 0.0010),
    (0.1647, 0.0010, 0.8093, 0.0040, 0.0010, 0.0080, 0.0030, 0.0010, 0.0080),
    (0.1910, 0.0010, 0.0190, 0.7150, 0.0020, 0.0040, 0.0640, 0.0010, 0.0030),
    (0.2472, 0.1862, 0.0100, 0.1752, 0.0521, 0.0100, 0.1341, 0.1752, 0.0100),
    (0.0951, 0.0050, 0.4475, 0.1001, 0.0050, 0.2262, 0.0320, 0.0050, 0.0841),
    (0.1688, 0.0010, 0.0390, 0.0519, 0.0010, 0.0050, 0.7213, 0.0050, 0.0070),
    (0.2092, 0.2443, 0.0170, 0.0581, 0.0170, 0.0060, 0.2272, 0.2152, 0.0060),
    (0.0800, 0.0050, 0.4820, 0.0200, 0.0050, 0.1360, 0.1010, 0.0050, 0.1660),
)


def min_jerk(tau: np.ndarray) -> np.ndarray:
    """Minimum-jerk profile 10 tau^3 - 15 tau^4 + 6 tau^5 of tau clipped to [0, 1]."""
    t = np.clip(tau, 0.0, 1.0)
    return t ** 3 * (10.0 - 15.0 * t + 6.0 * t ** 2)


@dataclass(frozen=True)
class MultiModalCV:
    """Constant velocity with manoeuvre hypotheses, for the min-of-K metrics.

    Nine hypotheses in the frame of the current course (x along, y to the left):
    lateral keep / one lane left / one lane right (an offset of lane_width_m reached along a
    minimum-jerk profile in lane_change_s, added to the CV path) x longitudinal steady /
    brake at brake_mps2 / accelerate at accel_mps2 (no reversing). "keep, steady" is plain CV.
    Probabilities: a table P(hypothesis | context bin), the context being the course change
    over the contiguous past (left / straight / right beyond drift_rad) and the acceleration
    over the last second (brake / steady / accelerate beyond accel_bin_mps2). `fitted`
    estimates the table on training samples (each true future assigned to its nearest
    hypothesis by ADE, Laplace-smoothed counts). The k most probable hypotheses are
    returned (k <= 9), probabilities renormalised over them.
    """

    k: int = 6
    lane_width_m: float = 3.7
    lane_change_s: float = 4.0
    brake_mps2: float = 2.0
    accel_mps2: float = 1.0
    drift_rad: float = 0.02
    accel_bin_mps2: float = 0.5
    table: tuple[tuple[float, ...], ...] = FITTED_TABLE
    name: str = "cv_multi"
    dt_s: float | None = None
    n_neighbors: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.k:
            raise ValueError(f"MultiModalCV.k must be >= 1, got {self.k}")
        for f in ("lane_width_m", "lane_change_s", "brake_mps2", "accel_mps2", "drift_rad",
                  "accel_bin_mps2"):
            if not getattr(self, f) > 0:
                raise ValueError(f"MultiModalCV.{f} must be positive")
        tab = np.asarray(self.table, float)
        if tab.shape != (N_BINS, N_HYPOTHESES) or (tab < 0).any() or \
                np.abs(tab.sum(1) - 1).max() > 1e-6:
            raise ValueError("MultiModalCV.table must be 9 x 9 rows of probabilities")

    def params(self) -> dict:
        return {"k": self.k, "table": [list(r) for r in self.table]}

    def context_bin(self, history: History) -> np.ndarray:
        """(S,) context bin 0..8 (see the class docstring)."""
        run = valid_run(history.valid)
        psi = course(history)
        drift = wrap(psi[:, -1] - _at_lookback(psi, run - 1))
        lat_b = np.where(drift > self.drift_rad, 1, np.where(drift < -self.drift_rad, 2, 0))
        back = lookback(history, 1.0)
        v0 = history.vxy[:, -1]
        speed = np.hypot(v0[:, 0], v0[:, 1])
        dv = speed - np.hypot(*np.moveaxis(_at_lookback(history.vxy, back), -1, 0))
        acc = np.where(back > 0, dv / (np.maximum(back, 1) * history.dt_s), 0.0)
        lon_b = np.where(acc < -self.accel_bin_mps2, 1, np.where(acc > self.accel_bin_mps2,
                                                                  2, 0))
        return 3 * lat_b + lon_b

    def hypotheses(self, history: History, horizon_steps: int) -> np.ndarray:
        """(S, 9, F, 2) m, every hypothesis' positions, world frame."""
        t = future_times(horizon_steps, history.dt_s)
        p0, v0 = history.xy[:, -1], history.vxy[:, -1]
        speed = np.hypot(v0[:, 0], v0[:, 1])
        psi0 = course(history)[:, -1]
        e_lon = np.stack([np.cos(psi0), np.sin(psi0)], -1)
        e_lat = np.stack([-np.sin(psi0), np.cos(psi0)], -1)
        acc = np.array([0.0, -self.brake_mps2, self.accel_mps2])
        # along the course: v t + a t^2 / 2, held once the speed would reach 0
        t_stop = np.where(acc[None] < 0, speed[:, None] / np.abs(np.where(acc < 0, acc, 1.0)),
                          np.inf)  # (S, 3)
        te = np.minimum(t[None, None], t_stop[..., None])  # (S, 3, F)
        lon = speed[:, None, None] * te + 0.5 * acc[None, :, None] * te ** 2
        lat = np.array([0.0, 1.0, -1.0])[:, None] * self.lane_width_m * \
            min_jerk(t / self.lane_change_s)[None]  # (3, F)
        # CV drift (the velocity's own direction is e_lon, so lateral drift is in the path)
        path = (lon[:, None, :, :, None] * e_lon[:, None, None, None, :]
                + lat[None, :, None, :, None] * e_lat[:, None, None, None, :])  # (S,3lat,3lon,F,2)
        return p0[:, None, None] + path.reshape(len(p0), N_HYPOTHESES, horizon_steps, 2)

    def predict(self, history: History, horizon_steps: int) -> Prediction:
        _check(history, horizon_steps)
        hyp = self.hypotheses(history, horizon_steps)
        prob = np.asarray(self.table)[self.context_bin(history)]  # (S, 9)
        k = min(self.k, N_HYPOTHESES)
        order = np.argsort(-prob, axis=1, kind="stable")[:, :k]
        p = np.take_along_axis(prob, order, 1)
        xy = np.take_along_axis(hyp, order[:, :, None, None], 1)
        return Prediction(xy=xy, prob=p / p.sum(1, keepdims=True))

    def fitted(self, history: History, future_xy: np.ndarray) -> MultiModalCV:
        """A copy whose table is estimated on these (training) samples."""
        from dataclasses import replace

        hyp = self.hypotheses(history, future_xy.shape[1])
        err = np.hypot(*np.moveaxis(hyp - future_xy[:, None], -1, 0)).mean(-1)  # (S, 9)
        best = np.argmin(err, axis=1)
        counts = np.ones((N_BINS, N_HYPOTHESES))  # Laplace smoothing
        np.add.at(counts, (self.context_bin(history), best), 1.0)
        tab = counts / counts.sum(1, keepdims=True)
        return replace(self, table=tuple(tuple(float(v) for v in r) for r in tab))
