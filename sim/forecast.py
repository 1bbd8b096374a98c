"""The forecasting contract: `History` in, `Prediction` out, the `Predictor` protocol.

Forecasters (baselines, the RNN), the forecast benchmark, the viewer and the ego's avoidance
share these types. Everything is in the world frame and in metres, seconds, radians; arrays
are numpy, one row per prediction sample. Two ways to get a History:

- a running simulation: the loop owns a `HistoryBuffer`, calls `push(state)` after every
  step and `history(state, rows)` when it wants forecasts;
- a track file: `sample_index` picks (agent row, time index) samples by the benchmark protocol
  of shared/specs/tracks.md, `history_from_tracks` gathers their pasts and `future_from_tracks`
  the ground truth.

numpy only: this module imports nothing outside numpy and the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

PROB_TOL = 1e-4  # prediction probabilities must sum to 1 within this


@dataclass(frozen=True, eq=False)
class History:
    """S prediction samples: each target's past and its M nearest neighbours' pasts.

    Steps run oldest first over H = history_steps + 1 steps of dt_s, ending at the
    prediction time (index -1 is "now"). World frame; values are NaN where not valid.

    xy: (S, H, 2) m, vehicle centre; vxy: (S, H, 2) m/s; heading: (S, H) rad, 0 along +x,
        counter-clockwise positive; valid: (S, H) bool, valid[:, -1] is always True.
    length, width: (S,) m; kind: (S,) int8 (track-file kinds, -1 unknown);
    ids: (S,) int64 agent ids; t_s: (S,) prediction time, s.
    nb_xy: (S, M, H, 2) m, nb_vxy: (S, M, H, 2) m/s, nb_heading: (S, M, H) rad,
        nb_valid: (S, M, H) bool: the M agents nearest to the target at the prediction time
        (centre distance, nearest first) over the same steps; nb_ids: (S, M) int64, -1 for
        an empty slot (fewer than M others present), whose nb_valid is all False;
        nb_length, nb_width: (S, M) m, NaN for empty slots. M may be 0.
    dt_s: step between history steps (and between predicted steps), s.
    """

    xy: np.ndarray
    vxy: np.ndarray
    heading: np.ndarray
    valid: np.ndarray
    length: np.ndarray
    width: np.ndarray
    kind: np.ndarray
    ids: np.ndarray
    t_s: np.ndarray
    nb_xy: np.ndarray
    nb_vxy: np.ndarray
    nb_heading: np.ndarray
    nb_valid: np.ndarray
    nb_ids: np.ndarray
    nb_length: np.ndarray
    nb_width: np.ndarray
    dt_s: float

    def __post_init__(self) -> None:
        s, h = self.valid.shape if self.valid.ndim == 2 else (-1, -1)
        if s < 0 or h < 1:
            raise ValueError(f"History.valid must be (S, H) with H >= 1, got {self.valid.shape}")
        m = self.nb_ids.shape[1] if self.nb_ids.ndim == 2 else -1
        expect = {
            "xy": (s, h, 2), "vxy": (s, h, 2), "heading": (s, h), "valid": (s, h),
            "length": (s,), "width": (s,), "kind": (s,), "ids": (s,), "t_s": (s,),
            "nb_xy": (s, m, h, 2), "nb_vxy": (s, m, h, 2), "nb_heading": (s, m, h),
            "nb_valid": (s, m, h), "nb_ids": (s, m), "nb_length": (s, m), "nb_width": (s, m),
        }
        for name, shape in expect.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"History.{name} must have shape {shape}, got {got}")
        if self.valid.dtype != np.bool_ or self.nb_valid.dtype != np.bool_:
            raise ValueError("History.valid and nb_valid must be bool arrays")
        if not (np.isfinite(self.dt_s) and self.dt_s > 0):
            raise ValueError(f"History.dt_s must be a positive number, got {self.dt_s}")
        if s and not self.valid[:, -1].all():
            raise ValueError("History.valid[:, -1] must be True: every sample is present now")
        for name, mask in (("xy", self.valid), ("vxy", self.valid), ("heading", self.valid),
                           ("nb_xy", self.nb_valid), ("nb_vxy", self.nb_valid),
                           ("nb_heading", self.nb_valid)):
            arr = getattr(self, name)
            m_ = mask if arr.ndim == mask.ndim else mask[..., None]
            if not np.isfinite(np.where(m_, arr, 0.0)).all():
                raise ValueError(f"History.{name} holds non-finite values at valid steps")

    @property
    def n_samples(self) -> int:
        return self.valid.shape[0]

    @property
    def history_steps(self) -> int:
        """Steps before the prediction time (H - 1)."""
        return self.valid.shape[1] - 1

    @property
    def n_neighbors(self) -> int:
        return self.nb_ids.shape[1]

    def take(self, index) -> History:
        """The samples selected by `index` (a slice, an index array or a bool mask)."""
        values = {k: (v if k == "dt_s" else v[index]) for k, v in vars(self).items()}
        return History(**values)


@dataclass(frozen=True, eq=False)
class Prediction:
    """K future trajectories per sample, world frame, one every dt_s of the History.

    xy: (S, K, F, 2) m, F predicted steps after the prediction time (xy[:, :, 0] is one step
        ahead); prob: (S, K), non-negative, rows sum to 1; sigma_m: (S, K, F, 2) m, optional
        standard deviation of x and y at each step (independent axes), or None.
    "Mode 1" is the most probable mode (the lowest index among ties): see `top`.
    """

    xy: np.ndarray
    prob: np.ndarray
    sigma_m: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.xy.ndim != 4 or self.xy.shape[-1] != 2 or self.xy.shape[1] < 1:
            raise ValueError(f"Prediction.xy must be (S, K, F, 2) with K >= 1, got "
                             f"{self.xy.shape}")
        s, k = self.xy.shape[:2]
        if self.prob.shape != (s, k):
            raise ValueError(f"Prediction.prob must have shape {(s, k)}, got {self.prob.shape}")
        if not np.isfinite(self.xy).all():
            raise ValueError("Prediction.xy holds non-finite values")
        if not np.isfinite(self.prob).all() or (self.prob < 0).any():
            raise ValueError("Prediction.prob must be finite and non-negative")
        if s and np.abs(self.prob.sum(axis=1) - 1.0).max() > PROB_TOL:
            raise ValueError(f"Prediction.prob rows must sum to 1 (within {PROB_TOL})")
        if self.sigma_m is not None:
            if self.sigma_m.shape != self.xy.shape:
                raise ValueError(f"Prediction.sigma_m must have shape {self.xy.shape}, got "
                                 f"{self.sigma_m.shape}")
            if not np.isfinite(self.sigma_m).all() or (self.sigma_m < 0).any():
                raise ValueError("Prediction.sigma_m must be finite and non-negative")

    @property
    def n_samples(self) -> int:
        return self.xy.shape[0]

    @property
    def n_modes(self) -> int:
        return self.xy.shape[1]

    @property
    def horizon_steps(self) -> int:
        return self.xy.shape[2]

    def top(self) -> np.ndarray:
        """(S, F, 2) m, the most probable mode of each sample."""
        best = np.argmax(self.prob, axis=1)
        return self.xy[np.arange(self.n_samples), best]


@runtime_checkable
class Predictor(Protocol):
    """A forecaster. The benchmark, the viewer and the avoidance see only this.

    name: registry name (e.g. "cv"); dt_s: the step the predictor was built or trained
    for, s, or None if it works at any step (inputs at another step are resampled or
    refused by the caller); n_neighbors: how many neighbours it reads from the History
    (0: none; callers build Histories with at least that many).
    predict(history, horizon_steps) -> Prediction with F = horizon_steps at history.dt_s.
    """

    name: str
    dt_s: float | None
    n_neighbors: int

    def predict(self, history: History, horizon_steps: int) -> Prediction: ...


def concat_histories(histories: list[History]) -> History:
    """One History holding the samples of several (same dt_s, steps and neighbours)."""
    if not histories:
        raise ValueError("concat_histories: nothing to concatenate")
    dt = histories[0].dt_s
    if any(abs(h.dt_s - dt) > 1e-9 for h in histories):
        raise ValueError("concat_histories: histories have different dt_s")
    names = [k for k in vars(histories[0]) if k != "dt_s"]
    return History(**{k: np.concatenate([getattr(h, k) for h in histories]) for k in names},
                   dt_s=dt)


# ---- building Histories ----------------------------------------------------------------------


def empty_neighbors(n_samples: int, n_steps: int) -> dict[str, np.ndarray]:
    """The nb_* fields of a History with M = 0 neighbours."""
    s, h = n_samples, n_steps
    return dict(nb_xy=np.empty((s, 0, h, 2)), nb_vxy=np.empty((s, 0, h, 2)),
                nb_heading=np.empty((s, 0, h)), nb_valid=np.empty((s, 0, h), bool),
                nb_ids=np.empty((s, 0), np.int64), nb_length=np.empty((s, 0)),
                nb_width=np.empty((s, 0)))


def nearest_others(target_xy: np.ndarray, cand_xy: np.ndarray, self_index: np.ndarray,
                   m: int, chunk: int = 2048) -> np.ndarray:
    """(S, m) indices into cand_xy of the m candidates nearest to each target, nearest first,
    excluding the target itself (self_index (S,), -1 if it is not a candidate); -1 fills
    slots when fewer than m others exist. target_xy (S, 2), cand_xy (N, 2), metres.

    Many candidates: scipy's KD-tree proposes a few more than m per target and the exact
    squared distances rank them, so the result is the brute force's (`_nearest_brute`)."""
    s, n = len(target_xy), len(cand_xy)
    if m == 0 or n == 0 or s == 0:
        return np.full((s, m), -1, np.int64)
    if n <= 4 * (m + 8) or not np.isfinite(cand_xy).all():
        return _nearest_brute(target_xy, cand_xy, self_index, m, chunk)
    from scipy.spatial import cKDTree

    k = min(n, m + 5)  # the target itself, m others and spares for the exact ranking
    _, idx = cKDTree(cand_xy).query(target_xy, k=k)
    d2 = ((target_xy[:, None, :] - cand_xy[idx]) ** 2).sum(-1)
    d2[idx == np.asarray(self_index)[:, None]] = np.inf
    order = np.argsort(d2, axis=1, kind="stable")[:, :m]
    best = np.take_along_axis(idx, order, 1)
    far = ~np.isfinite(np.take_along_axis(d2, order, 1))
    return np.where(far, -1, best).astype(np.int64)


