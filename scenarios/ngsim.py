"""NGSIM trajectory files -> track files (shared/specs/tracks.md). See docs/ngsim.md.

Reads (a) the official 25-column CSV layout of the data.transportation.gov export and (b) the
US-101 subset files (10 columns), plain or gzip-compressed. Columns are found by name, case
insensitively; the ones needed are Vehicle_ID, Frame_ID, Local_X, Local_Y; Global_Time,
v_Length, v_Width, v_Class, Lane_ID and Location are used when present.

What the import does, in order:
- rows keyed on (Location, period, Vehicle_ID, Frame_ID), in any order; a repeated key keeps
  its first row. A *period* (one 15-minute recording) is identified by its clock offset
  Global_Time - 100 * Frame_ID, which is constant within a period.
- feet -> metres; world frame x along the road (Local_Y), y to the left (-Local_X);
- Savitzky-Golay smoothing (scipy) of each vehicle's contiguous run of frames, window
  DEFAULT_WINDOW_S (docs/ngsim.md justifies it), polynomial order DEFAULT_POLYORDER;
  velocity is the filter's first derivative, heading the velocity's direction (held while
  slower than 0.5 m/s);
- front centre -> centre: half a vehicle length back along the heading (length from
  v_Length, else DEFAULT_LENGTH_M);
- one track file per location; the periods of a location share one timeline at 0.1 s:
  periods that overlap or follow within 60 s keep their true relative times (the real
  Global_Time clock); periods further apart, or whose Global_Time is not a millisecond
  timestamp, are laid end to end with PERIOD_GAP_S of empty time between them (meta
  "periods" records each one's placement);
- ids unique across periods: Vehicle_ID + ID_STRIDE * period index (periods ordered by
  their clock offset; a single-period file keeps the NGSIM Vehicle_IDs);
- lane: Lane_ID when present, else from Local_X (floor(Local_X / 12 ft) + 1); NGSIM
  numbering, 1 = leftmost lane, -1 unknown.
Bad files raise NgsimFormatError (a TrackFileError): one line naming the file and the row
or column.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.tracks import TrackFileError, Tracks

FT_M = 0.3048
DT_S = 0.1  # NGSIM frames are 10 Hz
DEFAULT_WINDOW_S = 2.1  # Savitzky-Golay window (21 frames); see docs/ngsim.md
DEFAULT_POLYORDER = 2
DEFAULT_LENGTH_M = 4.5  # used when the file has no v_Length (the US-101 subset)
DEFAULT_WIDTH_M = 1.8
LANE_WIDTH_FT = 12.0  # US-101 and I-80 lanes, for lanes from Local_X
MIN_RUN_FRAMES = 3  # shorter runs of frames have no usable velocity and are dropped
HEADING_MIN_SPEED_MPS = 0.5
PERIOD_GAP_S = 60.0
MAX_PERIODS = 100  # more recording periods in one file: its clock columns are wrong
MAX_FRAME = 10_000_000  # frames (11.6 days at 10 Hz): larger ones are not NGSIM frames
ID_STRIDE = 100_000
CHUNK_ROWS = 200_000

REQUIRED = ("vehicle_id", "frame_id", "local_x", "local_y")
NUMERIC_OPTIONAL = ("global_time", "v_length", "v_width", "v_class", "lane_id")
CLASS_TO_KIND = {1: 2, 2: 0, 3: 1}  # NGSIM v_Class motorcycle / auto / truck -> track kind


class NgsimFormatError(TrackFileError):
    """A file that is not a readable NGSIM trajectory file; the message names file and row
    or column."""


@dataclass(frozen=True)
class ImportSettings:
    """Smoothing and default sizes of the import."""

    window_s: float = DEFAULT_WINDOW_S
    polyorder: int = DEFAULT_POLYORDER
    default_length_m: float = DEFAULT_LENGTH_M
    default_width_m: float = DEFAULT_WIDTH_M
    causal: bool = False  # fit each frame on the window ending there (no future frames)

    def __post_init__(self) -> None:
        if not 0 <= self.window_s <= 10.0:
            raise ValueError(f"smoothing window must be 0 (none) to 10 s, got {self.window_s}")
        if not 1 <= self.polyorder <= 5:
            raise ValueError(f"polyorder must be 1..5, got {self.polyorder}")
        if self.window_s > 0 and self.window_frames <= self.polyorder:
            raise ValueError(f"smoothing window {self.window_s} s is too short for "
                             f"polyorder {self.polyorder}")
        if not (self.default_length_m > 0 and self.default_width_m > 0):
            raise ValueError("default vehicle sizes must be positive")

    @property
    def window_frames(self) -> int:
        """Odd window length in frames (0: no smoothing)."""
        if self.window_s == 0:
            return 0
        n = int(round(self.window_s / DT_S))
        return n if n % 2 else n + 1


def looks_like_ngsim(path: str | os.PathLike) -> bool:
    """True if the file's name says CSV (.csv, .csv.gz, .txt, .txt.gz)."""
    name = str(path).lower()
    return name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz"))


