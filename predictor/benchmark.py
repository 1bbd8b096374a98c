"""The forecast benchmark (issue 4, shared/specs/tracks.md "Samples for prediction").

Data: track files (.npz) and NGSIM CSV files (imported on the fly). Samples: every (agent,
time index) on the stride grid with a complete history and horizon (sim.forecast.sample_index),
restricted to one split (predictor.split). Predictors: anything from predictor.registry;
those with a `fitted(history, future)` method (Kalman, multimodal CV) are first fitted on the
*training* split of the same data. Metrics: predictor.metrics, pooled over all samples, and
optionally per input file or per manoeuvre of the true future.

NGSIM inputs: the ground truth is the centred Savitzky-Golay smoothing of the import, but a
centred filter at time i uses positions up to half a window after i. With NGSIM CSV files the
predictors therefore see, by default, a *causal* smoothing of the same raw positions (each
frame fitted on the window that ends there): "a predictor sees every agent's state up to and
including i" holds exactly. `ngsim_inputs="smoothed"` feeds the centred values instead (the
look-ahead many published numbers carry); docs/forecast_benchmark.md shows both.
"""

from __future__ import annotations

import math
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from predictor import metrics
from predictor.split import agent_mask, agent_split, by_vehicle
from sim.files import atomic_path
from sim.forecast import (
    Prediction,
    Predictor,
    concat_histories,
    future_from_tracks,
    history_from_tracks,
    sample_index,
)
from sim.timing import summary_ms
from sim.tracks import Tracks, read_tracks

MANEUVERS = ("keep_lane", "accelerate", "brake_not_begun", "brake_begun",
             "lane_change_not_begun", "lane_change_begun")
LATERAL_M = 1.0  # |lateral displacement over the horizon, road frame| >= this: lane change/turn
ACCEL_MPS2 = 0.5  # mean acceleration over the horizon beyond +-this: accelerate / brake
# begun: already visible in the last BEGUN_S of the past (at most the history)
BEGUN_S = 0.5
BEGUN_LATERAL_M = 0.2  # moved this far sideways, in the direction of the future's
BEGUN_ACCEL_MPS2 = 1.0  # slowed at this mean deceleration
STEP_TOL = 1e-6