def _nearest_brute(target_xy: np.ndarray, cand_xy: np.ndarray, self_index: np.ndarray,
                   m: int, chunk: int = 2048) -> np.ndarray:
    """nearest_others by computing every distance (S x N, in chunks of targets)."""
    s, n = len(target_xy), len(cand_xy)
    out = np.full((s, m), -1, np.int64)
    take = min(m, n)
    for lo in range(0, s, chunk):
        hi = min(s, lo + chunk)
        d2 = ((target_xy[lo:hi, None, :] - cand_xy[None, :, :]) ** 2).sum(-1)
        own = self_index[lo:hi]
        rows = np.flatnonzero(own >= 0)
        d2[rows, own[rows]] = np.inf
        if take < n:
            part = np.argpartition(d2, take - 1, axis=1)[:, :take]
        else:
            part = np.broadcast_to(np.arange(n), (hi - lo, n))
        order = np.argsort(np.take_along_axis(d2, part, 1), axis=1, kind="stable")
        idx = np.take_along_axis(part, order, 1)
        far = ~np.isfinite(np.take_along_axis(d2, idx, 1))
        out[lo:hi, :take] = np.where(far, -1, idx)
    return out


class HistoryBuffer:
    """The recent past of every vehicle slot of a running simulation (a ring buffer).

    The loop owns it: `push(state)` after every step (and once for the initial state), then
    `history(state, rows)` builds a History for the state just pushed. State rows are reused
    by new vehicles, so each stored cell keeps the id it belonged to and a slot's past only
    counts while the id matches. Pushing a state that is not one step of dt_s after the last
    one (a restart or a seek) clears the buffer. `state` is a sim.state.TrafficState or any
    object with t_s and (C,) arrays ids, active, x, y, vx, vy, heading, length, width, kind.
    """

    def __init__(self, history_steps: int, dt_s: float):
        if history_steps < 0:
            raise ValueError(f"history_steps must be >= 0, got {history_steps}")
        if not (np.isfinite(dt_s) and dt_s > 0):
            raise ValueError(f"dt_s must be positive, got {dt_s}")
        self.history_steps = int(history_steps)
        self.dt_s = float(dt_s)
        self._n = 0  # states pushed since the last clear
        self._t_s = np.full(self.steps, np.nan)
        self._alloc(0)

    @property
    def steps(self) -> int:
        return self.history_steps + 1

    def _alloc(self, capacity: int) -> None:
        shape = (capacity, self.steps)
        self._ids = np.full(shape, -1, np.int64)
        self._xyvh = np.full((capacity, self.steps, 5), np.nan)  # x, y, vx, vy, heading

    def _grow(self, capacity: int) -> None:
        old_ids, old = self._ids, self._xyvh
        self._alloc(capacity)
        self._ids[: len(old_ids)] = old_ids
        self._xyvh[: len(old)] = old

    def clear(self) -> None:
        self._n = 0
        self._t_s[:] = np.nan
        self._ids[:] = -1

    def push(self, state) -> None:
        """Store the active rows of `state` as the newest step."""
        capacity = len(state.x)
        if capacity > len(self._ids):
            self._grow(capacity)
        if self._n:
            last = self._t_s[(self._n - 1) % self.steps]
            if abs(state.t_s - last - self.dt_s) > 1e-6 * max(1.0, abs(state.t_s)):
                self.clear()
        col = self._n % self.steps
        self._ids[:, col] = -1
        self._ids[:capacity, col] = np.where(state.active, state.ids, -1)
        self._xyvh[:capacity, col] = np.stack(
            [state.x, state.y, state.vx, state.vy, state.heading], axis=1)
        self._t_s[col] = state.t_s
        self._n += 1

    def history(self, state, rows: np.ndarray | None = None, n_neighbors: int = 0) -> History:
        """History of `rows` (default: all active rows) of the state pushed last, with the
        n_neighbors nearest active vehicles as neighbours."""
        if self._n == 0 or abs(self._t_s[(self._n - 1) % self.steps] - state.t_s) > 1e-9:
            raise ValueError("HistoryBuffer.history: push(state) this state first")
        active_rows = np.flatnonzero(state.active)
        rows = active_rows if rows is None else np.asarray(rows, np.int64)
        if not state.active[rows].all():
            raise ValueError("HistoryBuffer.history: rows must be active vehicles")
        order = (self._n - self.steps + np.arange(self.steps)) % self.steps
        ids_now = np.asarray(state.ids)

        def gather(r: np.ndarray):
            ok = self._ids[r][..., order] == ids_now[r][..., None]
            vals = np.where(ok[..., None], self._xyvh[r][..., order, :], np.nan)
            return vals, ok

        vals, valid = gather(rows)
        s, h = len(rows), self.steps
        fields = dict(
            xy=vals[..., 0:2], vxy=vals[..., 2:4], heading=vals[..., 4], valid=valid,
            length=np.asarray(state.length, float)[rows],
            width=np.asarray(state.width, float)[rows],
            kind=np.asarray(state.kind, np.int8)[rows], ids=ids_now[rows].astype(np.int64),
            t_s=np.full(s, float(state.t_s)))
        if n_neighbors > 0:
            xy_now = np.stack([state.x, state.y], axis=1)
            pos = np.full(len(state.x), -1, np.int64)
            pos[active_rows] = np.arange(len(active_rows))
            k = nearest_others(xy_now[rows], xy_now[active_rows], pos[rows], n_neighbors)
            nb = np.where(k >= 0, active_rows[np.maximum(k, 0)], -1)
            nb_vals, nb_valid = gather(np.maximum(nb, 0))
            empty = nb < 0
            nb_valid &= ~empty[..., None]
            nb_vals = np.where(nb_valid[..., None], nb_vals, np.nan)
            fields.update(
                nb_xy=nb_vals[..., 0:2], nb_vxy=nb_vals[..., 2:4], nb_heading=nb_vals[..., 4],
                nb_valid=nb_valid, nb_ids=np.where(empty, -1, ids_now[np.maximum(nb, 0)]),
                nb_length=np.where(empty, np.nan, np.asarray(state.length, float)[nb]),
                nb_width=np.where(empty, np.nan, np.asarray(state.width, float)[nb]))
        else:
            fields.update(empty_neighbors(s, h))
        return History(**fields, dt_s=self.dt_s)


