"""Training the RNN forecaster: samples from track files, the MTP loss, AdamW, early stopping.

    train_model(train_tracks, val_tracks, model_config, train_config, out_path)

Seeded and deterministic on the CPU (same data, seed and thread count -> the same
checkpoint). Logs per epoch: training loss, validation ADE / FDE / minFDE_K / miss rate, the
learning rate, the gradient norm, and the gradient reaching the first vs the last history step
(with a vanilla RNN over long histories it vanishes; with a GRU or LSTM it does not).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from predictor.rnn import (
    Features,
    RnnConfig,
    RnnForecaster,
    load_checkpoint,
    make_features,
    save_checkpoint,
    to_agent,
)
from sim.forecast import future_from_tracks, history_from_tracks, sample_index


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings."""

    epochs: int = 15
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    clip_norm: float = 5.0
    patience: int = 6  # epochs without validation improvement before stopping
    stride_s: float = 0.5  # spacing of training samples along each track
    val_stride_s: float = 1.0
    seed: int = 0
    threads: int = 1
    max_train_samples: int = 400_000
    max_val_samples: int = 30_000  # a fixed random subset keeps validation cheap
    # each training sample's regression loss weighs 1 + hard_weight x the displacement error
    # of constant velocity at the horizon (m): where that fails (brakes, lane changes,
    # speeding up) a sample counts more; 0: all alike. The shipped sim model: 0.5
    hard_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.threads < 1:
            raise ValueError("epochs, batch_size, patience and threads must be >= 1")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.clip_norm > 0):
            raise ValueError("lr and clip_norm must be positive, weight_decay >= 0")
        if not (self.stride_s > 0 and self.val_stride_s > 0):
            raise ValueError("strides must be positive")
        if not (math.isfinite(self.hard_weight) and self.hard_weight >= 0):
            raise ValueError("hard_weight must be >= 0")


@dataclass(frozen=True)
class Samples:
    """Model-ready samples: agent-centric Features and the true future (S, F, 2) in the agent
    frame, float32."""

    feats: Features
    future: np.ndarray

    def __len__(self) -> int:
        return len(self.future)


def build_samples(episodes: Sequence, config: RnnConfig, stride_s: float,
                  max_samples: int | None = None, seed: int = 0,
                  masks: Sequence[np.ndarray] | None = None) -> Samples:
    """Samples (agent, time) of every episode by the benchmark protocol: present without
    gaps over the history and the horizon, every stride_s seconds. An episode is a Tracks,
    or a predictor.benchmark.Episode whose `inputs` (e.g. causally smoothed NGSIM) give the
    histories and whose `truth` gives the futures. masks[i] (N_i,) bool picks the target
    agents of episode i (all other agents still serve as neighbours)."""
    parts: list[tuple[Features, np.ndarray]] = []
    picked = 0  # target agents the masks leave
    for i, ep in enumerate(episodes):
        tr = getattr(ep, "truth", ep)
        inputs = getattr(ep, "inputs", ep)
        dt = float(tr.dt_s)
        if abs(dt - config.dt_s) > 1e-6:
            raise ValueError(f"track step {dt} s differs from the model's {config.dt_s} s")
        stride = max(1, int(round(stride_s / dt)))
        present = tr.present
        if masks is not None:
            present = present & np.asarray(masks[i], bool)[:, None]
            picked += int(np.count_nonzero(masks[i]))
        rows, cols = sample_index(present, config.history_steps, config.horizon_steps,
                                  stride)
        if len(rows) == 0:
            continue
        hist = history_from_tracks(inputs, rows, cols, config.history_steps,
                                   config.n_neighbors)
        fut = future_from_tracks(tr, rows, cols, config.horizon_steps)
        f = make_features(hist, config)
        parts.append((f, to_agent(fut, f.origin, f.rot[:, 0], f.rot[:, 1]).astype(np.float32)))
    if not parts:
        if masks is not None and picked == 0:
            raise ValueError("no samples: no file has agents in this split (the split is by "
                             "episode for simulated data, by vehicle for NGSIM); give more "
                             "files")
        raise ValueError("no samples: tracks too short for the history and horizon")
    feats = Features(*[np.concatenate([getattr(p[0], name) for p in parts])
                       for name in Features.__dataclass_fields__])
    future = np.concatenate([p[1] for p in parts])
    if max_samples is not None and len(future) > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(len(future), max_samples,
                                                          replace=False))
        feats = Features(*[getattr(feats, name)[keep]
                           for name in Features.__dataclass_fields__])
        future = future[keep]
    return Samples(feats, future)


