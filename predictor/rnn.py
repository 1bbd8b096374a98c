"""The recurrent forecaster: a vanilla RNN / GRU / LSTM encoder with social context and K modes.

Inputs are agent-centric: the target's past (and its neighbours' recent states) relative to
its position at the prediction time, rotated so its heading points along +x. The model
predicts K futures as residuals over a constant-velocity extrapolation, with mode
probabilities and a per-step standard deviation. torch is imported only here and in
predictor/train.py.

A checkpoint is a dict {"format", "config" (JSON), "state_dict", "meta" (JSON)} saved with
torch.save and loaded with torch.load(weights_only=True): no code runs on load.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sim.forecast import History, Prediction

CHECKPOINT_FORMAT = "drivecast-rnn/1"
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
SHIPPED = ("sim", "ngsim")
CELLS = ("rnn", "gru", "lstm")
TARGET_FEATURES = 5  # x, y, vx, vy (agent frame), valid
NEIGHBOR_FEATURES = 12  # x, y at now, -0.5 s, -1 s; vx, vy now; length, width; valids
NB_LAGS_S = (0.0, 0.5, 1.0)
MIN_SIGMA_M = 0.05
# smallest input standard deviation (in the feature's unit: m, m/s, or a 0/1 flag): a feature
# (nearly) constant in the training data (NGSIM's vehicle lengths are all 4.5 m) must not turn
# an ordinary value elsewhere (a 12 m truck in a simulation) into thousands of sigmas
MIN_INPUT_STD = 0.1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the field."""


CONFIG_INT_RANGES = {"hidden": 4096, "layers": 8, "encoder_stride": 100, "history_steps": 1000,
                     "horizon_steps": 1000, "n_modes": 64, "n_neighbors": 64,
                     "social_hidden": 4096, "knots": 1000}  # the largest each may be


@dataclass(frozen=True)
class RnnConfig:
    """Architecture and the protocol it was trained for (steps of dt_s)."""

    cell: str = "gru"
    hidden: int = 64
    layers: int = 1
    encoder_stride: int = 4  # the encoder reads every n-th history step (ending now)
    history_steps: int = 20
    horizon_steps: int = 30
    dt_s: float = 0.1
    n_modes: int = 6
    n_neighbors: int = 8
    social_hidden: int = 64
    dropout: float = 0.0
    knots: int = 0  # outputs per mode and axis, linearly interpolated to the horizon's steps;
    # 0: one per step (checkpoints from before knots existed)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for name, top in CONFIG_INT_RANGES.items():
            v = getattr(self, name)
            lo = 0 if name in ("n_neighbors", "knots") else 1
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= top:
                raise ValueError(f"{name} must be an integer in {lo}..{top}, got {v!r}")
        for name, lo, hi in (("dt_s", 1e-3, 10.0), ("dropout", 0.0, 0.999)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"{name} must be a number in {lo:g}..{hi:g}, got {v!r}")
        if self.knots == 1 or self.knots > self.horizon_steps:
            raise ValueError(f"knots must be 0 or 2..horizon_steps ({self.horizon_steps}), "
                             f"got {self.knots}")

    @property
    def n_knots(self) -> int:
        """Network outputs per mode and axis."""
        return self.knots or self.horizon_steps

    @property
    def nb_lag_steps(self) -> tuple[int, ...]:
        return tuple(min(self.history_steps, int(round(lag / self.dt_s))) for lag in NB_LAGS_S)


# ---- features (numpy) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Features:
    """Agent-centric model inputs for S samples, float32.

    target: (S, H, TARGET_FEATURES); neighbors: (S, M, NEIGHBOR_FEATURES); nb_mask: (S, M)
    bool; origin: (S, 2) m world position now; rot: (S, 2) cos, sin of the frame's heading;
    cv: (S, F, 2) m constant-velocity extrapolation in the agent frame (a transposed view of
    an (S, 2, F) array).
    """

    target: np.ndarray
    neighbors: np.ndarray
    nb_mask: np.ndarray
    origin: np.ndarray
    rot: np.ndarray
    cv: np.ndarray


def frame_heading(history: History) -> np.ndarray:
    """(S,) heading of each sample's agent frame, rad, float64 whatever the History's dtype:
    the direction of motion over the last 0.5 s when the agent moved more than 1 m, else
    its recorded heading now."""
    xy = history.xy
    back = min(history.history_steps, max(1, int(round(0.5 / history.dt_s))))
    d = xy[:, -1].astype(np.float64) - xy[:, -1 - back]
    ok = history.valid[:, -1 - back] & (np.hypot(d[:, 0], d[:, 1]) > 1.0)
    return np.where(ok, np.arctan2(d[:, 1], d[:, 0]), history.heading[:, -1])


