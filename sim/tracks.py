"""Track files (shared/specs/tracks.md): write atomically and deterministically, read strictly.

A track file is an .npz archive, agent-major: arrays (N, T) with one row per agent and one
column per time step. Reading refuses every violation of the spec with a TrackFileError that
names the file and the array; nothing is half-loaded.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from sim.files import atomic_path
from sim.road import Road

FLOAT_ARRAYS = ("x", "y", "vx", "vy", "heading")
REQUIRED = ("t", *FLOAT_ARRAYS, "length", "width", "ids", "meta")
KINDS = {-1: "unknown", 0: "car", 1: "truck", 2: "motorcycle", 3: "bicycle", 4: "pedestrian"}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamp: same content, same bytes


class TrackFileError(ValueError):
    """A file that is not a valid track file; the message names the file and the array."""


@dataclass(frozen=True, eq=False)
class Tracks:
    """One episode. x, y, vx, vy, heading: (N, T) float32, NaN where an agent is absent;
    t: (T,) float64 s; length, width: (N,) float32 m; ids: (N,) int64; meta: JSON object.
    Optional: kind (N,) int8, lane (N, T) int16, ego (row or -1), collided (N, T) bool,
    road (a Road)."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    width: np.ndarray
    ids: np.ndarray
    meta: dict = field(default_factory=dict)
    kind: np.ndarray | None = None
    lane: np.ndarray | None = None
    ego: int = -1
    collided: np.ndarray | None = None
    road: Road | None = None

    @property
    def n_agents(self) -> int:
        return self.x.shape[0]

    @property
    def n_steps(self) -> int:
        return len(self.t)

    @property
    def dt_s(self) -> float:
        return float(self.meta.get("dt", self.t[1] - self.t[0] if len(self.t) > 1 else 0.0))

    @property
    def present(self) -> np.ndarray:
        """(N, T) bool, the agent is in the scene at that step."""
        return np.isfinite(self.x)


def time_window(tracks: Tracks, k0: int, k1: int) -> Tracks:
    """Frames k0..k1 (inclusive) of a recording, with only the agents present in them (in
    file order); the ego row follows its agent (-1 if it is not among them). Time stamps
    are kept; meta gains `recording_t0_s`, the whole recording's first one, from which a log
    replay of the window runs the recording's signal plan (as a replay of the whole would)."""
    k0, k1 = max(0, int(k0)), min(tracks.n_steps - 1, int(k1))
    cols = slice(k0, k1 + 1)
    rows = np.flatnonzero(tracks.present[:, cols].any(axis=1))
    ego = -1
    if tracks.ego >= 0 and tracks.ego in rows:
        ego = int(np.searchsorted(rows, tracks.ego))
    pick = {name: getattr(tracks, name)[rows][:, cols]
            for name in ("x", "y", "vx", "vy", "heading")}
    # the recording's first time stamp: the clock a signal plan runs on (see the docstring)
    meta = {**tracks.meta,
            "recording_t0_s": float(tracks.meta.get("recording_t0_s", tracks.t[0]))}
    return Tracks(t=tracks.t[cols].copy(), **pick, length=tracks.length[rows],
                  width=tracks.width[rows], ids=tracks.ids[rows], meta=meta,
                  kind=None if tracks.kind is None else tracks.kind[rows],
                  lane=None if tracks.lane is None else tracks.lane[rows][:, cols], ego=ego,
                  collided=None if tracks.collided is None else tracks.collided[rows][:, cols],
                  road=tracks.road)


def write_tracks(path: str | os.PathLike, tracks: Tracks) -> None:
    """Write a track file atomically (temporary file, then rename) with fixed zip timestamps,
    so the same episode always gives the same bytes. Checks the arrays first (ValueError)."""
    arrays = _to_arrays(tracks)
    _validate(arrays, str(path))
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, arr if arr.flags.c_contiguous else arr.copy(),
                                          allow_pickle=False)


