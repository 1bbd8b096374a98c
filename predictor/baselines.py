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