def to_agent(xy: np.ndarray, origin: np.ndarray, cos: np.ndarray, sin: np.ndarray,
             out: np.ndarray | None = None) -> np.ndarray:
    """World points (S, ..., 2) into each sample's agent frame, computed in float64 and
    written into `out` (S, ..., 2) when given (cast to its dtype), else a new float64 array."""
    shape = (len(origin),) + (1,) * (xy.ndim - 2)
    dx = xy[..., 0] - origin[:, 0].reshape(shape)
    dy = xy[..., 1] - origin[:, 1].reshape(shape)
    return _rotate(dx, dy, cos.reshape(shape), sin.reshape(shape), out)


def rotate_to_agent(v: np.ndarray, cos: np.ndarray, sin: np.ndarray,
                    out: np.ndarray | None = None) -> np.ndarray:
    """World vectors (S, ..., 2) into each sample's agent frame (no translation); `out` as
    in to_agent."""
    shape = (len(cos),) + (1,) * (v.ndim - 2)
    return _rotate(v[..., 0], v[..., 1], cos.reshape(shape), sin.reshape(shape), out)


def _rotate(x, y, c, s, out):
    """(c x + s y, -s x + c y) for x, y (S, ...) and c, s (S, 1, ...) broadcasting along
    them, written into out[..., 0] and out[..., 1] (out (S, ..., 2), cast to its dtype; a
    new float64 array when None). Pass float64 c, s: the arithmetic takes the widest input
    dtype. One pass per component, no stacked temporaries (this runs on every
    prediction)."""
    if out is None:
        out = np.empty(x.shape + (2,))  # c, s broadcast along x's trailing axes
    np.add(c * x, s * y, out=out[..., 0], casting="same_kind")
    np.add(-s * x, c * y, out=out[..., 1], casting="same_kind")
    return out


def to_world(xy: np.ndarray, origin: np.ndarray, rot: np.ndarray,
             out: np.ndarray | None = None) -> np.ndarray:
    """Agent-frame points (S, ..., 2) back to the world frame, m: a new float64 array, or
    written into `out` (S, ..., 2) float64."""
    shape = (len(origin),) + (1,) * (xy.ndim - 2)
    c, s = rot[:, 0].reshape(shape), rot[:, 1].reshape(shape)
    out = _rotate(xy[..., 0], xy[..., 1], c, -s, out)  # the inverse rotation
    out[..., 0] += origin[:, 0].reshape(shape)
    out[..., 1] += origin[:, 1].reshape(shape)
    return out


