"""Forecast metrics: small pure functions over arrays, metres.

Shapes: pred_xy (S, K, F, 2) or, for single-trajectory metrics, (S, F, 2); gt_xy (S, F, 2);
prob (S, K). S samples, K modes, F future steps, world-frame metres.

Conventions (shared/specs/tracks.md):
- "mode 1" is the most probable mode (argmax of prob, the lowest index among ties);
  ade / fde / rmse are measured on it.
- min-of-K: the best mode is chosen per sample *and per metric*: min_ade_k takes the mode
  with the least average error, min_fde_k the mode with the least final error (as in the
  Argoverse and nuScenes leaderboards), so the two may pick different modes. All K modes
  count, whatever their probabilities; a predictor with fewer than K modes is scored on the
  ones it has.
- miss: min_fde_k > miss_threshold_m (2.0 m by default).
- rmse_at(t): sqrt(mean over samples of the squared displacement of mode 1 at t), the
  NGSIM literature's RMSE (e.g. CS-LSTM, Deo & Trivedi 2018).
"""

from __future__ import annotations

import numpy as np

MISS_THRESHOLD_M = 2.0


def displacement(pred_xy: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """(S, F) or (S, K, F) m, Euclidean distance at each step. pred_xy (S, F, 2) or
    (S, K, F, 2); gt_xy (S, F, 2)."""
    gt = gt_xy if pred_xy.ndim == 3 else gt_xy[:, None]
    return np.hypot(pred_xy[..., 0] - gt[..., 0], pred_xy[..., 1] - gt[..., 1])


def top_mode(pred_xy: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """(S, F, 2), the most probable mode of (S, K, F, 2) given prob (S, K)."""
    best = np.argmax(prob, axis=1)
    return pred_xy[np.arange(len(pred_xy)), best]


def ade(pred_xy: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """(S,) m, average displacement over the F steps. pred_xy, gt_xy (S, F, 2)."""
    return displacement(pred_xy, gt_xy).mean(axis=-1)


def fde(pred_xy: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """(S,) m, displacement at the last step. pred_xy, gt_xy (S, F, 2)."""
    return displacement(pred_xy[:, -1:], gt_xy[:, -1:])[:, 0]


def min_ade_k(pred_xy: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """(S,) m, the least ADE over the K modes. pred_xy (S, K, F, 2), gt_xy (S, F, 2)."""
    return displacement(pred_xy, gt_xy).mean(axis=-1).min(axis=1)


def min_fde_k(pred_xy: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """(S,) m, the least FDE over the K modes. pred_xy (S, K, F, 2), gt_xy (S, F, 2)."""
    return displacement(pred_xy[:, :, -1:], gt_xy[:, -1:])[..., 0].min(axis=1)


def miss(pred_xy: np.ndarray, gt_xy: np.ndarray,
         miss_threshold_m: float = MISS_THRESHOLD_M) -> np.ndarray:
    """(S,) bool, no mode ends within miss_threshold_m of the truth. (S, K, F, 2), (S, F, 2)."""
    return min_fde_k(pred_xy, gt_xy) > miss_threshold_m


def whole_second_steps(horizon_steps: int, dt_s: float) -> dict[int, int]:
    """{second: step index into F} for each whole second within the horizon
    (step index f is the prediction (f + 1) * dt_s after the prediction time)."""
    out = {}
    n = int(np.floor(horizon_steps * dt_s + 1e-9))
    for sec in range(1, n + 1):
        f = int(round(sec / dt_s)) - 1
        if f < horizon_steps and abs((f + 1) * dt_s - sec) < 1e-6:
            out[sec] = f
    return out


def squared_error_at(pred_xy: np.ndarray, gt_xy: np.ndarray, steps: dict[int, int]):
    """{second: (S,) m^2}, squared displacement of a single trajectory (S, F, 2) at each
    whole second (steps from whole_second_steps). Kept per sample so sums can be pooled
    over batches before the root is taken."""
    d = displacement(pred_xy, gt_xy)
    return {sec: d[:, f] ** 2 for sec, f in steps.items()}


def rmse_at(pred_xy: np.ndarray, gt_xy: np.ndarray, dt_s: float) -> dict[int, float]:
    """{second: m}, RMSE of the displacement of (S, F, 2) against (S, F, 2) at each whole
    second of the horizon; NaN when S = 0."""
    steps = whole_second_steps(gt_xy.shape[1], dt_s)
    sq = squared_error_at(pred_xy, gt_xy, steps)
    return {sec: float(np.sqrt(v.mean())) if len(v) else float("nan") for sec, v in sq.items()}


def gaussian_nll(pred_xy: np.ndarray, sigma_m: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """(S,) nats per step, negative log-likelihood of the truth under independent normals
    N(pred, sigma^2) on x and y, averaged over the F steps. (S, F, 2) each."""
    z2 = ((gt_xy - pred_xy) / sigma_m) ** 2
    nll = 0.5 * z2 + np.log(sigma_m) + 0.5 * np.log(2 * np.pi)
    return nll.sum(-1).mean(-1)
