"""Physics baselines, numpy, vectorised over samples: CV, CA, CTRV.

Each is a small frozen dataclass implementing sim.forecast.Predictor. They read the target's
own past only (n_neighbors = 0) and work at any step (dt_s = None). The current velocity is
History.vxy[:, -1] (the track's velocity: the simulator's, or the one differentiated from
smoothed positions for NGSIM); rates of change (acceleration, turn rate) are finite
differences over the last `window_s` seconds of the contiguous valid past.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.forecast import History, Prediction

MIN_COURSE_SPEED_MPS = 1.0  # below this the direction of travel is taken from the heading


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
    Vehicles do not reverse: when a opposes v0 the motion stops at the time the speed would
    be least (t* = -v0.a / |a|^2) and the vehicle holds that position."""

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
        va, aa = (v0 * a).sum(-1), (a * a).sum(-1)
        t_stop = np.where((va < 0) & (aa > 0), -va / np.where(aa > 0, aa, 1.0), np.inf)
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
    Measurement: the position at every valid step, std sigma_meas_m on each axis.
    Initialisation at the first step of the contiguous valid past: that position, the track's
        velocity there (std sigma_v0_mps), acceleration 0 (std the stationary one).
    Output: the predicted mean (K = 1), and sigma_m the predicted position std on world x and
        y (the course-frame covariance rotated; the x-y correlation is dropped). Vehicles do
        not reverse: the longitudinal position is held at its running maximum.
    The defaults come from fitting on simulated training episodes (see `fitted`, which the
    forecast benchmark runs on the training split of its own data).
    """

    sigma_lon_mps2: float = 1.0
    sigma_lat_mps2: float = 0.3
    tau_s: float = 1.0
    sigma_meas_m: float = 0.1
    sigma_v0_mps: float = 1.0
    name: str = "kalman"
    dt_s: float | None = None
    n_neighbors: int = 0

    FIT_FIELDS = ("sigma_lon_mps2", "sigma_lat_mps2", "tau_s", "sigma_meas_m")

    def __post_init__(self) -> None:
        for f in (*self.FIT_FIELDS, "sigma_v0_mps"):
            v = getattr(self, f)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"KalmanFilter.{f} must be a positive number, got {v}")

    def params(self) -> dict:
        return {f: getattr(self, f) for f in (*self.FIT_FIELDS, "sigma_v0_mps")}

    def _tables(self, dt_s: float, n_hist: int, horizon_steps: int):
        """Gains (n_hist, 2, 3) by steps since initialisation, and predicted position
        variances (n_hist, F, 2) by contiguous run length - 1. Covariances do not depend on
        the measurements, so each is computed once per call, not per sample."""
        f, q_lon = singer_matrices(dt_s, self.tau_s, self.sigma_lon_mps2)
        _, q_lat = singer_matrices(dt_s, self.tau_s, self.sigma_lat_mps2)
        q = np.stack([q_lon, q_lat])  # (2, 3, 3)
        r = self.sigma_meas_m ** 2
        p = np.zeros((2, 3, 3))
        for ax, sig_a in enumerate((self.sigma_lon_mps2, self.sigma_lat_mps2)):
            p[ax] = np.diag([r, self.sigma_v0_mps ** 2, sig_a ** 2])
        gains = np.zeros((n_hist, 2, 3))
        p_after = np.zeros((n_hist, 2, 3, 3))
        p_after[0] = p
        for n in range(1, n_hist):
            p = f @ p @ f.T + q
            k = p[:, :, 0] / (p[:, 0, 0] + r)[:, None]  # (2, 3)
            gains[n] = k
            p = p - k[:, :, None] * p[:, None, 0, :]
            p = 0.5 * (p + np.swapaxes(p, 1, 2))
            p_after[n] = p
        var = np.zeros((n_hist, horizon_steps, 2))
        p = p_after
        for j in range(horizon_steps):
            p = f @ p @ f.T + q
            var[:, j] = p[..., 0, 0]
        return f, gains, var

    def predict(self, history: History, horizon_steps: int) -> Prediction:
        _check(history, horizon_steps)
        s, h = history.valid.shape
        f, gains, var = self._tables(history.dt_s, h, horizon_steps)
        run = valid_run(history.valid)
        start = h - run
        psi0 = course(history)[:, -1]
        c, sn = np.cos(psi0), np.sin(psi0)
        rot = np.stack([np.stack([c, sn], -1), np.stack([-sn, c], -1)], axis=1)  # (S, 2, 2)
        p0 = history.xy[:, -1]
        z = np.einsum("sab,shb->sha", rot, np.nan_to_num(history.xy - p0[:, None]))
        v = np.einsum("sab,shb->sha", rot, np.nan_to_num(history.vxy))
        x = np.zeros((s, 2, 3))
        rows = np.arange(s)
        x[:, :, 0] = z[rows, start]
        x[:, :, 1] = v[rows, start]
        for j in range(1, h):
            n = j - start
            upd = n > 0
            if not upd.any():
                continue
            xp = x @ f.T
            k = gains[np.maximum(n, 0)]  # (S, 2, 3)
            xn = xp + k * (z[:, j, :, None] - xp[:, :, :1])
            x = np.where(upd[:, None, None], xn, x)
        lon_now = x[:, 0, 0].copy()
        out = np.zeros((s, horizon_steps, 2))
        for j in range(horizon_steps):
            x = x @ f.T
            out[:, j] = x[:, :, 0]
        out[:, :, 0] = np.maximum.accumulate(
            np.concatenate([lon_now[:, None], out[:, :, 0]], axis=1), axis=1)[:, 1:]
        var_s = var[run - 1]  # (S, F, 2) lon, lat
        xy = p0[:, None] + np.einsum("sab,sfa->sfb", rot, out)
        var_x = c[:, None] ** 2 * var_s[..., 0] + sn[:, None] ** 2 * var_s[..., 1]
        var_y = sn[:, None] ** 2 * var_s[..., 0] + c[:, None] ** 2 * var_s[..., 1]
        return single_mode(xy, np.sqrt(np.stack([var_x, var_y], -1)))

    def fitted(self, history: History, future_xy: np.ndarray) -> KalmanFilter:
        """A copy with the noise parameters that minimise the Gaussian negative
        log-likelihood of `future_xy` (S, F, 2) on these (training) samples: coordinate
        descent over log-spaced grids, two sweeps."""
        from dataclasses import replace

        from predictor.metrics import gaussian_nll

        horizon = future_xy.shape[1]
        grids = {
            "sigma_lon_mps2": np.geomspace(0.1, 4.0, 9),
            "sigma_lat_mps2": np.geomspace(0.02, 2.0, 9),
            "tau_s": np.geomspace(0.25, 16.0, 7),
            "sigma_meas_m": np.geomspace(0.01, 1.0, 7),
        }

        def score(kf: KalmanFilter) -> float:
            pred = kf.predict(history, horizon)
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


def _default_table() -> tuple[tuple[float, ...], ...]:
    """P(hypothesis | context bin) before fitting: the plain CV hypothesis most likely, the
    lateral hypothesis matching the course drift and the longitudinal one matching the
    current acceleration favoured. Replaced by `fitted` on training data."""
    rows = []
    for b in range(N_BINS):
        lat_b, lon_b = divmod(b, 3)
        w = np.ones(N_HYPOTHESES)
        for hyp in range(N_HYPOTHESES):
            lat_h, lon_h = divmod(hyp, 3)
            w[hyp] *= 8.0 if lat_h == 0 else (3.0 if lat_h == lat_b else 1.0)
            w[hyp] *= 4.0 if lon_h == 0 else (3.0 if lon_h == lon_b else 1.0)
        rows.append(tuple(float(v) for v in w / w.sum()))
    return tuple(rows)


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
    table: tuple[tuple[float, ...], ...] = _default_table()
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