class BenchmarkInputError(ValueError):
    """Bad benchmark input (a file, a protocol value): main.py prints it as one line."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """The protocol: seconds, the split, the grouping and the batch size."""

    history_s: float = 2.0
    horizon_s: float = 3.0
    stride_s: float = 1.0
    k: int = 6
    split: str = "test"
    split_seed: int = 0
    by: str | None = None  # None, "file" or "maneuver"
    fit: bool = True
    ngsim_inputs: str = "causal"  # or "smoothed"
    batch: int = 20_000
    fit_samples: int = 20_000
    miss_threshold_m: float = metrics.MISS_THRESHOLD_M

    def __post_init__(self) -> None:
        if not (self.history_s >= 0 and self.horizon_s > 0 and self.stride_s > 0):
            raise ValueError("history must be >= 0 s, horizon and stride > 0 s")
        if self.k < 1 or self.batch < 1 or self.fit_samples < 1:
            raise ValueError("k, batch and fit_samples must be >= 1")
        if self.split not in ("train", "val", "test", "all"):
            raise ValueError(f"unknown split {self.split!r} (valid: train, val, test, all)")
        if self.by not in (None, "file", "maneuver"):
            raise ValueError(f"--by must be file or maneuver, got {self.by!r}")
        if self.ngsim_inputs not in ("causal", "smoothed"):
            raise ValueError(f"ngsim inputs must be causal or smoothed, got "
                             f"{self.ngsim_inputs!r}")
        if not self.miss_threshold_m > 0:
            raise ValueError("miss threshold must be positive")

    def steps(self, dt_s: float, where: str) -> tuple[int, int, int]:
        """(history, horizon, stride) in steps of dt_s; each must be a whole number."""
        out = []
        for name, sec in (("history", self.history_s), ("horizon", self.horizon_s),
                          ("stride", self.stride_s)):
            n = sec / dt_s
            if abs(n - round(n)) > 1e-6:
                raise BenchmarkInputError(f"{where}: --{name} {sec:g} s is not a whole number "
                                          f"of its {dt_s:g} s steps")
            out.append(int(round(n)))
        return out[0], out[1], out[2]


@dataclass(frozen=True, eq=False)
class Episode:
    """One input file: the truth, and what predictors see (the same Tracks except for NGSIM
    CSVs with causal inputs)."""

    path: str
    truth: Tracks
    inputs: Tracks
    inputs_kind: str  # "as recorded", "causal" or "smoothed"


def load_episode(path: str | os.PathLike, ngsim_inputs: str = "causal",
                 progress: bool = False) -> Episode:
    """A track file (.npz) or an NGSIM CSV (.csv / .csv.gz, imported now)."""
    from scenarios.ngsim import ImportSettings, looks_like_ngsim, read_rows, tracks_from_rows

    name = str(path)
    if not os.path.exists(name):
        raise BenchmarkInputError(f"{name}: no such file")
    if os.path.isfile(name) and zipfile.is_zipfile(name):
        tr = read_tracks(name)
        return Episode(name, tr, tr, "as recorded")
    if looks_like_ngsim(name):
        rows = read_rows(name, progress)
        truth = tracks_from_rows(rows, name, progress=progress)
        if ngsim_inputs == "causal":
            inputs = tracks_from_rows(rows, name, settings=ImportSettings(causal=True),
                                      progress=progress)
            return Episode(name, truth, inputs, "causal")
        return Episode(name, truth, truth, "smoothed")
    raise BenchmarkInputError(f"{name}: not a track file (.npz) or an NGSIM CSV "
                              f"(.csv, .csv.gz)")


def resample(tracks: Tracks, dt_s: float, where: str) -> Tracks:
    """The same episode at step dt_s, an integer multiple of its own (every n-th step).
    A finer or non-multiple step is refused (BenchmarkInputError naming the file)."""
    own = tracks.dt_s
    if abs(own - dt_s) <= STEP_TOL * max(1.0, dt_s):
        return tracks
    n = dt_s / own
    if n < 1 or abs(n - round(n)) > 1e-6:
        raise BenchmarkInputError(
            f"{where}: step {own:g} s cannot be resampled to the predictor's {dt_s:g} s "
            f"(only to whole multiples of {own:g} s)")
    n = int(round(n))
    cut = {k: getattr(tracks, k)[:, ::n] for k in ("x", "y", "vx", "vy", "heading")}
    extra = {k: getattr(tracks, k)[:, ::n] for k in ("lane", "collided")
             if getattr(tracks, k) is not None}
    return replace(tracks, t=tracks.t[::n], **cut, **extra,
                   meta={**tracks.meta, "dt": own * n, "resampled_from_dt": own})


# ---- manoeuvres of the true future -------------------------------------------------------------


def classify_maneuvers(tracks: Tracks, rows: np.ndarray, cols: np.ndarray,
                       horizon_steps: int, past_steps: int = 0,
                       past: Tracks | None = None, course_steps: int = 0) -> np.ndarray:
    """(S,) int8 index into MANEUVERS from the true future of each sample (`tracks`), and
    whether the past the forecasters see (`past`, default `tracks`; e.g. causally smoothed
    NGSIM inputs) already shows it.

    lane change (or turn): the lateral displacement between now and the end of the horizon,
      measured in the road frame, is at least LATERAL_M. Road frame: the Frenet frame of the
      lane the agent is on now when the track file carries a road (so road curvature is not
      lateral motion); y for NGSIM (x runs along the road); otherwise the course course_steps
      before now (the start of the history: one a lane change under way has not turned yet,
      unless it began before).
    brake / accelerate: the mean acceleration over the horizon, (|v(end)| - |v(now)|) /
      horizon, is at most -ACCEL_MPS2 / at least +ACCEL_MPS2.
    keep_lane: everything else (steady speed in the lane).
    A lane change or a brake has begun when the past_steps before now show it: at least
    BEGUN_LATERAL_M sideways in the direction the future goes on, or a mean deceleration of
    at least BEGUN_ACCEL_MPS2; past_steps 0: none has.
    """
    past = tracks if past is None else past
    end = cols + horizon_steps
    back = cols - past_steps
    x, y = np.asarray(tracks.x, float), np.asarray(tracks.y, float)
    vx, vy = np.asarray(tracks.vx, float), np.asarray(tracks.vy, float)
    px, py = np.asarray(past.x, float), np.asarray(past.y, float)
    pvx, pvy = np.asarray(past.vx, float), np.asarray(past.vy, float)
    x0, y0, x1, y1 = x[rows, cols], y[rows, cols], x[rows, end], y[rows, end]
    v0 = np.hypot(vx[rows, cols], vy[rows, cols])
    v1 = np.hypot(vx[rows, end], vy[rows, end])
    mean_acc = (v1 - v0) / (horizon_steps * tracks.dt_s)
    past_acc = ((np.hypot(pvx[rows, cols], pvy[rows, cols])
                 - np.hypot(pvx[rows, back], pvy[rows, back]))
                / max(past_steps * tracks.dt_s, 1e-9))
    if tracks.road is not None and len(rows):
        road = tracks.road
        lane0, s0, d0 = road.locate(x0, y0)

        def d_at(ax: np.ndarray, ay: np.ndarray, k: int) -> np.ndarray:
            """Road-frame offset of points (ax, ay) k steps from now, searched near the arc
            length driven."""
            steps = np.arange(min(0, k), max(0, k) + 1)
            at = (rows[:, None], cols[:, None] + steps)
            driven = np.hypot(np.diff(ax[at], axis=1), np.diff(ay[at], axis=1)).sum(axis=1)
            return road.project(lane0, s0 + np.sign(k) * driven, ax[rows, cols + k],
                                ay[rows, cols + k])[1]

        lateral = d_at(x, y, horizon_steps) - d0
        direction = np.sign(lateral)
        lateral_past = d_at(px, py, 0) - d_at(px, py, -past_steps)
    elif by_vehicle(tracks):
        lateral = y1 - y0
        direction = np.sign(lateral)
        lateral_past = py[rows, cols] - py[rows, back]
    else:
        ref = cols - course_steps
        psi = np.arctan2(vy[rows, ref], vx[rows, ref])
        c, sn = np.cos(psi), np.sin(psi)
        lateral = -(x1 - x0) * sn + (y1 - y0) * c
        direction = np.sign(lateral)
        lateral_past = (-(px[rows, cols] - px[rows, back]) * sn
                        + (py[rows, cols] - py[rows, back]) * c)
    lc_begun = (past_steps > 0) & (lateral_past * direction >= BEGUN_LATERAL_M)
    brake_begun = (past_steps > 0) & (past_acc <= -BEGUN_ACCEL_MPS2)
    code = np.where(mean_acc <= -ACCEL_MPS2, np.where(brake_begun, 3, 2),
                    np.where(mean_acc >= ACCEL_MPS2, 1, 0))
    code = np.where(np.abs(lateral) >= LATERAL_M, np.where(lc_begun, 5, 4), code)
    return code.astype(np.int8)


def begun_steps(dt_s: float, history_steps: int) -> int:
    """Steps of past that judge whether a manoeuvre has begun: BEGUN_S (at least one step,
    at most the history)."""
    return min(history_steps, max(1, int(math.ceil(BEGUN_S / dt_s - 1e-9))))


# ---- accumulating metrics ----------------------------------------------------------------------


@dataclass
class Sums:
    """Running sums of one predictor over one group of samples."""

    horizon_steps: int
    n: int = 0
    ade: float = 0.0
    fde: float = 0.0
    min_ade: float = 0.0
    min_fde: float = 0.0
    misses: int = 0
    nll: float = 0.0
    n_nll: int = 0
    step_disp: np.ndarray = field(default=None)  # (F,) sum of mode-1 displacement per step
    step_sq: np.ndarray = field(default=None)  # (F,) sum of squared displacement per step

    def __post_init__(self) -> None:
        self.step_disp = np.zeros(self.horizon_steps)
        self.step_sq = np.zeros(self.horizon_steps)

    def add(self, d_top: np.ndarray, d_all: np.ndarray, miss_m: float,
            nll: np.ndarray | None) -> None:
        """d_top (S, F) mode-1 displacement; d_all (S, K, F) every mode's; nll (S,)."""
        self.n += len(d_top)
        self.ade += float(d_top.mean(1).sum())
        self.fde += float(d_top[:, -1].sum())
        min_fde = d_all[:, :, -1].min(1)
        self.min_ade += float(d_all.mean(2).min(1).sum())
        self.min_fde += float(min_fde.sum())
        self.misses += int((min_fde > miss_m).sum())
        self.step_disp += d_top.sum(0)
        self.step_sq += (d_top ** 2).sum(0)
        if nll is not None:
            self.nll += float(nll.sum())
            self.n_nll += len(nll)

    def result(self, dt_s: float, latency_ms: float | None, extra: dict) -> dict:
        n = max(self.n, 1)
        seconds = metrics.whole_second_steps(self.horizon_steps, dt_s)
        out = {
            "samples": self.n,
            "ade": _r(self.ade / n), "fde": _r(self.fde / n),
            "min_ade_k": _r(self.min_ade / n), "min_fde_k": _r(self.min_fde / n),
            "miss_rate": _r(self.misses / n),
            "rmse_at": {str(sec): _r(np.sqrt(self.step_sq[f] / n)) for sec, f in
                        seconds.items()},
            "latency_ms_per_sample": None if latency_ms is None else round(latency_ms, 5),
        }
        if self.n_nll:
            out["nll"] = _r(self.nll / self.n_nll)
        out.update(extra)
        if self.n == 0:
            for key in ("ade", "fde", "min_ade_k", "min_fde_k", "miss_rate"):
                out[key] = None
            out["rmse_at"] = {k: None for k in out["rmse_at"]}
        return out

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(F,) mean displacement and RMSE of mode 1 at each step."""
        n = max(self.n, 1)
        return self.step_disp / n, np.sqrt(self.step_sq / n)


def _r(v: float) -> float:
    return round(float(v), 4)


def score(pred: Prediction, future_xy: np.ndarray, k: int, miss_m: float):
    """Displacements for Sums.add: (d_top (S, F), d_all (S, K', F), nll (S,) or None), with
    only the k most probable modes counted when a predictor returns more."""
    xy, prob = pred.xy, pred.prob
    if xy.shape[1] > k:
        order = np.argsort(-prob, axis=1, kind="stable")[:, :k]
        xy = np.take_along_axis(xy, order[:, :, None, None], 1)
        prob = np.take_along_axis(prob, order, 1)
    d_all = metrics.displacement(xy, future_xy)
    d_top = d_all[np.arange(len(xy)), np.argmax(prob, axis=1)]
    nll = None
    if pred.sigma_m is not None:
        top = np.argmax(pred.prob, axis=1)
        rows = np.arange(len(xy))
        sig = np.maximum(pred.sigma_m[rows, top], 1e-6)
        nll = metrics.gaussian_nll(pred.xy[rows, top], sig, future_xy)
    return d_top, d_all, nll


# ---- running ------------------------------------------------------------------------------------


def _file_info(ep: Episode, seed: int) -> dict:
    """Per input file: its step, what predictors saw, and how it was split."""
    splits = agent_split(ep.truth, ep.path, seed)
    info = {"path": ep.path, "dt_s": ep.truth.dt_s, "inputs": ep.inputs_kind}
    if by_vehicle(ep.truth):
        info["split_unit"] = "vehicle"
        info["vehicles"] = {s: int((splits == s).sum()) for s in ("train", "val", "test")}
    else:
        info["split_unit"] = "episode"
        info["split"] = str(splits[0]) if len(splits) else None
    return info


def _group_keys(spec: BenchmarkSpec, ep: Episode, truth: Tracks, inputs: Tracks, rows, cols,
                history, horizon) -> list:
    if spec.by == "file":
        return [ep.path] * len(rows)
    if spec.by == "maneuver":
        codes = classify_maneuvers(truth, rows, cols, horizon,
                                   begun_steps(truth.dt_s, history), past=inputs,
                                   course_steps=history)
        return [MANEUVERS[c] for c in codes]
    return []


def _fit(preds: list[Predictor], per_ep: list, spec: BenchmarkSpec, n_nb: int):
    """Fit the predictors that have `fitted` on up to spec.fit_samples training-split samples
    (evenly spaced over all of them; the episodes of the most common step when steps
    differ). Returns (predictors, {name: {"samples", "params"}})."""
    fittable = [p for p in preds if hasattr(p, "fitted")]
    if not fittable:
        return preds, {}
    chosen = []
    for ep, truth, inputs, rows, cols, h, f in per_ep:
        keep = agent_mask(truth, ep.path, "train", spec.split_seed)[rows]
        chosen.append((truth, inputs, rows[keep], cols[keep], h, f))
    dts = [round(c[0].dt_s, 9) for c in chosen]
    counts = {d: sum(len(c[2]) for c, dd in zip(chosen, dts) if dd == d) for d in set(dts)}
    best_dt = max(counts, key=lambda d: (counts[d], -d))
    chosen = [c for c, d in zip(chosen, dts) if d == best_dt and len(c[2])]
    n = sum(len(c[2]) for c in chosen)
    if n == 0:
        return preds, {p.name: {"samples": 0, "params": p.params(),
                                "note": "no training samples: defaults used"} for p in fittable}
    m = min(n, spec.fit_samples)
    pick = np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))
    hists, futs = [], []
    start = 0
    for truth, inputs, rows, cols, h, f in chosen:
        sel = pick[(pick >= start) & (pick < start + len(rows))] - start
        start += len(rows)
        if len(sel):
            hists.append(history_from_tracks(inputs, rows[sel], cols[sel], h, n_nb))
            futs.append(future_from_tracks(truth, rows[sel], cols[sel], f))
    hist, fut = concat_histories(hists), np.concatenate(futs)
    out, info = [], {}
    for p in preds:
        if hasattr(p, "fitted"):
            used = min(len(fut), getattr(p, "fit_max_samples", len(fut)))
            p = p.fitted(hist, fut)
            info[p.name] = {"samples": used, "params": p.params()}
        out.append(p)
    return out, info


def run_benchmark(episodes: list[Episode], predictors: list[Predictor],
                  spec: BenchmarkSpec,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Evaluate predictors on the samples of the episodes (see the module doc). Returns the
    result dict of shared/specs/cli.md plus "by" (when grouped) and "curves" (per-step
    errors for plots). progress(done, total) is called after every batch."""
    if not episodes:
        raise BenchmarkInputError("no input files")
    seen: set[str] = set()
    for ep in episodes:
        real = os.path.realpath(ep.path)
        if real in seen:
            raise BenchmarkInputError(f"{ep.path}: given twice (its samples would count twice)")
        seen.add(real)
    groups: dict[float | None, list[Predictor]] = {}  # by the predictor's step (None: any)
    for p in predictors:
        groups.setdefault(None if p.dt_s is None else round(float(p.dt_s), 9), []).append(p)
    results: dict = {}
    by: dict = {}
    curves: dict = {}
    fitted: dict = {}
    plan = []  # (group key, per-episode (truth, inputs, rows, cols)) to count work first
    for gkey, preds in groups.items():
        per_ep = []
        for ep in episodes:
            dt = gkey if gkey is not None else ep.truth.dt_s
            truth = resample(ep.truth, dt, ep.path)
            inputs = truth if ep.inputs is ep.truth else resample(ep.inputs, dt, ep.path)
            h, f, stride = spec.steps(dt, ep.path)
            rows, cols = sample_index(truth.present, h, f, stride)
            per_ep.append((ep, truth, inputs, rows, cols, h, f))
        plan.append((gkey, preds, per_ep))
    total = 0
    for _, preds, per_ep in plan:
        for ep, truth, _, rows, *_ in per_ep:
            n = int(agent_mask(truth, ep.path, spec.split, spec.split_seed)[rows].sum())
            total += n * len(preds)
    if total == 0:
        raise BenchmarkInputError(
            f"no samples in the {spec.split!r} split: the files are too short for "
            f"{spec.history_s:g} s history + {spec.horizon_s:g} s horizon, or (split by "
            f"episode for simulated data) every file falls in another split; use more files "
            f"or --split all")
    done = 0
    for _, preds, per_ep in plan:
        n_nb = max((p.n_neighbors for p in preds), default=0)
        if spec.fit:
            preds, info = _fit(preds, per_ep, spec, n_nb)
            fitted.update(info)
        sums = {p.name: {"all": None} for p in preds}
        latency = {p.name: 0.0 for p in preds}
        # predict's time on each full batch of spec.batch samples: the per-sample mean also
        # counts each episode's last, partial batch
        batch_ms = {p.name: [] for p in preds}
        n_modes = {p.name: 0 for p in preds}
        dt_used = {}
        for ep, truth, inputs, rows, cols, h, f in per_ep:
            keep = agent_mask(truth, ep.path, spec.split, spec.split_seed)[rows]
            rows, cols = rows[keep], cols[keep]
            dt_used[ep.path] = truth.dt_s
            for lo in range(0, len(rows), spec.batch):
                r, c = rows[lo:lo + spec.batch], cols[lo:lo + spec.batch]
                hist = history_from_tracks(inputs, r, c, h, n_nb)
                fut = future_from_tracks(truth, r, c, f)
                keys = _group_keys(spec, ep, truth, inputs, r, c, h, f)
                for p in preds:
                    t0 = time.perf_counter()
                    pred = p.predict(hist, f)
                    took_s = time.perf_counter() - t0
                    latency[p.name] += took_s
                    if len(r) == spec.batch:
                        batch_ms[p.name].append(1000.0 * took_s)
                    if not isinstance(pred, Prediction) or pred.xy.shape[0] != len(r) or \
                            pred.horizon_steps != f:
                        raise RuntimeError(f"predictor {p.name} returned a prediction of the "
                                           f"wrong shape for {len(r)} samples x {f} steps")
                    n_modes[p.name] = max(n_modes[p.name], min(pred.n_modes, spec.k))
                    d_top, d_all, nll = score(pred, fut, spec.k, spec.miss_threshold_m)
                    table = sums[p.name]
                    if table["all"] is None:
                        table["all"] = Sums(f)
                    table["all"].add(d_top, d_all, spec.miss_threshold_m, nll)
                    if keys:
                        karr = np.array(keys)
                        for key in np.unique(karr):
                            m = karr == key
                            table.setdefault(key, Sums(f)).add(
                                d_top[m], d_all[m], spec.miss_threshold_m,
                                None if nll is None else nll[m])
                    done += len(r)
                    if progress:
                        progress(done, total)
        dt_any = next(iter(dt_used.values())) if dt_used else 0.1
        for p in preds:
            table = sums[p.name]
            s_all = table["all"] or Sums(per_ep[0][6])
            lat = 1000.0 * latency[p.name] / max(s_all.n, 1)
            extra = {"modes": n_modes[p.name], "dt_s": dt_any,
                     "batch_ms": summary_ms(batch_ms[p.name], "batches")}
            results[p.name] = s_all.result(dt_any, lat, extra)
            curves[p.name] = {"dt_s": dt_any, "mean_m": s_all.curve()[0].round(4).tolist(),
                              "rmse_m": s_all.curve()[1].round(4).tolist()}
            for key, s in table.items():
                if key != "all":
                    by.setdefault(key, {})[p.name] = s.result(dt_any, None, {})
    if spec.by == "maneuver":
        by = {m: by[m] for m in MANEUVERS if m in by}
    protocol = {
        "history_s": spec.history_s, "horizon_s": spec.horizon_s, "stride_s": spec.stride_s,
        "k": spec.k, "split": spec.split, "split_seed": spec.split_seed,
        "miss_threshold_m": spec.miss_threshold_m, "batch": spec.batch,
        "files": [_file_info(ep, spec.split_seed) for ep in episodes],
        "fitted_on": "train split" if spec.fit else None,
    }
    if spec.by == "maneuver":
        protocol["maneuver_thresholds"] = {
            "lateral_m": LATERAL_M, "accel_mps2": ACCEL_MPS2, "begun_s": BEGUN_S,
            "begun_lateral_m": BEGUN_LATERAL_M, "begun_accel_mps2": BEGUN_ACCEL_MPS2}
    out = {"protocol": protocol, "predictors": results}
    if fitted:
        out["fitted"] = fitted
    if spec.by:
        out["by"] = {spec.by: by}
    out["curves"] = curves
    return out


# ---- presenting ---------------------------------------------------------------------------------


def format_table(result: dict) -> str:
    """The human-readable tables: one row per predictor, then one table per group."""
    proto = result["protocol"]
    k = proto["k"]
    names = list(result["predictors"])
    seconds = sorted({int(s) for r in result["predictors"].values() for s in r["rmse_at"]})
    head = (f"{'predictor':<10} {'samples':>8} {'ADE':>7} {'FDE':>7} {f'minADE_{k}':>9} "
            f"{f'minFDE_{k}':>9} {'miss':>6} "
            + " ".join(f"{f'RMSE@{s}s':>8}" for s in seconds) + f" {'ms/sample':>10}")

    def fmt(v, w, d=3):
        return f"{'-':>{w}}" if v is None else f"{v:>{w}.{d}f}"

    def rows(table: dict) -> list[str]:
        out = []
        for name in names:
            r = table.get(name)
            if r is None:
                continue
            lat = r.get("latency_ms_per_sample")
            out.append(
                f"{name:<10} {r['samples']:>8} {fmt(r['ade'], 7)} {fmt(r['fde'], 7)} "
                f"{fmt(r['min_ade_k'], 9)} {fmt(r['min_fde_k'], 9)} {fmt(r['miss_rate'], 6)} "
                + " ".join(fmt(r["rmse_at"].get(str(s)), 8, 2) for s in seconds)
                + (f" {fmt(lat, 10, 4)}" if lat is not None else ""))
        return out

    n = max((r["samples"] for r in result["predictors"].values()), default=0)
    lines = [f"benchmark predict: {n:,} samples, split {proto['split']}, history "
             f"{proto['history_s']:g} s, horizon {proto['horizon_s']:g} s, stride "
             f"{proto['stride_s']:g} s, k {k}, miss > {proto['miss_threshold_m']:g} m; "
             f"metres", head, *rows(result["predictors"])]
    for name, info in result.get("fitted", {}).items():
        params = info["params"]
        shown = ", ".join(f"{key}={v:.3g}" for key, v in params.items()
                          if isinstance(v, float))
        lines.append(f"  {name} fitted on {info['samples']:,} train-split samples"
                     + (f": {shown}" if shown else " (see the JSON for its parameters)"))
    for name, r in result["predictors"].items():
        b = r.get("batch_ms")
        if b:
            lines.append(f"  {name}: {b['median']:.2f} ms per batch of {proto['batch']} (median; "
                         f"p95 {b['p95']:.2f} ms; {b['batches']:,} full batches)")
    for what, groups in result.get("by", {}).items():
        for key, table in groups.items():
            n = max(r["samples"] for r in table.values())
            lines += ["", f"{what} = {key} ({n:,} samples)", head, *rows(table)]
    return "\n".join(lines)


def plot_curves(result: dict, path: str | os.PathLike) -> None:
    """Error against horizon per predictor (mode-1 mean displacement and RMSE), a PNG written
    atomically (matplotlib, Agg backend)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    proto = result["protocol"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for name, c in result["curves"].items():
        t = c["dt_s"] * np.arange(1, len(c["mean_m"]) + 1)
        axes[0].plot(t, c["mean_m"], label=name)
        axes[1].plot(t, c["rmse_m"], label=name)
    for ax, title in zip(axes, ("mean displacement of mode 1", "RMSE of mode 1")):
        ax.set_xlabel("time after the prediction, s")
        ax.set_ylabel("m")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    files = ", ".join(Path(f["path"]).name for f in proto["files"])
    if len(files) > 90:
        files = f"{len(proto['files'])} files"
    fig.suptitle(f"{files} | split {proto['split']}, history {proto['history_s']:g} s",
                 fontsize=9)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