def _tensors(s: Samples, idx: np.ndarray):
    f = s.feats
    return (torch.from_numpy(f.target[idx]), torch.from_numpy(f.neighbors[idx]),
            torch.from_numpy(f.nb_mask[idx]), torch.from_numpy(f.cv[idx]),
            torch.from_numpy(s.future[idx]))


def mtp_loss(xy, log_prob, sigma, gt, weight=None):
    """Winner-takes-all mixture loss. xy, sigma (B, K, F, 2), log_prob (B, K), gt (B, F, 2),
    weight (B,) or None (all alike).

    The mode closest to the truth (mean displacement) is the winner: its Gaussian negative
    log-likelihood (per step and axis, averaged over the batch with the weights) plus the
    cross-entropy of choosing it (a plain batch mean: weights there would skew the mode
    probabilities the safety layer acts on). Returns (loss, winner index (B,))."""
    err = torch.linalg.vector_norm(xy - gt.unsqueeze(1), dim=-1)  # (B, K, F)
    best = err.mean(-1).argmin(dim=1)
    rows = torch.arange(len(best))
    mu, sg = xy[rows, best], sigma[rows, best]
    nll = (torch.log(sg) + 0.5 * ((gt - mu) / sg) ** 2).mean(dim=(-1, -2))
    ce = -log_prob[rows, best]
    if weight is None:
        return (nll + ce).mean(), best
    return (nll * weight).sum() / weight.sum() + ce.mean(), best


def hard_weights(gt, cv, hard_weight: float):
    """(B,) 1 + hard_weight x |gt - cv| at the horizon, m: gt, cv (B, F, 2) the true future
    and constant velocity's (TrainConfig.hard_weight)."""
    return 1.0 + hard_weight * torch.linalg.vector_norm(gt[:, -1] - cv[:, -1], dim=-1)


@torch.no_grad()
def evaluate(model: RnnForecaster, s: Samples, batch_size: int = 4096,
             miss_m: float = 2.0) -> dict:
    """Validation metrics in metres (mode 1 = most probable): ade, fde, min_ade_k,
    min_fde_k, miss_rate, loss."""
    model.eval()
    tot = {"ade": 0.0, "fde": 0.0, "min_ade_k": 0.0, "min_fde_k": 0.0, "miss_rate": 0.0,
           "loss": 0.0}
    n = len(s)
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, min(n, lo + batch_size))
        target, nb, mask, cv, gt = _tensors(s, idx)
        xy, log_prob, sigma = model(target, nb, mask, cv)
        loss, _ = mtp_loss(xy, log_prob, sigma, gt)
        err = torch.linalg.vector_norm(xy - gt.unsqueeze(1), dim=-1)  # (B, K, F)
        top = log_prob.argmax(1)
        rows = torch.arange(len(top))
        e1 = err[rows, top]
        b = len(idx)
        tot["ade"] += float(e1.mean(-1).sum())
        tot["fde"] += float(e1[:, -1].sum())
        tot["min_ade_k"] += float(err.mean(-1).min(1).values.sum())
        min_fde = err[..., -1].min(1).values
        tot["min_fde_k"] += float(min_fde.sum())
        tot["miss_rate"] += float((min_fde > miss_m).sum())
        tot["loss"] += float(loss) * b
    return {k: v / max(n, 1) for k, v in tot.items()}


def first_last_grad_ratio(model: RnnForecaster, s: Samples, n: int = 512) -> float:
    """Mean |dLoss/dInput| at the first history step over that at the last (valid samples
    only): how much gradient reaches the start of the history."""
    model.train()
    idx = np.arange(min(n, len(s)))
    target, nb, mask, cv, gt = _tensors(s, idx)
    target = target.clone().requires_grad_(True)
    xy, log_prob, sigma = model(target, nb, mask, cv)
    loss, _ = mtp_loss(xy, log_prob, sigma, gt)
    model.zero_grad(set_to_none=True)
    loss.backward()
    g = target.grad.abs().sum(-1)  # (B, H)
    valid = target[..., -1].detach() > 0
    first = g[:, 0][valid[:, 0]]
    last = g[:, -1]
    model.zero_grad(set_to_none=True)
    if len(first) == 0 or float(last.mean()) == 0.0:
        return float("nan")
    return float(first.mean() / last.mean())


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    lr: float
    grad_norm: float
    grad_first_last: float
    val: dict
    seconds: float