# ---- reading rows ------------------------------------------------------------------------------


def _open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    raw = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _header(name: str, line: str) -> dict[str, int]:
    cols = [c.strip().lower() for c in line.strip().split(",")]
    if "\x00" in line or not line.strip():
        raise NgsimFormatError(f"{name}: not a text CSV with a header line")
    index = {c: i for i, c in enumerate(cols)}
    for c in REQUIRED:
        if c not in index:
            raise NgsimFormatError(
                f"{name}: header has no column '{c}' (expected the NGSIM 25-column layout or "
                f"the US-101 subset's; found {len(cols)} columns: {','.join(cols[:6])}...)")
    return index


def read_rows(path: str | os.PathLike, progress: bool = False) -> dict[str, np.ndarray]:
    """Parse an NGSIM CSV (plain or gzip) into column arrays (float64; 'location' as str).
    Columns: the REQUIRED ones, NUMERIC_OPTIONAL ones present, 'location' if present."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise NgsimFormatError(f"{name}: no such file")
    if path.is_dir():
        raise NgsimFormatError(f"{name}: is a directory, not an NGSIM file")
    if path.stat().st_size == 0:
        raise NgsimFormatError(f"{name}: empty file")
    from tqdm import tqdm

    total = path.stat().st_size
    chunks: dict[str, list[np.ndarray]] = {}
    line_no = 1
    try:
        with _open_text(path) as fh, tqdm(total=total, unit="B", unit_scale=True,
                                          desc=f"reading {path.name}", leave=False,
                                          disable=not progress) as bar:
            index = _header(name, fh.readline())
            n_cols = max(index.values()) + 1
            numeric = [c for c in REQUIRED + NUMERIC_OPTIONAL if c in index]
            while True:
                lines = fh.readlines(1_000_000)
                if not lines:
                    break
                lines = [ln for ln in lines if ln.strip()]
                if hasattr(fh.buffer, "fileobj"):  # gzip: progress in compressed bytes
                    bar.n = fh.buffer.fileobj.tell()
                else:
                    bar.n = fh.buffer.tell()
                bar.refresh()
                if not lines:
                    continue
                fields = [ln.rstrip("\r\n").split(",") for ln in lines]
                lengths = np.fromiter((len(f) for f in fields), int, len(fields))
                bad = np.flatnonzero(lengths < n_cols)
                if len(bad):
                    i = int(bad[0])
                    raise NgsimFormatError(
                        f"{name}: row {line_no + 1 + i}: expected {n_cols} fields, got "
                        f"{lengths[i]} (truncated or not the header's layout)")
                cols = list(zip(*fields, strict=False))
                for c in numeric:
                    raw = cols[index[c]]
                    try:
                        arr = np.array(raw, dtype=np.float64)
                    except ValueError:
                        arr = None
                    if arr is None or not np.isfinite(arr).all():
                        for i, v in enumerate(raw):
                            try:
                                ok = np.isfinite(float(v))
                            except ValueError:
                                ok = False
                            if not ok:
                                raise NgsimFormatError(
                                    f"{name}: row {line_no + 1 + i}, column '{c}': not a "
                                    f"finite number ({v[:20]!r})") from None
                    chunks.setdefault(c, []).append(arr)
                if "location" in index:
                    chunks.setdefault("location", []).append(
                        np.array([v.strip() for v in cols[index["location"]]]))
                line_no += len(lines)
    except NgsimFormatError:
        raise
    except UnicodeDecodeError:
        raise NgsimFormatError(f"{name}: not a text CSV (binary data after row "
                               f"{line_no})") from None
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise NgsimFormatError(f"{name}: truncated or corrupt compressed data after row "
                               f"{line_no} ({exc})") from None
    if line_no == 1:
        raise NgsimFormatError(f"{name}: no data rows after the header")
    return {c: np.concatenate(v) for c, v in chunks.items()}


# ---- building tracks ---------------------------------------------------------------------------


def _periods(offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster clock offsets (Global_Time - 100 Frame_ID) into periods: offsets within 1 s
    of each other are one period. Returns (period index per row, offset of each period)."""
    uniq = np.unique(offset)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(uniq) > 1000.0) + 1])
    period_offset = uniq[starts]
    return np.searchsorted(period_offset, offset, side="right") - 1, period_offset