def sample_index(present: np.ndarray, history_steps: int, horizon_steps: int,
                 stride_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Benchmark samples of one track file (shared/specs/tracks.md): every (agent row a,
    time index i) with i a multiple of stride_steps (one time grid for all agents, from the
    file's first step) such that agent a is present, without gaps, from i - history_steps to
    i + horizon_steps. present: (N, T) bool. Returns (rows, cols), each (S,) int64, sorted
    by time index, then row."""
    if history_steps < 0 or horizon_steps < 1 or stride_steps < 1:
        raise ValueError("need history_steps >= 0, horizon_steps >= 1, stride_steps >= 1")
    n, t = present.shape
    span = history_steps + horizon_steps + 1
    cols = np.arange(0, t, stride_steps)
    cols = cols[(cols >= history_steps) & (cols + horizon_steps < t)]
    if n == 0 or len(cols) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    csum = np.zeros((n, t + 1), np.int32)
    np.cumsum(present, axis=1, out=csum[:, 1:])
    full = (csum[:, cols + horizon_steps + 1] - csum[:, cols - history_steps]) == span
    ci, ri = np.nonzero(full.T)
    return ri.astype(np.int64), cols[ci].astype(np.int64)


def _window(tracks, rows: np.ndarray, cols: np.ndarray, offsets: np.ndarray):
    """Gather x, y, vx, vy, heading at cols + offsets: (..., len(offsets), 5) float64 and a
    validity mask; steps outside the file are invalid."""
    idx = cols[..., None] + offsets
    inside = (idx >= 0) & (idx < len(tracks.t))
    idx = np.clip(idx, 0, len(tracks.t) - 1)
    r = rows[..., None]
    vals = np.stack([np.asarray(getattr(tracks, k))[r, idx] for k in
                     ("x", "y", "vx", "vy", "heading")], axis=-1).astype(np.float64)
    ok = inside & np.isfinite(vals[..., 0])
    vals[~ok] = np.nan
    return vals, ok


def history_from_tracks(tracks, rows: np.ndarray, cols: np.ndarray, history_steps: int,
                        n_neighbors: int = 0) -> History:
    """History of samples (agent row, time index) of a Tracks (sim.tracks.Tracks): each
    target's history_steps + 1 steps up to cols, and the n_neighbors agents present at
    cols nearest to it. Every sample must be present at its time index (ValueError)."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    if history_steps < 0:
        raise ValueError(f"history_steps must be >= 0, got {history_steps}")
    present = np.isfinite(np.asarray(tracks.x))
    if len(rows) and not present[rows, cols].all():
        raise ValueError("history_from_tracks: a sample's agent is absent at its time index")
    offsets = np.arange(-history_steps, 1)
    vals, valid = _window(tracks, rows, cols, offsets)
    s, h = len(rows), history_steps + 1
    length = np.asarray(tracks.length, float)
    width = np.asarray(tracks.width, float)
    kind = (np.asarray(tracks.kind, np.int8) if tracks.kind is not None
            else np.full(len(length), -1, np.int8))
    ids = np.asarray(tracks.ids, np.int64)
    t = np.asarray(tracks.t, float)
    fields = dict(xy=vals[..., 0:2], vxy=vals[..., 2:4], heading=vals[..., 4], valid=valid,
                  length=length[rows], width=width[rows], kind=kind[rows], ids=ids[rows],
                  t_s=t[cols] if s else np.empty(0))
    if n_neighbors > 0:
        nb = np.full((s, n_neighbors), -1, np.int64)
        x, y = np.asarray(tracks.x), np.asarray(tracks.y)
        for c in np.unique(cols):
            at = np.flatnonzero(cols == c)
            cand = np.flatnonzero(present[:, c])
            pos = np.full(len(present), -1, np.int64)
            pos[cand] = np.arange(len(cand))
            cand_xy = np.stack([x[cand, c], y[cand, c]], axis=1).astype(np.float64)
            k = nearest_others(cand_xy[pos[rows[at]]], cand_xy, pos[rows[at]], n_neighbors)
            nb[at] = np.where(k >= 0, cand[np.maximum(k, 0)], -1)
        empty = nb < 0
        nb_vals, nb_valid = _window(tracks, np.maximum(nb, 0), cols[:, None], offsets)
        nb_valid &= ~empty[..., None]
        nb_vals[~nb_valid] = np.nan
        fields.update(nb_xy=nb_vals[..., 0:2], nb_vxy=nb_vals[..., 2:4],
                      nb_heading=nb_vals[..., 4], nb_valid=nb_valid,
                      nb_ids=np.where(empty, -1, ids[np.maximum(nb, 0)]),
                      nb_length=np.where(empty, np.nan, length[np.maximum(nb, 0)]),
                      nb_width=np.where(empty, np.nan, width[np.maximum(nb, 0)]))
    else:
        fields.update(empty_neighbors(s, h))
    return History(**fields, dt_s=float(tracks.dt_s))


def future_from_tracks(tracks, rows: np.ndarray, cols: np.ndarray,
                       horizon_steps: int) -> np.ndarray:
    """(S, F, 2) m, true positions at the F = horizon_steps steps after each sample's time
    index; NaN where the agent is absent or the file ends."""
    vals, _ = _window(tracks, np.asarray(rows, np.int64), np.asarray(cols, np.int64),
                      np.arange(1, horizon_steps + 1))
    return vals[..., 0:2]