def sigma_to_world(sigma: np.ndarray, rot: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Agent-frame (along, across) standard deviations (S, K, F, 2) to world x, y ones, m,
    computed in float64 and written into `out` (S, K, F, 2) float64 (the covariance is
    dropped: independent axes, as Prediction.sigma_m holds them)."""
    c2 = (rot[:, 0] ** 2)[:, None, None]
    s2 = (rot[:, 1] ** 2)[:, None, None]
    var_a = np.square(sigma[..., 0], dtype=np.float64)
    var_c = np.square(sigma[..., 1], dtype=np.float64)
    sx, sy = out[..., 0], out[..., 1]  # in place
    np.multiply(c2, var_a, out=sx)
    sx += s2 * var_c
    np.sqrt(sx, out=sx)
    np.multiply(s2, var_a, out=sy)
    sy += c2 * var_c
    np.sqrt(sy, out=sy)
    return out


def make_features(history: History, config: RnnConfig) -> Features:
    """Agent-centric features of a History, cut or padded to the config's history length."""
    h_model = config.history_steps + 1
    s = history.n_samples
    xy, vxy, valid = history.xy, history.vxy, history.valid
    h_in = valid.shape[1]
    if h_in >= h_model:
        xy, vxy, valid = xy[:, -h_model:], vxy[:, -h_model:], valid[:, -h_model:]
    else:
        pad = h_model - h_in
        xy = np.concatenate([np.full((s, pad, 2), np.nan), xy], axis=1)
        vxy = np.concatenate([np.full((s, pad, 2), np.nan), vxy], axis=1)
        valid = np.concatenate([np.zeros((s, pad), bool), valid], axis=1)
    origin = history.xy[:, -1].astype(np.float64)
    heading = frame_heading(history)
    rot = np.empty((s, 2))
    cos, sin = np.cos(heading, out=rot[:, 0]), np.sin(heading, out=rot[:, 1])
    # computed in float64, stored as float32 (each write casts)
    target = np.empty((s, h_model, TARGET_FEATURES), np.float32)
    to_agent(xy, origin, cos, sin, out=target[..., 0:2])
    # the last velocity once more in float64: cv is computed from it before the cast
    v_now = rotate_to_agent(vxy[:, -1:], cos, sin)[:, 0]  # (S, 2)
    rotate_to_agent(vxy, cos, sin, out=target[..., 2:4])
    target[..., 4] = valid
    target[~valid] = 0.0
    # constant velocity from the last velocity, computed as (S, 2, F) (the products run along
    # F, 4x faster than along an axis of two) and kept as its (S, F, 2) transposed view
    steps = np.arange(1, config.horizon_steps + 1) * history.dt_s
    cv = np.empty((s, 2, config.horizon_steps), np.float32)
    np.multiply(v_now[:, :, None], steps[None, None, :], out=cv, casting="same_kind")
    cv = cv.transpose(0, 2, 1)
    m = config.n_neighbors
    neighbors = np.zeros((s, m, NEIGHBOR_FEATURES), np.float32)
    nb_mask = np.zeros((s, m), bool)
    m_in = min(m, history.n_neighbors)
    if m_in:
        lags = [-1 - min(lag, h_in - 1) for lag in config.nb_lag_steps]  # now and two past
        ok = history.nb_valid[:, :m_in][:, :, lags]  # (S, M, 3)
        nb = neighbors[:, :m_in]
        p = nb[..., 0:6].reshape(s, m_in, 3, 2)  # a view: positions now and at the lags
        to_agent(history.nb_xy[:, :m_in][:, :, lags], origin, cos, sin, out=p)
        p[~ok] = 0.0
        rotate_to_agent(history.nb_vxy[:, :m_in, -1], cos, sin, out=nb[..., 6:8])
        for i, size in ((8, history.nb_length), (9, history.nb_width)):  # NaN (no slot) -> 0
            size = size[:, :m_in]
            np.copyto(nb[..., i], size, where=~np.isnan(size), casting="same_kind")
        nb[..., 10:12] = ok[:, :, 1:]
        nb_mask[:, :m_in] = ok[:, :, 0]
        neighbors[~nb_mask] = 0.0  # absent now: every feature 0
    return Features(target=target, neighbors=neighbors, nb_mask=nb_mask, origin=origin,
                    rot=rot, cv=cv)


def knot_weights(n_knots: int, n_steps: int) -> torch.Tensor:
    """(n_steps, n_knots) linear interpolation from knots evenly spaced between the first and
    the last horizon step (each row: two neighbouring weights summing to 1)."""
    at = torch.linspace(0, n_knots - 1, n_steps, dtype=torch.float64)
    lo = at.floor().clamp(max=n_knots - 2).long()
    frac = at - lo
    w = torch.zeros(n_steps, n_knots, dtype=torch.float64)
    w[torch.arange(n_steps), lo] = 1 - frac
    w[torch.arange(n_steps), lo + 1] = frac
    return w.float()


# ---- the model --------------------------------------------------------------------------------


def _layers(x: torch.Tensor, *layers: nn.Module) -> torch.Tensor:
    """x through the layers in turn, Linear, ReLU and Dropout by their functional forms: the
    arithmetic (and the random draws) of calling each layer, without nn.Module's per-call
    cost, which is a large part of this small network's time at the batch sizes the
    simulator asks for. Any other layer (a subclass too: it may override forward) is
    called."""
    for layer in layers:
        if type(layer) is nn.Linear:
            x = nn.functional.linear(x, layer.weight, layer.bias)
        elif type(layer) is nn.ReLU:
            x = torch.relu(x)
        elif type(layer) is nn.Dropout:
            x = nn.functional.dropout(x, layer.p, layer.training, layer.inplace)
        else:
            x = layer(x)
    return x


class RnnForecaster(nn.Module):
    """Encoder (RNN/GRU/LSTM) over the target's past + pooled neighbour encoding -> K modes.

    forward(target (B, H, 5), neighbors (B, M, 12), nb_mask (B, M), cv (B, F, 2)) returns
    xy (B, K, F, 2) agent-frame metres, log_prob (B, K), sigma (B, K, F, 2) metres. The same
    forward runs in training and evaluation. Normalisation statistics are buffers, so they
    travel in the state_dict.
    """

    def __init__(self, config: RnnConfig):
        super().__init__()
        self.config = config
        c = config
        rnn_cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[c.cell]
        self.input_proj = nn.Linear(TARGET_FEATURES, c.hidden // 2)
        self.encoder = rnn_cls(c.hidden // 2, c.hidden, num_layers=c.layers, batch_first=True,
                               dropout=c.dropout if c.layers > 1 else 0.0)
        self.nb_encoder = nn.Sequential(
            nn.Linear(NEIGHBOR_FEATURES, c.social_hidden), nn.ReLU(),
            nn.Linear(c.social_hidden, c.social_hidden), nn.ReLU())
        self.nb_query = nn.Linear(c.hidden, c.social_hidden)
        joint = c.hidden + 2 * c.social_hidden
        self.trunk = nn.Sequential(nn.Linear(joint, 2 * c.hidden), nn.ReLU(),
                                   nn.Dropout(c.dropout),
                                   nn.Linear(2 * c.hidden, 2 * c.hidden), nn.ReLU())
        self.head_xy = nn.Linear(2 * c.hidden, c.n_modes * 2 * c.n_knots)
        self.head_sigma = nn.Linear(2 * c.hidden, c.n_modes * 2 * c.n_knots)
        self.head_logit = nn.Linear(2 * c.hidden, c.n_modes)
        self.register_buffer("target_mean", torch.zeros(TARGET_FEATURES))
        self.register_buffer("target_std", torch.ones(TARGET_FEATURES))
        self.register_buffer("nb_mean", torch.zeros(NEIGHBOR_FEATURES))
        self.register_buffer("nb_std", torch.ones(NEIGHBOR_FEATURES))
        # residuals grow with the horizon: unit network outputs mean 0.3 m + 0.7 m per second
        t_s = torch.arange(1, c.horizon_steps + 1, dtype=torch.float32) * c.dt_s
        self.register_buffer("out_scale", 0.3 + 0.7 * t_s)
        if c.knots:
            self.register_buffer("interp", knot_weights(c.knots, c.horizon_steps).T.contiguous(),
                                 persistent=False)

    def set_normalisation(self, feats: Features) -> None:
        """Fit the input statistics on training features (standard deviations floored at
        MIN_INPUT_STD)."""
        t = feats.target.reshape(-1, TARGET_FEATURES)
        ok = t[:, -1] > 0
        mean, std = t[ok].mean(0), np.maximum(t[ok].std(0), MIN_INPUT_STD)
        mean[-1], std[-1] = 0.0, 1.0  # keep the valid flag as is
        self.target_mean.copy_(torch.from_numpy(mean))
        self.target_std.copy_(torch.from_numpy(std))
        nb = feats.neighbors[feats.nb_mask]
        if len(nb):
            self.nb_mean.copy_(torch.from_numpy(nb.mean(0)))
            self.nb_std.copy_(torch.from_numpy(np.maximum(nb.std(0), MIN_INPUT_STD)))

    def encode(self, target: torch.Tensor) -> torch.Tensor:
        """(B, hidden) summary of the target's past, read every encoder_stride steps."""
        c = self.config
        read = target[:, c.history_steps % c.encoder_stride::c.encoder_stride]  # ends now
        x = torch.relu(_layers((read - self.target_mean) / self.target_std, self.input_proj))
        out, _ = self.encoder(x)
        return out[:, -1]

    def forward(self, target, neighbors, nb_mask, cv):
        c = self.config
        b = target.shape[0]
        h = self.encode(target)
        if neighbors.shape[1]:
            e = _layers((neighbors - self.nb_mean) / self.nb_std, *self.nb_encoder)  # (B, M, D)
            absent, any_nb = ~nb_mask, nb_mask.any(1, keepdim=True)  # (B, M), (B, 1)
            neg = torch.finfo(e.dtype).min
            filled = e.masked_fill(absent.unsqueeze(-1), neg)
            # max and amax give the same values; their backward differs where neighbours
            # tie (max sends the gradient to one of them, amax splits it), so training keeps
            # max, which the shipped checkpoints were trained with, and a forward without
            # gradients (inference, validation) takes amax, much faster (no indices kept)
            pooled = filled.max(dim=1).values if torch.is_grad_enabled() else filled.amax(1)
            pooled = torch.where(any_nb, pooled, torch.zeros_like(pooled))
            score = (e * _layers(h, self.nb_query).unsqueeze(1)).sum(-1) / math.sqrt(e.shape[-1])
            score = score.masked_fill(absent, neg)
            w = torch.softmax(score, dim=1) * any_nb
            attended = (w.unsqueeze(-1) * e).sum(1)
        else:
            pooled = h.new_zeros(b, c.social_hidden)
            attended = h.new_zeros(b, c.social_hidden)
        z = _layers(torch.cat([h, pooled, attended], dim=-1), *self.trunk)
        xy = self.to_steps(_layers(z, self.head_xy), cv)
        sigma = self.to_steps(nn.functional.softplus(_layers(z, self.head_sigma)), MIN_SIGMA_M)
        log_prob = torch.log_softmax(_layers(z, self.head_logit), dim=-1)
        return xy, log_prob, sigma

    def to_steps(self, out: torch.Tensor, offset: torch.Tensor | float) -> torch.Tensor:
        """(B, K * n_knots * 2) head outputs -> (B, K, F, 2) metres at every horizon step, plus
        offset: (B, F, 2), the same for every mode, or a number. With knots each mode's
        outputs are (2, knots), x's then y's, interpolated to (2, F) and scaled and offset
        there (a tensor offset is transposed to (B, 2, F) so that the sums run along F: no
        copy for make_features' cv, which is that transpose already), and the result is a
        transposed view of (B, K, 2, F). Without knots they are (F, 2), and so is the
        result."""
        c = self.config
        b = out.shape[0]
        # in place after the first product: neither backward needs the values it overwrites
        if c.knots:
            steps = torch.matmul(out.view(b, c.n_modes, 2, c.knots), self.interp)
            if torch.is_tensor(offset):
                offset = offset.transpose(1, 2).contiguous().unsqueeze(1)  # (B, 1, 2, F)
            return steps.mul_(self.out_scale).add_(offset).transpose(2, 3)
        steps = out.view(b, c.n_modes, c.horizon_steps, 2) * self.out_scale.view(1, 1, -1, 1)
        return steps.add_(offset.unsqueeze(1) if torch.is_tensor(offset) else offset)


# ---- checkpoints ----------------------------------------------------------------------------


def resolve_checkpoint(name_or_path: str | None) -> Path:
    """A shipped checkpoint name (sim, ngsim) or a file path."""
    if name_or_path is None or name_or_path == "":
        name_or_path = "sim"
    if name_or_path in SHIPPED:
        return CHECKPOINT_DIR / f"{name_or_path}.pt"
    return Path(name_or_path)


def save_checkpoint(path: str | os.PathLike, model: RnnForecaster, meta: dict,
                    extra: dict | None = None) -> None:
    """Write atomically (temporary file, then rename). `extra` holds tensors/numbers only
    (e.g. optimizer state for --resume)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"format": CHECKPOINT_FORMAT, "config": json.dumps(asdict(model.config)),
           "state_dict": model.state_dict(), "meta": json.dumps(meta)}
    if extra:
        obj["extra"] = extra
    # not sim.files.atomic_path: torch names the archive's folder after the file, so the
    # temporary name is fixed (not random) to keep checkpoints byte-identical run to run
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(name_or_path: str | None) -> tuple[RnnForecaster, dict, dict]:
    """(model in eval mode, meta, extra). CheckpointError names the file and the field."""
    path = resolve_checkpoint(name_or_path)
    name = str(path)
    if not path.is_file():
        hint = (f" (shipped: {', '.join(SHIPPED)})" if name_or_path not in SHIPPED else
                " (the shipped checkpoint is missing from this install)")
        raise CheckpointError(f"{name}: no such checkpoint file{hint}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{name}: not a drivecast checkpoint (not a torch zip archive, "
                              f"or truncated)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt archives
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in msg:
            raise CheckpointError(f"{name}: not a drivecast checkpoint (it holds Python objects "
                                  "other than tensors and plain data; refused unread)") from None
        raise CheckpointError(f"{name}: unreadable checkpoint ({msg[:160]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{name}: not a drivecast checkpoint (top level is not a dict)")
    if obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{name}: field 'format': expected {CHECKPOINT_FORMAT!r}, got "
                              f"{obj.get('format')!r}")
    try:
        config = RnnConfig(**json.loads(obj["config"]))
    except KeyError:
        raise CheckpointError(f"{name}: field 'config': missing") from None
    except (TypeError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{name}: field 'config': {exc}") from None
    model = RnnForecaster(config)
    state = obj.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{name}: field 'state_dict': missing or not a dict")
    for key, value in state.items():
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()
                and bool(torch.isfinite(value).all())):
            raise CheckpointError(f"{name}: field 'state_dict': {key!r} is not a tensor of "
                                  "finite floating-point values")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{name}: field 'state_dict' does not match the config "
                              f"({detail[:160]})") from None
    try:
        meta = json.loads(obj.get("meta", "{}"))
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{name}: field 'meta': not valid JSON") from None
    model.eval()
    return model, meta, obj.get("extra") or {}


# ---- the Predictor ----------------------------------------------------------------------------


def set_inference_threads() -> None:
    """One intra-op thread: the batches the simulator asks for (tens to hundreds of agents)
    are faster on one core than split, and the benchmark's latency is per core. Set before
    this process's first torch operation, it also keeps the process free of an OpenMP
    thread pool, so it may fork workers (sim.safety.run_jobs)."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@dataclass
class RnnPredictor:
    """sim.forecast.Predictor backed by a checkpoint. predict() is batched and runs under
    torch.inference_mode."""

    model: RnnForecaster
    meta: dict = field(default_factory=dict)
    k: int = 6
    name: str = "rnn"
    batch_size: int = 4096

    @property
    def config(self) -> RnnConfig:
        return self.model.config

    @property
    def dt_s(self) -> float:
        return self.config.dt_s

    @property
    def n_neighbors(self) -> int:
        return self.config.n_neighbors

    @property
    def history_steps(self) -> int:
        return self.config.history_steps

    @property
    def max_horizon_s(self) -> float:
        """The longest horizon it was trained for, s."""
        return self.config.horizon_steps * self.config.dt_s

    @classmethod
    def load(cls, checkpoint: str | None = None, k: int = 6) -> RnnPredictor:
        set_inference_threads()  # before the checkpoint's checks run any torch operation
        model, meta, _ = load_checkpoint(checkpoint)
        return cls(model=model, meta=meta, k=k)

    def predict(self, history: History, horizon_steps: int) -> Prediction:
        c = self.config
        if abs(history.dt_s - c.dt_s) > 1e-6:
            raise ValueError(f"rnn: trained for steps of {c.dt_s} s, got {history.dt_s} s")
        if not 1 <= horizon_steps <= c.horizon_steps:
            raise ValueError(f"rnn: trained for a horizon of {c.horizon_steps} steps "
                             f"({c.horizon_steps * c.dt_s:g} s), asked for {horizon_steps}")
        set_inference_threads()
        s = history.n_samples
        k = min(self.k, c.n_modes)
        out_xy = np.empty((s, k, horizon_steps, 2))
        out_p = np.empty((s, k))
        out_sig = np.empty((s, k, horizon_steps, 2))
        with torch.inference_mode():
            for lo in range(0, s, self.batch_size):
                part = history if s <= self.batch_size else history.take(
                    slice(lo, lo + self.batch_size))
                f = make_features(part, c)
                xy, log_prob, sigma = self.model(
                    torch.from_numpy(f.target), torch.from_numpy(f.neighbors),
                    torch.from_numpy(f.nb_mask), torch.from_numpy(f.cv))
                prob = log_prob.exp().numpy().astype(np.float64)
                xy, sigma = xy.numpy(), sigma.numpy()  # float32, upcast by the arithmetic
                if k < c.n_modes:  # the k most probable modes
                    top = np.argsort(-prob, axis=1, kind="stable")[:, :k]
                    rows = np.arange(len(top))[:, None]
                    p = prob[rows, top]
                    xy_k = xy[rows, top, :horizon_steps]
                    sig_k = sigma[rows, top, :horizon_steps]
                else:  # all of them, in the model's order
                    p = prob
                    xy_k = xy[:, :, :horizon_steps]
                    sig_k = sigma[:, :, :horizon_steps]
                hi = lo + len(p)
                to_world(xy_k, f.origin, f.rot, out=out_xy[lo:hi])
                sigma_to_world(sig_k, f.rot, out=out_sig[lo:hi])
                out_p[lo:hi] = p / p.sum(axis=1, keepdims=True)
        return Prediction(xy=out_xy, prob=out_p, sigma_m=out_sig)