def _smooth(pos: np.ndarray, settings: ImportSettings) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed positions and their time derivative for one contiguous run (n, 2), metres and
    m/s. Centred (the default): scipy's savgol_filter; runs shorter than the window use the
    longest odd window that fits. Causal: the same least-squares polynomial fitted to the
    window ending at each frame (fewer frames at the start of a run; velocity 0 on its
    first frame), so no value depends on later frames."""
    from scipy.signal import savgol_coeffs, savgol_filter

    n = len(pos)
    if settings.window_frames == 0:
        return pos.copy(), np.gradient(pos, DT_S, axis=0)
    if settings.causal:
        w = settings.window_frames
        p_out = np.empty_like(pos)
        v_out = np.zeros_like(pos)
        for i in range(min(w - 1, n)):
            order = min(settings.polyorder, i)
            if order == 0:
                p_out[i] = pos[i]
                continue
            win = pos[: i + 1]
            p_out[i] = savgol_coeffs(i + 1, order, pos=i, use="dot") @ win
            v_out[i] = savgol_coeffs(i + 1, order, pos=i, deriv=1, delta=DT_S, use="dot") @ win
        if n >= w:
            windows = np.lib.stride_tricks.sliding_window_view(pos, w, axis=0)  # (n-w+1, 2, w)
            c0 = savgol_coeffs(w, settings.polyorder, pos=w - 1, use="dot")
            c1 = savgol_coeffs(w, settings.polyorder, pos=w - 1, deriv=1, delta=DT_S,
                               use="dot")
            p_out[w - 1:] = windows @ c0
            v_out[w - 1:] = windows @ c1
        return p_out, v_out
    w = min(settings.window_frames, n if n % 2 else n - 1)
    if w > settings.polyorder:
        p = savgol_filter(pos, w, settings.polyorder, axis=0, mode="interp")
        v = savgol_filter(pos, w, settings.polyorder, deriv=1, delta=DT_S, axis=0,
                          mode="interp")
        return p, v
    return pos.copy(), np.gradient(pos, DT_S, axis=0)


def _hold_heading(heading: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Heading (n,) where moving, else the last moving value (the first one at the start;
    0, along the road, if the vehicle never moves)."""
    if not moving.any():
        return np.zeros_like(heading)
    idx = np.where(moving, np.arange(len(heading)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = np.flatnonzero(moving)[0]
    return heading[idx]


def tracks_from_rows(cols: dict[str, np.ndarray], name: str, location: str | None = None,
                     settings: ImportSettings | None = None,
                     progress: bool = False) -> Tracks:
    """Column arrays from read_rows -> one Tracks of one location (see the module doc)."""
    settings = settings or ImportSettings()
    n_rows = len(cols["frame_id"])
    loc = cols.get("location")
    if loc is not None:
        locations = sorted(set(np.unique(loc).tolist()))
        if location is None:
            if len(locations) > 1:
                raise NgsimFormatError(f"{name}: holds {len(locations)} locations "
                                       f"({', '.join(locations)}); choose one with --location")
            location = locations[0]
        elif location not in locations:
            raise NgsimFormatError(f"{name}: no rows with Location '{location}' (found "
                                   f"{', '.join(locations)})")
        keep = loc == location
        cols = {k: v[keep] for k, v in cols.items()}
    elif location is not None:
        raise NgsimFormatError(f"{name}: --location {location}: the file has no Location "
                               "column (it holds one location)")
    location = location or "unknown"
    frame = cols["frame_id"]
    vid = cols["vehicle_id"]
    for c, arr in (("frame_id", frame), ("vehicle_id", vid)):
        if (arr != np.round(arr)).any() or (arr < 0).any():
            row = int(np.flatnonzero((arr != np.round(arr)) | (arr < 0))[0])
            raise NgsimFormatError(f"{name}: column '{c}': expected non-negative integers "
                                   f"(value {float(arr[row]):g})")
    if (vid >= ID_STRIDE).any():
        raise NgsimFormatError(f"{name}: column 'vehicle_id': ids must be < {ID_STRIDE}")
    if (frame >= MAX_FRAME).any():
        row = int(np.flatnonzero(frame >= MAX_FRAME)[0])
        raise NgsimFormatError(f"{name}: column 'frame_id': frames must be < {MAX_FRAME:g} "
                               f"(value {float(frame[row]):g})")
    gt = cols.get("global_time")
    offset = gt - 100.0 * frame if gt is not None else np.zeros(len(frame))
    period, period_offset = _periods(offset)
    n_periods = len(period_offset)
    if n_periods > MAX_PERIODS:
        raise NgsimFormatError(f"{name}: columns 'global_time' and 'frame_id' disagree: "
                               f"{n_periods} recording periods (global_time must advance "
                               f"100 ms per frame within a period)")
    # one row per (period, vehicle, frame): the first occurrence in the file wins
    order = np.lexsort((np.arange(len(frame)), frame, vid, period))
    key = np.stack([period[order], vid[order], frame[order]], 1)
    first = np.ones(len(order), bool)
    first[1:] = (np.diff(key, axis=0) != 0).any(axis=1)
    dropped_duplicates = int(len(order) - first.sum())
    order = order[first]
    period, vid, frame = period[order], vid[order].astype(np.int64), frame[order].astype(np.int64)
    cols = {k: v[order] for k, v in cols.items()}
    # place the periods on one timeline
    clock_ok = gt is not None and bool((gt >= 1e12).all())
    f_lo = np.array([frame[period == p].min() for p in range(n_periods)])
    f_hi = np.array([frame[period == p].max() for p in range(n_periods)])
    start_idx = np.zeros(n_periods, np.int64)
    gap_steps = int(round(PERIOD_GAP_S / DT_S))
    placements = []
    for p in range(n_periods):
        on_clock = p == 0
        if p > 0:
            prev_end = start_idx[p - 1] + f_hi[p - 1] - f_lo[p - 1]
            start_idx[p] = prev_end + gap_steps
            if clock_ok:
                real = start_idx[p - 1] + int(round(
                    (period_offset[p] + 100 * f_lo[p] - period_offset[p - 1]
                     - 100 * f_lo[p - 1]) / 100.0))
                if real <= start_idx[p]:
                    start_idx[p], on_clock = real, True
        placements.append({
            "period": p, "clock_offset_ms": float(period_offset[p]),
            "first_frame": int(f_lo[p]), "last_frame": int(f_hi[p]),
            "t_start_s": round(float(start_idx[p] * DT_S), 3),
            "id_base": p * ID_STRIDE if n_periods > 1 else 0,
            "placed": "first" if p == 0 else ("true time after the previous period"
                                              if on_clock else
                                              f"{PERIOD_GAP_S:g} s after the previous period"),
        })
    step = start_idx[period] + frame - f_lo[period]
    if step.min() < 0 or step.max() >= MAX_FRAME:
        raise NgsimFormatError(f"{name}: columns 'global_time' and 'frame_id' disagree: the "
                               "periods they give overlap or span too long a time")
    n_steps = int(step.max()) + 1
    uid = vid + (period * ID_STRIDE if n_periods > 1 else 0)
    ids, agent = np.unique(uid, return_inverse=True)
    n_agents = len(ids)
    # raw front-centre positions, metres, world frame
    fx = np.full((n_agents, n_steps), np.nan)
    fy = np.full((n_agents, n_steps), np.nan)
    fx[agent, step] = cols["local_y"] * FT_M
    fy[agent, step] = -cols["local_x"] * FT_M
    length = np.full(n_agents, settings.default_length_m)
    width = np.full(n_agents, settings.default_width_m)
    kind = np.full(n_agents, -1, np.int8)
    first_row = np.unique(agent, return_index=True)[1]
    if "v_length" in cols:
        v = cols["v_length"][first_row] * FT_M
        length = np.where(v > 0, v, length)
    if "v_width" in cols:
        v = cols["v_width"][first_row] * FT_M
        width = np.where(v > 0, v, width)
    if "v_class" in cols:
        kind = np.array([CLASS_TO_KIND.get(int(c), -1) for c in cols["v_class"][first_row]],
                        np.int8)
    lane = np.full((n_agents, n_steps), -1, np.int16)
    if "lane_id" in cols:
        lane[agent, step] = np.clip(cols["lane_id"], -1, 32767).astype(np.int16)
    else:
        lane[agent, step] = np.maximum(np.floor(cols["local_x"] / LANE_WIDTH_FT) + 1,
                                       1).astype(np.int16)
    out = {k: np.full((n_agents, n_steps), np.nan) for k in ("x", "y", "vx", "vy", "heading")}
    dropped_runs = 0
    from tqdm import tqdm

    for a in tqdm(range(n_agents), desc="smoothing", unit="veh", leave=False,
                  disable=not progress):
        present = np.isfinite(fx[a])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], present.view(np.int8), [0]])))
        for lo, hi in zip(edges[0::2], edges[1::2]):
            if hi - lo < MIN_RUN_FRAMES:
                dropped_runs += 1
                lane[a, lo:hi] = -1
                continue
            pos, vel = _smooth(np.stack([fx[a, lo:hi], fy[a, lo:hi]], 1), settings)
            speed = np.hypot(vel[:, 0], vel[:, 1])
            heading = _hold_heading(np.arctan2(vel[:, 1], vel[:, 0]),
                                    speed >= HEADING_MIN_SPEED_MPS)
            half = 0.5 * length[a]
            out["x"][a, lo:hi] = pos[:, 0] - half * np.cos(heading)
            out["y"][a, lo:hi] = pos[:, 1] - half * np.sin(heading)
            out["vx"][a, lo:hi], out["vy"][a, lo:hi] = vel[:, 0], vel[:, 1]
            out["heading"][a, lo:hi] = heading
    alive = np.isfinite(out["x"]).any(axis=1)
    if not alive.any():
        raise NgsimFormatError(f"{name}: no vehicle has {MIN_RUN_FRAMES} or more consecutive "
                               f"frames")
    meta = {
        "source": "ngsim", "dt": DT_S, "file": Path(name).name, "location": location,
        "rows": int(n_rows), "duplicates_dropped": dropped_duplicates,
        "short_runs_dropped": dropped_runs, "periods": placements,
        "smoothing": {"method": "savitzky-golay", "window_s": settings.window_s,
                      "window_frames": settings.window_frames,
                      "polyorder": settings.polyorder,
                      "causal": settings.causal},
        "reference_point": "centre (NGSIM front centre moved back half a length)",
        "default_length_m": settings.default_length_m,
        "lane_numbering": "NGSIM: 1 = leftmost lane, -1 unknown",
        "frame": "x along the road (Local_Y), y to the left (-Local_X), metres",
    }
    t = np.round(np.arange(n_steps) * DT_S, 9)
    return Tracks(t=t, **{k: v[alive].astype(np.float32) for k, v in out.items()},
                  length=length[alive].astype(np.float32),
                  width=width[alive].astype(np.float32), ids=ids[alive].astype(np.int64),
                  meta=meta, kind=kind[alive], lane=lane[alive], ego=-1)