def train_model(train: Samples, val: Samples, model_config: RnnConfig, cfg: TrainConfig,
                out_path: str, meta: dict | None = None, resume: bool = False,
                on_epoch: Callable[[EpochLog], None] | None = None,
                on_batch: Callable[[int, int, float], None] | None = None) -> list[EpochLog]:
    """Train and save the best checkpoint (by validation fde + min_fde_k) to out_path, with
    the training state in out_path + '.resume' for --resume. Returns the epoch logs."""
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    model = RnnForecaster(model_config)
    model.set_normalisation(train.feats)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs,
                                                steps_per_epoch=steps_per_epoch,
                                                pct_start=0.15)
    logs: list[EpochLog] = []
    best, since_best, start = math.inf, 0, 0
    resume_path = out_path + ".resume"
    if resume:
        state_model, state_meta, extra = load_checkpoint(resume_path)
        if asdict(state_model.config) != asdict(model_config):
            raise ValueError(f"{resume_path}: model settings differ from this run's")
        model.load_state_dict(state_model.state_dict())
        try:
            opt.load_state_dict(extra["optimizer"])
            sched.load_state_dict(extra["scheduler"])
            start = int(state_meta["epoch"]) + 1
            best, since_best = float(state_meta["best"]), int(state_meta["since_best"])
            logs = [EpochLog(**e) for e in state_meta.get("logs", [])]
        except KeyError as exc:
            raise ValueError(f"{resume_path}: field {exc}: missing (not a training state "
                             "that train wrote)") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{resume_path}: training state unreadable ({exc})") from None
    meta = dict(meta or {})
    for epoch in range(start, cfg.epochs):
        if since_best >= cfg.patience:
            break
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 1000 + epoch)
        model.train()
        order = np.random.default_rng(cfg.seed * 1000 + epoch).permutation(len(train))
        loss_sum, grad_sum, n_batches = 0.0, 0.0, 0
        for b in range(steps_per_epoch):
            idx = np.sort(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
            target, nb, mask, cv, gt = _tensors(train, idx)
            xy, log_prob, sigma = model(target, nb, mask, cv)
            weight = hard_weights(gt, cv, cfg.hard_weight) if cfg.hard_weight else None
            loss, _ = mtp_loss(xy, log_prob, sigma, gt, weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm))
            opt.step()
            sched.step()
            loss_value = float(loss.detach())
            loss_sum += loss_value
            grad_sum += grad
            n_batches += 1
            if on_batch:
                on_batch(b + 1, steps_per_epoch, loss_value)
        ratio = first_last_grad_ratio(model, val)
        metrics = evaluate(model, val)
        log = EpochLog(epoch=epoch, train_loss=loss_sum / n_batches,
                       lr=float(opt.param_groups[0]["lr"]), grad_norm=grad_sum / n_batches,
                       grad_first_last=ratio, val=metrics, seconds=time.perf_counter() - t0)
        logs.append(log)
        score = metrics["fde"] + metrics["min_fde_k"]
        if score < best - 1e-4:
            best, since_best = score, 0
            save_checkpoint(out_path, model, {**meta, "epoch": epoch, "val": metrics,
                                              "train_config": asdict(cfg)})
        else:
            since_best += 1
        save_checkpoint(resume_path, model,
                        {"epoch": epoch, "best": best, "since_best": since_best,
                         "logs": [asdict(e) for e in logs]},
                        extra={"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
        if on_epoch:
            on_epoch(log)
    return logs


def protocol_config(history_s: float, horizon_s: float, **fields) -> RnnConfig:
    """The RnnConfig for a protocol given in seconds (steps of its dt_s), built in one go so
    that fields bounded by the horizon (knots) are checked against this one."""
    dt_s = fields.get("dt_s", RnnConfig.dt_s)
    return RnnConfig(history_steps=int(round(history_s / dt_s)),
                     horizon_steps=int(round(horizon_s / dt_s)), **fields)