def read_tracks(path: str | os.PathLike) -> Tracks:
    """Read and validate a track file. Raises TrackFileError naming the file and the array."""
    name = str(path)
    if not os.path.exists(path):
        raise TrackFileError(f"{name}: no such file")
    if os.path.isdir(path):
        raise TrackFileError(f"{name}: is a directory, not a track file")
    if not zipfile.is_zipfile(path):
        raise TrackFileError(f"{name}: not a track file (.npz archive), or truncated")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            arrays = {}
            for key in keys & set(REQUIRED + ("kind", "lane", "ego", "collided", "road")):
                try:
                    arrays[key] = npz[key]
                except ValueError as exc:
                    if "pickle" in str(exc):
                        raise TrackFileError(
                            f"{name}: array '{key}' holds Python objects, not numbers or text"
                        ) from None
                    raise TrackFileError(f"{name}: array '{key}' is unreadable ({exc})") from None
                except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                    raise TrackFileError(f"{name}: array '{key}' is truncated or corrupt "
                                         f"({exc})") from None
    except TrackFileError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
        raise TrackFileError(f"{name}: not a track file (.npz archive): {exc}") from None
    _validate(arrays, name)
    meta = json.loads(str(arrays["meta"]))
    road = None
    if "road" in arrays:
        try:
            road = Road.from_json(str(arrays["road"]))
        except ValueError as exc:
            raise TrackFileError(f"{name}: array 'road': {exc}") from None
    return Tracks(
        t=arrays["t"], x=arrays["x"], y=arrays["y"], vx=arrays["vx"], vy=arrays["vy"],
        heading=arrays["heading"], length=arrays["length"], width=arrays["width"],
        ids=arrays["ids"], meta=meta, kind=arrays.get("kind"), lane=arrays.get("lane"),
        ego=int(arrays["ego"]) if "ego" in arrays else -1, collided=arrays.get("collided"),
        road=road,
    )


def _to_arrays(tr: Tracks) -> dict[str, np.ndarray]:
    meta = dict(tr.meta)
    if "dt" not in meta:
        meta["dt"] = float(tr.t[1] - tr.t[0]) if len(tr.t) > 1 else 0.0
    meta.setdefault("source", "unknown")
    arrays = {
        "t": np.asarray(tr.t, np.float64),
        **{k: np.asarray(getattr(tr, k), np.float32) for k in FLOAT_ARRAYS},
        "length": np.asarray(tr.length, np.float32),
        "width": np.asarray(tr.width, np.float32),
        "ids": np.asarray(tr.ids, np.int64),
        "meta": np.array(json.dumps(meta, sort_keys=True)),
    }
    if tr.kind is not None:
        arrays["kind"] = np.asarray(tr.kind, np.int8)
    if tr.lane is not None:
        arrays["lane"] = np.asarray(tr.lane, np.int16)
    if tr.ego is not None:
        arrays["ego"] = np.array(tr.ego, np.int64)
    if tr.collided is not None:
        arrays["collided"] = np.asarray(tr.collided, bool)
    if tr.road is not None:
        arrays["road"] = np.array(tr.road.to_json())
    return arrays


def _fail(name: str, key: str, what: str):
    raise TrackFileError(f"{name}: array '{key}': {what}")