def read_ngsim(path: str | os.PathLike, location: str | None = None,
               settings: ImportSettings | None = None, progress: bool = False) -> Tracks:
    """An NGSIM CSV file (either layout, plain or gzip) as Tracks of one location.
    Raises NgsimFormatError naming the file and the row or column."""
    cols = read_rows(path, progress)
    return tracks_from_rows(cols, str(path), location, settings, progress)


def kinematics(tracks: Tracks) -> dict:
    """Distribution of speed (m/s), longitudinal acceleration d|v|/dt (m/s^2), lateral
    acceleration dvy/dt (m/s^2, y across the road) and longitudinal jerk (m/s^3) over all
    present steps: percentiles 0.1, 1, 50, 99, 99.9 and min / max, rounded."""
    vx, vy = tracks.vx.astype(np.float64), tracks.vy.astype(np.float64)
    speed = np.hypot(vx, vy)
    acc = np.diff(speed, axis=1) / tracks.dt_s
    lat = np.diff(vy, axis=1) / tracks.dt_s
    jerk = np.diff(acc, axis=1) / tracks.dt_s
    out = {}
    for name, arr in (("speed_mps", speed), ("accel_mps2", acc), ("lat_accel_mps2", lat),
                      ("jerk_mps3", jerk)):
        v = arr[np.isfinite(arr)]
        if v.size == 0:
            out[name] = None
            continue
        p = np.percentile(v, [0.1, 1, 50, 99, 99.9])
        out[name] = {"min": round(float(v.min()), 2), "p0.1": round(float(p[0]), 2),
                     "p1": round(float(p[1]), 2), "p50": round(float(p[2]), 2),
                     "p99": round(float(p[3]), 2), "p99.9": round(float(p[4]), 2),
                     "max": round(float(v.max()), 2)}
    return out


def describe(tracks: Tracks) -> dict:
    """A short summary of an imported file for the CLI, with its kinematics."""
    speed = np.hypot(tracks.vx, tracks.vy)[tracks.present]
    return {"agents": tracks.n_agents, "steps": tracks.n_steps,
            "duration_s": round(float(tracks.t[-1]), 1),
            "periods": len(tracks.meta["periods"]),
            "duplicates_dropped": tracks.meta["duplicates_dropped"],
            "speed_mps_p50": round(float(np.median(speed)), 2),
            "speed_mps_max": round(float(speed.max()), 2),
            "kinematics": kinematics(tracks),
            "meta": json.loads(json.dumps(tracks.meta))}
