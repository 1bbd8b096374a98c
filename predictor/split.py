"""The one train / validation / test split, shared by the forecast benchmark and training.

Deterministic and seeded: a unit's split is a hash of (seed, its key), so it does not depend
on file order, file names or on which other files are present, and the same unit always
lands in the same split.

- Imported NGSIM data (track meta source "ngsim") is split **by vehicle**: the key is the
  location, the period's clock offset and the NGSIM Vehicle_ID, so the three US-101 files
  (whose ids restart) never collide and renaming a file changes nothing.
- Everything else (simulator recordings, replays) is split **by episode**: the key is
  "scenario:seed" (with the case of a sweep, "scenario:caseN:seed") from the track meta when
  present, else the file name.
Fractions: FRACTIONS of train / val / test (70 / 15 / 15 %).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from scenarios.ngsim import ID_STRIDE  # NGSIM ids: period index * ID_STRIDE + Vehicle_ID

SPLITS = ("train", "val", "test")
FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_SEED = 0


def split_of(key: str, seed: int = DEFAULT_SEED) -> str:
    """'train', 'val' or 'test' for a unit key; uniform by FRACTIONS."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    edges = np.cumsum(FRACTIONS)
    return SPLITS[int(np.searchsorted(edges, u, side="right"))]


def by_vehicle(tracks) -> bool:
    """True when a Tracks is split by vehicle (imported NGSIM), False by episode."""
    return tracks.meta.get("source") == "ngsim"


def unit_keys(tracks, path: str | Path) -> list[str]:
    """(N,) the split key of every agent row of a Tracks read from `path`."""
    meta = tracks.meta
    if by_vehicle(tracks):
        periods = meta.get("periods") or [{"clock_offset_ms": 0.0}]
        multi = len(periods) > 1
        keys = []
        for agent_id in np.asarray(tracks.ids).tolist():
            p = agent_id // ID_STRIDE if multi else 0
            vid = agent_id % ID_STRIDE if multi else agent_id
            offset = periods[min(p, len(periods) - 1)]["clock_offset_ms"]
            keys.append(f"ngsim:{meta.get('location', 'unknown')}:{offset:.0f}:{vid}")
        return keys
    if "scenario" in meta and "seed" in meta:
        case = f":case{meta['case']}" if meta.get("case") is not None else ""
        key = f"episode:{meta['scenario']}{case}:{meta['seed']}"
    else:
        key = f"file:{Path(path).name}"
    return [key] * tracks.n_agents


def agent_split(tracks, path: str | Path, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(N,) str array: the split of every agent row."""
    cache: dict[str, str] = {}
    out = []
    for key in unit_keys(tracks, path):
        if key not in cache:
            cache[key] = split_of(key, seed)
        out.append(cache[key])
    return np.array(out, dtype="<U5")


def agent_mask(tracks, path: str | Path, split: str, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(N,) bool, agents in `split` ('train', 'val', 'test' or 'all')."""
    if split == "all":
        return np.ones(tracks.n_agents, bool)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (valid: train, val, test, all)")
    return agent_split(tracks, path, seed) == split