def _validate(a: dict[str, np.ndarray], name: str) -> None:
    """Check arrays against the spec; raise TrackFileError on the first violation."""
    for key in REQUIRED:
        if key not in a:
            _fail(name, key, "missing (required)")
    t = a["t"]
    if t.dtype != np.float64 or t.ndim != 1 or len(t) < 1:
        _fail(name, "t", f"expected float64 [T] with T >= 1, got {t.dtype} {list(t.shape)}")
    if not np.all(np.isfinite(t)):
        _fail(name, "t", "holds non-finite times")
    n_steps = len(t)
    meta_arr = a["meta"]
    if meta_arr.ndim != 0 or meta_arr.dtype.kind != "U":
        _fail(name, "meta", f"expected a 0-d string, got {meta_arr.dtype} {list(meta_arr.shape)}")
    try:
        meta = json.loads(str(meta_arr))
    except json.JSONDecodeError as exc:
        _fail(name, "meta", f"not valid JSON ({exc.msg})")
    if not isinstance(meta, dict) or "source" not in meta or "dt" not in meta:
        _fail(name, "meta", "must be a JSON object with at least 'source' and 'dt'")
    dt = meta["dt"]
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not np.isfinite(dt):
        _fail(name, "meta", "'dt' must be a number")
    if dt <= 0:
        _fail(name, "meta", f"'dt' must be > 0, got {dt}")
    if n_steps > 1:
        # every step within 0.1 % of dt (and the float64 resolution of large time stamps)
        tol = 1e-3 * dt + 4.0 * float(np.spacing(np.max(np.abs(t))))
        if not np.all(np.abs(np.diff(t) - dt) <= tol):
            _fail(name, "t", f"time step is not uniform and equal to meta dt={dt}")
    ids = a["ids"]
    if ids.dtype != np.int64 or ids.ndim != 1:
        _fail(name, "ids", f"expected int64 [N], got {ids.dtype} {list(ids.shape)}")
    n_agents = len(ids)
    if len(np.unique(ids)) != n_agents:
        _fail(name, "ids", "agent ids are not unique")
    for key in FLOAT_ARRAYS:
        arr = a[key]
        if arr.dtype != np.float32 or arr.shape != (n_agents, n_steps):
            _fail(name, key, f"expected float32 [{n_agents}, {n_steps}] (N from ids, T from t), "
                             f"got {arr.dtype} {list(arr.shape)}")
        if np.any(np.isinf(arr)):
            _fail(name, key, "holds infinite values (absent agents are NaN)")
    absent = np.isnan(a["x"])
    for key in FLOAT_ARRAYS[1:]:
        if not np.array_equal(np.isnan(a[key]), absent):
            _fail(name, key, "NaN pattern differs from 'x' (absent steps must be NaN in "
                             "x, y, vx, vy, heading alike)")
    for key in ("length", "width"):
        arr = a[key]
        if arr.dtype != np.float32 or arr.shape != (n_agents,):
            _fail(name, key, f"expected float32 [{n_agents}], got {arr.dtype} {list(arr.shape)}")
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            _fail(name, key, "holds non-finite or non-positive sizes")
    if "kind" in a:
        arr = a["kind"]
        if arr.dtype != np.int8 or arr.shape != (n_agents,):
            _fail(name, "kind", f"expected int8 [{n_agents}], got {arr.dtype} {list(arr.shape)}")
        if np.any((arr < -1) | (arr > 4)):
            _fail(name, "kind", "values must be in -1..4")
    if "lane" in a:
        arr = a["lane"]
        if arr.dtype != np.int16 or arr.shape != (n_agents, n_steps):
            _fail(name, "lane", f"expected int16 [{n_agents}, {n_steps}], got {arr.dtype} "
                                f"{list(arr.shape)}")
    if "ego" in a:
        arr = a["ego"]
        if arr.dtype != np.int64 or arr.ndim != 0 or not -1 <= int(arr) < n_agents:
            _fail(name, "ego", f"expected an int64 scalar in -1..{n_agents - 1}")
    if "collided" in a:
        arr = a["collided"]
        if arr.dtype != np.bool_ or arr.shape != (n_agents, n_steps):
            _fail(name, "collided", f"expected bool [{n_agents}, {n_steps}], got {arr.dtype} "
                                    f"{list(arr.shape)}")
    if "road" in a:
        arr = a["road"]
        if arr.ndim != 0 or arr.dtype.kind != "U":
            _fail(name, "road", f"expected a 0-d string, got {arr.dtype} {list(arr.shape)}")
