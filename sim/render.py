"""Drawing: `render(scene, view) -> pygame.Surface`, a pure function of what is drawn (Scene)
and how it is looked at (View). With sim/viewer.py, the only modules that import pygame.

World frame: metres, x to the right, y up (the screen's y grows down). Vehicles are coloured
by paint codes computed from arrays (role, kind, acceleration, collided, threat), never by
type checks. The road's static geometry (lane surfaces, edge lines, dashed markings, tapers)
is computed once per Road and cached; every frame only transforms what is in view.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass, field, replace

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402
import pygame.gfxdraw  # noqa: E402

from sim.collision import box_corners, ttc_s
from sim.files import atomic_path
from sim.road import LANE_DEAD_END, Road

# ---- palette ---------------------------------------------------------------------------------

BG = (27, 31, 37)
GRID = (38, 43, 51)
ASPHALT = (54, 58, 65)
MARKING = (214, 217, 222)
EDGE_LINE = (236, 236, 232)
TEXT = (232, 235, 240)
TEXT_DIM = (150, 157, 168)
PANEL = (14, 16, 20, 210)
ACCENT = (0, 190, 255)
FORECAST = (0, 190, 255)
TRUTH = (255, 226, 120)
WARN = (255, 170, 30)
DANGER = (255, 70, 70)
BRAKE_LIGHT = (255, 40, 40)
SELECT = (255, 255, 255)

PAINT_CAR, PAINT_TRUCK, PAINT_OTHER, PAINT_BRAKING, PAINT_THREAT, PAINT_EGO, PAINT_COLLIDED = (
    range(7))
PAINT_RGB = np.array([
    (146, 162, 184),  # car
    (112, 128, 156),  # truck (with a lighter cab)
    (170, 150, 200),  # motorcycle, bicycle, pedestrian, unknown
    (255, 150, 30),  # braking harder than BRAKING_MPS2
    (225, 80, 205),  # threat: the agent the ego reacts to, or flagged by the avoidance
    (40, 205, 120),  # ego
    (240, 56, 56),  # collided
], np.int32)
PAINT_NAMES = ("car", "truck", "other", "braking", "threat", "ego", "collided")
BRAKING_MPS2 = -3.0  # a vehicle decelerating harder than this is painted as braking
BRAKE_LIGHT_MPS2 = -0.5  # brake lights from this deceleration on
TTC_WARN_S = 3.0  # TTC tags below this; red below TTC_DANGER_S
TTC_DANGER_S = 1.5
ELLIPSE_SIGMA = 2.0  # uncertainty ellipses enclose +-2 sigma on each axis
ELLIPSE_MIN_PROB = 0.3  # besides the most likely mode, modes at least this likely get ellipses
KIND_CAR, KIND_TRUCK = 0, 1
AA_MAX_LINES = 200  # more polylines than this are drawn without anti-aliasing (speed)

# road markings (metres)
EDGE_W_M = 0.20
LINE_W_M = 0.15
MERGE_W_M = 0.30
DASH_M, GAP_M = 3.0, 9.0  # lane lines
MERGE_DASH_M, MERGE_GAP_M = 3.0, 3.0  # beside an auxiliary (acceleration) lane
TAPER_M = 60.0  # the end of an acceleration lane narrows over this length
STOP_LINE_M = 0.4  # width of the stop line where a lane ends at a junction
_DENSIFY_M = 5.0
(_STYLE_NONE, _STYLE_EDGE, _STYLE_SOLID, _STYLE_DASH, _STYLE_MERGE) = range(5)


# ---- what is drawn ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Vehicles:
    """Vehicles to draw, (N,) arrays, row i = vehicle i. World frame: m, rad, m/s, m/s^2.

    accel may be NaN (unknown: no braking colour, no brake lights). kind uses the track
    file's codes (0 car, 1 truck, 2.. others, -1 unknown). ego, collided, threat: bool.
    """

    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    width: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    accel: np.ndarray
    kind: np.ndarray
    ego: np.ndarray
    collided: np.ndarray
    threat: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name, value in vars(self).items():
            if np.shape(value) != (n,):
                raise ValueError(f"Vehicles.{name} must have shape ({n},), got "
                                 f"{np.shape(value)}")

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def speed(self) -> np.ndarray:
        return np.hypot(self.vx, self.vy)

    def take(self, index) -> Vehicles:
        return Vehicles(**{k: v[index] for k, v in vars(self).items()})

    @staticmethod
    def from_state(state, rows: np.ndarray | None = None) -> Vehicles:
        """The active rows of a sim.state.TrafficState (or `rows`, all active)."""
        rows = np.flatnonzero(state.active) if rows is None else rows
        return Vehicles(
            ids=state.ids[rows], x=state.x[rows], y=state.y[rows], heading=state.heading[rows],
            length=state.length[rows], width=state.width[rows], vx=state.vx[rows],
            vy=state.vy[rows], accel=state.accel[rows], kind=state.kind[rows],
            ego=state.role[rows] == 1, collided=state.collided[rows],
            threat=np.zeros(len(rows), bool))


def paint(v: Vehicles, braking_mps2: float = BRAKING_MPS2) -> np.ndarray:
    """(N,) paint codes: collided > ego > threat > braking > truck / car / other."""
    base = np.where(v.kind == KIND_TRUCK, PAINT_TRUCK,
                    np.where((v.kind == KIND_CAR) | (v.kind < 0), PAINT_CAR, PAINT_OTHER))
    with np.errstate(invalid="ignore"):
        braking = v.accel < braking_mps2
    code = np.where(braking, PAINT_BRAKING, base)
    code = np.where(v.threat, PAINT_THREAT, code)
    code = np.where(v.ego, PAINT_EGO, code)
    return np.where(v.collided, PAINT_COLLIDED, code).astype(np.int8)


def ttc_ahead(v: Vehicles, followers: np.ndarray | None = None, reach_m: float = 150.0,
              chunk: int = 256):
    """Time to collision of vehicles with the nearest vehicle ahead in their corridor.

    The corridor is the follower's width plus the other's, along the follower's heading; the
    gap is bumper to bumper; the closing speed is the difference of both velocities along the
    follower's heading (constant speeds, sim.collision.ttc_s). followers: rows to compute
    (default all). Returns ttc (N,) s (inf: not closing, nobody within reach_m ahead, or not
    a follower) and leader (N,) row (-1 none).
    """
    n = v.n
    ttc = np.full(n, np.inf)
    leader = np.full(n, -1, np.int64)
    rows = np.arange(n) if followers is None else np.asarray(followers, np.int64)
    if n < 2 or len(rows) == 0:
        return ttc, leader
    c, s = np.cos(v.heading), np.sin(v.heading)
    pad = reach_m + float(v.length.max())
    box = ((v.x >= v.x[rows].min() - pad) & (v.x <= v.x[rows].max() + pad)
           & (v.y >= v.y[rows].min() - pad) & (v.y <= v.y[rows].max() + pad))
    cand = np.flatnonzero(box)
    cx, cy, cl, cw = v.x[cand], v.y[cand], v.length[cand], v.width[cand]
    for lo in range(0, len(rows), chunk):
        f = rows[lo:lo + chunk]
        fc, fs = c[f, None], s[f, None]
        dx = cx[None, :] - v.x[f, None]
        dy = cy[None, :] - v.y[f, None]
        along = dx * fc + dy * fs
        gap = along - 0.5 * (v.length[f, None] + cl[None, :])
        ok = ((along > 0) & (gap < reach_m)
              & (np.abs(dy * fc - dx * fs) < 0.5 * (v.width[f, None] + cw[None, :]))
              & (cand[None, :] != f[:, None]))
        gap_ok = np.where(ok, gap, np.inf)
        j = np.argmin(gap_ok, axis=1)
        g = gap_ok[np.arange(len(f)), j]
        has = np.isfinite(g)
        lead = cand[j]
        v_f = v.vx[f] * c[f] + v.vy[f] * s[f]
        v_l = v.vx[lead] * c[f] + v.vy[lead] * s[f]
        ttc[f] = np.where(has, ttc_s(np.where(has, g, 0.0), v_f, v_l), np.inf)
        leader[f] = np.where(has, lead, -1)
    return ttc, leader


@dataclass(frozen=True, eq=False)
class Forecasts:
    """Forecasts to draw: a sim.forecast.Prediction (xy (S, K, F, 2) m, prob (S, K),
    optional sigma_m (S, K, F, 2) m) whose sample s belongs to vehicle row rows[s]; one
    predicted step every dt_s seconds."""

    rows: np.ndarray
    prediction: object
    dt_s: float


@dataclass(frozen=True)
class Hud:
    """The numbers in the corner panel. NaN / None / "" hide a line."""

    t_s: float = 0.0
    title: str = ""
    target: str = "ego"  # whose speed, acceleration and TTC are shown (ego or "#id")
    ego_speed_mps: float = math.nan
    ego_accel_mps2: float = math.nan
    action: str = ""
    ttc_s: float = math.inf  # of the ego (or selected vehicle) with the vehicle ahead, now
    min_ttc_s: float = math.nan  # the ego's least TTC so far in this episode (NaN: unknown)
    collisions: int | None = None  # vehicles that have been in a collision so far
    predictor: str = ""
    predictor_ms: float = math.nan
    fps: float | None = None
    sim_speed: float = 1.0
    paused: bool = False
    status: str = ""
    vehicles: int | None = None


@dataclass(frozen=True)
class Timeline:
    """A replay's time bar: from t0_s to t1_s, now at t_s."""

    t0_s: float
    t1_s: float
    t_s: float


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything drawn in one frame. Arrays indexed by vehicle row are aligned with
    `vehicles`: trails (N, T, 2) m oldest first, NaN gaps; truth (N, F, 2) m, the known
    future every truth_dt_s, NaN unknown; ttc_s (N,) s; plan_xy (F, 2) m the ego's chosen
    plan; reacts_to, selected: vehicle rows or -1."""

    vehicles: Vehicles
    road: Road | None = None
    trails: np.ndarray | None = None
    forecasts: Forecasts | None = None
    truth: np.ndarray | None = None
    truth_dt_s: float = 0.1
    plan_xy: np.ndarray | None = None
    reacts_to: int = -1
    ttc_s: np.ndarray | None = None
    selected: int = -1
    lane_signal: np.ndarray | None = None  # (L,) per lane: -1 none, 0 red, 1 amber, 2 green
    hud: Hud | None = None
    timeline: Timeline | None = None
    toast: str = ""


@dataclass(frozen=True)
class View:
    """How the world is looked at: window size, centre and zoom, and what is shown."""

    width_px: int = 1280
    height_px: int = 720
    center_x_m: float = 0.0
    center_y_m: float = 0.0
    px_per_m: float = 7.0
    forecasts: bool = True
    truth: bool = True
    trails: bool = True
    ids: bool = False
    help: bool = False
    hud: bool = True

    MIN_PX_PER_M = 0.05
    MAX_PX_PER_M = 80.0

    def __post_init__(self) -> None:
        if self.width_px < 16 or self.height_px < 16:
            raise ValueError(f"view must be at least 16x16 px, got {self.width_px}x"
                             f"{self.height_px}")
        if not self.MIN_PX_PER_M <= self.px_per_m <= self.MAX_PX_PER_M:
            raise ValueError(f"px_per_m must be in [{self.MIN_PX_PER_M}, "
                             f"{self.MAX_PX_PER_M}], got {self.px_per_m}")

    def to_screen(self, x, y):
        """World metres -> screen pixels (float arrays)."""
        sx = (np.asarray(x) - self.center_x_m) * self.px_per_m + 0.5 * self.width_px
        sy = 0.5 * self.height_px - (np.asarray(y) - self.center_y_m) * self.px_per_m
        return sx, sy

    def to_world(self, sx, sy):
        """Screen pixels -> world metres."""
        x = (np.asarray(sx) - 0.5 * self.width_px) / self.px_per_m + self.center_x_m
        y = (0.5 * self.height_px - np.asarray(sy)) / self.px_per_m + self.center_y_m
        return x, y

    def snapped(self) -> View:
        """The same view with its centre on the pixel grid (what render draws: the cached
        road layer then lines up with everything else exactly)."""
        s = self.px_per_m
        return replace(self, center_x_m=round(self.center_x_m * s) / s,
                       center_y_m=round(self.center_y_m * s) / s)

    def world_rect(self, margin_px: float = 0.0):
        """(xmin, ymin, xmax, ymax) m of what is on screen, widened by margin_px."""
        hw = (0.5 * self.width_px + margin_px) / self.px_per_m
        hh = (0.5 * self.height_px + margin_px) / self.px_per_m
        return (self.center_x_m - hw, self.center_y_m - hh, self.center_x_m + hw,
                self.center_y_m + hh)

    def zoomed(self, factor: float, about_px: tuple[float, float] | None = None) -> View:
        """Zoom by factor keeping the world point under about_px (default: centre) fixed."""
        scale = float(np.clip(self.px_per_m * factor, self.MIN_PX_PER_M, self.MAX_PX_PER_M))
        if about_px is None:
            return replace(self, px_per_m=scale)
        wx, wy = self.to_world(*about_px)
        cx = float(wx) - (about_px[0] - 0.5 * self.width_px) / scale
        cy = float(wy) + (about_px[1] - 0.5 * self.height_px) / scale
        return replace(self, px_per_m=scale, center_x_m=cx, center_y_m=cy)


def timeline_rect(view: View) -> tuple[int, int, int, int]:
    """(x, y, w, h) px of the replay time bar (for drawing and for hit tests)."""
    x0 = 150
    return (x0, view.height_px - 30, max(20, view.width_px - x0 - 20), 14)


# ---- road geometry, computed once per Road ---------------------------------------------------


@dataclass
class _RoadArt:
    """World-frame geometry of a road: per lane the centre (M, 2) densified to <= _DENSIFY_M
    and the outline of its surface (simplified); solid lines (polyline, width_m, colour);
    dash quads (D, 4, 2) with their widths; taper triangles."""

    centres: list[np.ndarray] = field(default_factory=list)
    surfaces: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    solid: list[tuple[np.ndarray, float, tuple]] = field(default_factory=list)
    dashes: np.ndarray = field(default_factory=lambda: np.empty((0, 4, 2)))
    dash_w_m: np.ndarray = field(default_factory=lambda: np.empty(0))
    dash_centres: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))
    dash_ends: np.ndarray = field(default_factory=lambda: np.empty((0, 2, 2)))
    tapers: list[np.ndarray] = field(default_factory=list)
    stop_lines: list[np.ndarray] = field(default_factory=list)  # (4, 2) quads
    stop_lanes: list[int] = field(default_factory=list)  # the lane of each stop line
    junctions: list[np.ndarray] = field(default_factory=list)  # (P, 2) polygons
    signal_lights: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))  # (L, 2)


_ART: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def road_art(road: Road) -> _RoadArt:
    art = _ART.get(road)
    if art is None:
        art = _build_road_art(road)
        _ART[road] = art
    return art


def _densify(road: Road, k: int):
    """Lane k's centre (M, 2), unit left normals (M, 2), stations (M,)."""
    a, b = road.lane_start[k], road.lane_start[k + 1]
    ps = road.ps[a:b]
    s = np.union1d(ps, np.arange(0.0, ps[-1], _DENSIFY_M))
    x = np.interp(s, ps, road.px[a:b])
    y = np.interp(s, ps, road.py[a:b])
    st = np.interp(s, ps, road.station[a:b])
    tx, ty = np.gradient(x), np.gradient(y)
    norm = np.hypot(tx, ty)
    normal = np.stack([-ty / norm, tx / norm], axis=1)
    return np.stack([x, y], axis=1), normal, st


def _distance_to_polyline(pts: np.ndarray, poly: np.ndarray, chunk: int = 1 << 21) -> np.ndarray:
    """(M,) distance of points (M, 2) to a polyline (Q, 2) whose vertices are a few metres
    apart at most (densified lanes): the segments around each point's nearest vertex."""
    if len(poly) < 2:
        return np.hypot(*(pts - poly[0]).T)
    # nearest vertex: first among every 8th vertex, then among the 17 around that one
    coarse = poly[::8]
    near_c = np.empty(len(pts), np.int64)
    step = max(1, chunk // len(coarse))
    for lo in range(0, len(pts), step):
        dx = pts[lo:lo + step, 0:1] - coarse[None, :, 0]
        dy = pts[lo:lo + step, 1:2] - coarse[None, :, 1]
        near_c[lo:lo + step] = np.argmin(dx * dx + dy * dy, axis=1)
    cand = np.clip(near_c[:, None] * 8 + np.arange(-8, 9), 0, len(poly) - 1)
    d2 = ((pts[:, None, :] - poly[cand]) ** 2).sum(axis=2)
    near = cand[np.arange(len(pts)), np.argmin(d2, axis=1)]
    best = np.full(len(pts), np.inf)
    for off in (-2, -1, 0, 1):
        i = np.clip(near + off, 0, len(poly) - 2)
        a, u = poly[i], poly[i + 1] - poly[i]
        t = np.clip(((pts - a) * u).sum(axis=1) / np.maximum((u * u).sum(axis=1), 1e-12),
                    0.0, 1.0)
        best = np.minimum(best, np.hypot(*(pts - a - t[:, None] * u).T))
    return best


def _adjacent(pts: np.ndarray, centre_j: np.ndarray, width_j_m: float,
              tol_m: float = 0.3) -> np.ndarray:
    """(M,) True where points lie on an edge of a lane (half its width from its densified
    centre line)."""
    return np.abs(_distance_to_polyline(pts, centre_j) - 0.5 * width_j_m) < tol_m


def _simplify(pts: np.ndarray, tol_m: float = 0.02) -> np.ndarray:
    """Douglas-Peucker: the vertices of a polyline needed to stay within tol_m of it."""
    n = len(pts)
    if n <= 2:
        return pts
    keep = np.zeros(n, bool)
    keep[[0, n - 1]] = True
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        d = pts[b] - pts[a]
        seg = pts[a + 1:b] - pts[a]
        length = math.hypot(d[0], d[1])
        if length > 1e-12:
            dist = np.abs(seg[:, 0] * d[1] - seg[:, 1] * d[0]) / length
        else:
            dist = np.hypot(seg[:, 0], seg[:, 1])
        i = int(np.argmax(dist))
        if dist[i] > tol_m:
            m = a + 1 + i
            keep[m] = True
            stack += [(a, m), (m, b)]
    return pts[keep]


def _runs(mask: np.ndarray, widen: bool = False):
    """(start, stop) index ranges of the True runs of a bool array; widen: each run takes the
    next vertex too, so that solid lines of different styles meet without a gap."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    stops = np.flatnonzero(d == -1)
    if widen:
        stops = np.minimum(stops + 1, len(mask))
    return list(zip(np.flatnonzero(d == 1), stops))


def _dash_quads(pts: np.ndarray, st: np.ndarray, dash_m: float, gap_m: float, w_m: float):
    """Dashes along a polyline whose vertices sit at increasing stations: (D, 4, 2)."""
    period = dash_m + gap_m
    starts = np.arange(math.ceil(st[0] / period) * period, st[-1], period)
    if len(starts) == 0:
        return np.empty((0, 4, 2))
    ends = np.minimum(starts + dash_m, st[-1])
    p0 = np.stack([np.interp(starts, st, pts[:, 0]), np.interp(starts, st, pts[:, 1])], 1)
    p1 = np.stack([np.interp(ends, st, pts[:, 0]), np.interp(ends, st, pts[:, 1])], 1)
    d = p1 - p0
    length = np.hypot(d[:, 0], d[:, 1])
    keep = length > 0.2
    p0, p1, d, length = p0[keep], p1[keep], d[keep], length[keep]
    n = np.stack([-d[:, 1], d[:, 0]], 1) / length[:, None] * (0.5 * w_m)
    return np.stack([p0 + n, p1 + n, p1 - n, p0 - n], axis=1)


def _edge_style(road: Road, k: int, side: int, pts: np.ndarray, st: np.ndarray,
                boxes: np.ndarray, in_junction: np.ndarray,
                centres: list[np.ndarray]) -> np.ndarray:
    """(M,) _STYLE_* along one edge of lane k (side +1 left, -1 right): an edge line where no
    other lane touches it; where one does, a dashed line if a lane change across it is
    allowed there (wide dashes beside an auxiliary lane), else a solid line; nothing where the
    other lane draws the shared line (the lower index draws) or a taper continues the road."""
    near = int(road.left[k] if side > 0 else road.right[k])
    linked = {int(j) for j in np.flatnonzero((road.right if side > 0 else road.left) == k)}
    linked |= {near} - {-1}
    lo, hi = pts.min(axis=0) - 1.0, pts.max(axis=0) + 1.0
    overlap = np.flatnonzero((boxes[:, 0] <= hi[0]) & (boxes[:, 2] >= lo[0])
                             & (boxes[:, 1] <= hi[1]) & (boxes[:, 3] >= lo[1]) & ~in_junction)
    style = np.full(len(pts), _STYLE_EDGE, np.int8)
    for j in (int(j) for j in overlap if j != k):
        adj = _adjacent(pts, centres[j], float(road.width_m[j]))
        if not adj.any():
            continue
        if j in linked:
            # a lane change across this edge is allowed from k into j, or from j into k
            k_to_j = (near == j) & (st >= road.change_from_m[k]) & (st <= road.change_to_m[k])
            j_side = road.right[j] if side > 0 else road.left[j]
            j_to_k = (j_side == k) & (st >= road.change_from_m[j]) & (st <= road.change_to_m[j])
            aux = LANE_DEAD_END in (road.end_kind[k], road.end_kind[j])
            shared = np.where(k_to_j | j_to_k, _STYLE_MERGE if aux else _STYLE_DASH,
                              _STYLE_SOLID)
        else:  # touching without a link: the centre line between opposite directions
            shared = np.full(len(pts), _STYLE_SOLID, np.int8)
        if j < k:
            shared = np.full(len(pts), _STYLE_NONE, np.int8)  # lane j draws it
        style = np.where(adj, shared, style)
    # the taper beyond the end of an acceleration lane that merges across this edge
    for j in np.flatnonzero(road.end_kind == LANE_DEAD_END):
        j_side = road.right[j] if side > 0 else road.left[j]
        if j_side == k and j != k:
            end_st = road.station_range_m[j, 1]
            style[(st > end_st) & (st < end_st + TAPER_M)] = _STYLE_NONE
    return style


def _junction_fills(centres: list[np.ndarray], edges: list[np.ndarray],
                    in_junction: np.ndarray) -> list[np.ndarray]:
    """Polygons paving each junction box between its connector lanes: per junction (connectors
    whose boxes touch), the radial envelope of the connectors' edges seen from the junction's
    centre, in quarter-degree steps (the outer edges of turning connectors are the kerbs)."""
    lanes = [k for k in np.flatnonzero(in_junction)]
    if not lanes:
        return []
    groups: list[list[int]] = []
    for k in lanes:  # connected components by bounding-box contact
        lo, hi = centres[k].min(axis=0) - 1.0, centres[k].max(axis=0) + 1.0
        hit = [g for g in groups if any(
            np.all(centres[j].min(axis=0) <= hi) and np.all(centres[j].max(axis=0) >= lo)
            for j in g)]
        merged = [k] + [j for g in hit for j in g]
        groups = [g for g in groups if g not in hit] + [merged]
    fills = []
    for g in groups:
        pts = np.concatenate([centres[k] for k in g])
        centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
        d = np.concatenate([edges[k] for k in g]) - centre
        n_bins = 1440
        ang = np.arctan2(d[:, 1], d[:, 0])
        bins = np.floor((ang + np.pi) / (2 * np.pi) * n_bins).astype(np.int64) % n_bins
        r = np.hypot(d[:, 0], d[:, 1])
        far = np.full(n_bins, -1.0)
        np.maximum.at(far, bins, r)
        # per bin the farthest edge point itself (not the bin's mid angle): corners stay sharp
        pick = np.full(n_bins, -1, np.int64)
        hit = r >= far[bins] - 1e-12
        pick[bins[hit]] = np.flatnonzero(hit)
        fills.append(centre + d[pick[pick >= 0]])
    return fills


def _fork_fills(road: Road, centres: list[np.ndarray], in_junction: np.ndarray,
                reach_m: float = 15.0) -> list[np.ndarray]:
    """Polygons between connector lanes that leave the same lane (or enter the same lane),
    over their first (last) reach_m: the wedges the lane surfaces leave open there."""
    succ_start = getattr(road, "succ_start", None)
    if succ_start is None or not in_junction.any():
        return []
    succ_lane = road.succ_lane
    groups = [succ_lane[succ_start[k]:succ_start[k + 1]] for k in range(road.n_lanes)]
    into: dict[int, list[int]] = {}
    for k in np.flatnonzero(in_junction):
        for j in succ_lane[succ_start[k]:succ_start[k + 1]]:
            into.setdefault(int(j), []).append(int(k))
    fills = []
    for lanes, at_start in [(g, True) for g in groups] + [(g, False) for g in into.values()]:
        conn = [int(k) for k in lanes if in_junction[k]]
        for a, b in zip(conn[:-1], conn[1:]):
            pa, pb = centres[a], centres[b]
            if not at_start:
                pa, pb = pa[::-1], pb[::-1]
            la = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pa, axis=0).T))])
            lb = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pb, axis=0).T))])
            fills.append(np.concatenate([pa[la <= reach_m], pb[lb <= reach_m][::-1]]))
    return fills


def _build_road_art(road: Road) -> _RoadArt:
    art = _RoadArt()
    in_junction = getattr(road, "in_junction", None)
    in_junction = (np.zeros(road.n_lanes, bool) if in_junction is None
                   else np.asarray(in_junction, bool))
    geo = [_densify(road, k) for k in range(road.n_lanes)]
    lefts, rights = [], []
    boxes = np.empty((road.n_lanes, 4))
    for k, (c, nrm, _) in enumerate(geo):
        half = 0.5 * road.width_m[k]
        art.centres.append(c)
        lefts.append(c + half * nrm)
        rights.append(c - half * nrm)
        # the lane surface: its outline, simplified (a straight lane is four points)
        art.surfaces.append((_simplify(lefts[-1]), _simplify(rights[-1])))
        both = np.concatenate([lefts[-1], rights[-1]])
        boxes[k] = (*both.min(axis=0), *both.max(axis=0))
    art.junctions = _junction_fills(art.centres, [np.concatenate([a, b]) for a, b in
                                                  zip(lefts, rights)], in_junction)
    art.junctions += [f for f in _fork_fills(road, art.centres, in_junction) if len(f) >= 3]
    art.signal_lights = _signal_lights(road)
    dashes, dash_w = [], []
    for k, (_, nrm, st) in enumerate(geo):
        if in_junction[k]:
            continue  # no lines inside a junction box
        for side in (+1, -1):
            pts = lefts[k] if side > 0 else rights[k]
            style = _edge_style(road, k, side, pts, st, boxes, in_junction, art.centres)
            for a, b in _runs(style == _STYLE_EDGE, widen=True):
                if b - a >= 2:
                    art.solid.append((_simplify(pts[a:b]), EDGE_W_M, EDGE_LINE))
            for a, b in _runs(style == _STYLE_SOLID, widen=True):
                if b - a >= 2:
                    art.solid.append((_simplify(pts[a:b]), LINE_W_M, MARKING))
            for kind, dash, gap, w in ((_STYLE_DASH, DASH_M, GAP_M, LINE_W_M),
                                       (_STYLE_MERGE, MERGE_DASH_M, MERGE_GAP_M, MERGE_W_M)):
                for a, b in _runs(style == kind):
                    if b - a >= 2:
                        q = _dash_quads(pts[a:b], st[a:b], dash, gap, w)
                        dashes.append(q)
                        dash_w.append(np.full(len(q), w))
        # a stop line where the lane ends at a junction
        succ = road.successor[k]
        if succ >= 0 and in_junction[succ]:
            c, n = art.centres[k][-1], nrm[-1]
            t = np.array([n[1], -n[0]])  # along the lane
            half = 0.5 * road.width_m[k]
            art.stop_lines.append(np.stack([c + half * n, c - half * n,
                                            c - half * n - STOP_LINE_M * t,
                                            c + half * n - STOP_LINE_M * t]))
            art.stop_lanes.append(k)
    for j in np.flatnonzero(road.end_kind == LANE_DEAD_END):
        for side in (+1, -1):
            k = road.left[j] if side > 0 else road.right[j]
            if k < 0:
                continue
            end_st = road.station_range_m[j, 1]
            s_k = road.s_at_station(np.array([k]), np.array([min(end_st + TAPER_M,
                                                                 road.station_range_m[k, 1])]))
            ax, ay, _ = road.to_world(np.array([k]), s_k, np.array([-side * 0.5 *
                                                                    road.width_m[k]]))
            near_edge = lefts[j][-1] if side > 0 else rights[j][-1]
            far_edge = rights[j][-1] if side > 0 else lefts[j][-1]
            apex = np.array([ax[0], ay[0]])
            art.tapers.append(np.stack([near_edge, far_edge, apex]))
            art.solid.append((np.stack([far_edge, apex]), EDGE_W_M, EDGE_LINE))
    if dashes:
        art.dashes = np.concatenate(dashes)
        art.dash_w_m = np.concatenate(dash_w)
        art.dash_centres = art.dashes.mean(axis=1)
        art.dash_ends = np.stack([0.5 * (art.dashes[:, 0] + art.dashes[:, 3]),
                                  0.5 * (art.dashes[:, 1] + art.dashes[:, 2])], axis=1)
    return art


# ---- text ------------------------------------------------------------------------------------

_FONTS: dict[tuple[int, bool], pygame.font.Font] = {}
_TEXT: dict[tuple, pygame.Surface] = {}
_TEXT_CACHE_MAX = 1024


def _font(size: int, bold: bool = False) -> pygame.font.Font:
    if not pygame.font.get_init():
        pygame.font.init()
    key = (size, bold)
    f = _FONTS.get(key)
    if f is None:
        f = pygame.font.Font(None, size)
        f.set_bold(bold)
        _FONTS[key] = f
    return f


def text_surface(text: str, size: int = 20, colour=TEXT, bold: bool = False) -> pygame.Surface:
    """An anti-aliased text image (cached)."""
    key = (text, size, tuple(colour), bold)
    surf = _TEXT.get(key)
    if surf is None:
        if len(_TEXT) > _TEXT_CACHE_MAX:
            _TEXT.clear()
        surf = _font(size, bold).render(text, True, colour)
        _TEXT[key] = surf
    return surf


def _panel(surface: pygame.Surface, rect, rgba=PANEL, radius: int = 8) -> None:
    x, y, w, h = (int(v) for v in rect)
    if w <= 0 or h <= 0:
        return
    layer = pygame.Surface((w, h), pygame.SRCALPHA)
    pygame.draw.rect(layer, rgba, (0, 0, w, h), border_radius=radius)
    surface.blit(layer, (x, y))


# ---- drawing ---------------------------------------------------------------------------------


def _mix(colour, base, a: float):
    """colour blended over base with opacity a (opaque drawing that looks translucent)."""
    return tuple(int(round(b + (c - b) * a)) for c, b in zip(colour, base))


_TRAIL_RGB = [_mix(c, ASPHALT, 0.45) for c in PAINT_RGB.tolist()]
_FORECAST_LUT = [_mix(FORECAST, ASPHALT, 0.25 + 0.75 * i / 15) for i in range(16)]


def _ipts(sx: np.ndarray, sy: np.ndarray) -> list:
    return np.stack([sx, sy], axis=-1).round().astype(np.int64).tolist()


def _visible_range(pts: np.ndarray, rect) -> tuple[int, int] | None:
    """Index range [a, b) of a polyline worth drawing: first to last vertex in rect, plus one
    on each side so segments crossing the border are kept."""
    if len(pts) <= 8:
        return 0, len(pts)  # few vertices: draw them all, pygame clips
    xmin, ymin, xmax, ymax = rect
    inside = (pts[:, 0] >= xmin) & (pts[:, 0] <= xmax) & (pts[:, 1] >= ymin) & (pts[:, 1] <= ymax)
    idx = np.flatnonzero(inside)
    if len(idx) == 0:
        # a long segment may cross the view without a vertex inside
        seg_min = np.minimum(pts[:-1], pts[1:])
        seg_max = np.maximum(pts[:-1], pts[1:])
        hit = np.flatnonzero((seg_max[:, 0] >= xmin) & (seg_min[:, 0] <= xmax)
                             & (seg_max[:, 1] >= ymin) & (seg_min[:, 1] <= ymax))
        if len(hit) == 0:
            return None
        return int(hit[0]), int(hit[-1]) + 2
    return max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, len(pts))


def _lod(pts: np.ndarray, scale: float) -> np.ndarray:
    """Every n-th vertex (and the last) so that vertices are >= ~6 px apart on screen."""
    stride = int(6.0 / (_DENSIFY_M * scale))
    if stride <= 1 or len(pts) <= 2:
        return pts
    idx = np.arange(0, len(pts), stride)
    if idx[-1] != len(pts) - 1:
        idx = np.append(idx, len(pts) - 1)
    return pts[idx]


def _clip_line(pts: np.ndarray, rect, scale: float) -> np.ndarray | None:
    r = _visible_range(pts, rect)
    return None if r is None else _lod(pts[r[0]:r[1]], scale)


def _draw_polyline(surface, colour, sx, sy, width_px: int, aa: bool = True) -> None:
    pts = _ipts(sx, sy)
    if len(pts) < 2:
        return
    if width_px <= 1 and aa:
        pygame.draw.aalines(surface, colour, False, pts)
    else:
        pygame.draw.lines(surface, colour, False, pts, max(1, width_px))


def _draw_road(surface, road: Road, view: View) -> None:
    art = road_art(road)
    rect = view.world_rect(margin_px=40)
    scale = view.px_per_m
    xmin, ymin, xmax, ymax = rect
    for left, right in art.surfaces:
        rl, rr = _visible_range(left, rect), _visible_range(right, rect)
        if rl is None and rr is None:
            continue
        left = _lod(left[slice(*rl)], scale) if rl else left[[0, -1]]
        right = _lod(right[slice(*rr)], scale) if rr else right[[0, -1]]
        poly = np.concatenate([left, right[::-1]])
        sx, sy = view.to_screen(poly[:, 0], poly[:, 1])
        pygame.draw.polygon(surface, ASPHALT, _ipts(sx, sy))
    for tri in art.tapers + art.junctions:
        sx, sy = view.to_screen(tri[:, 0], tri[:, 1])
        pygame.draw.polygon(surface, ASPHALT, _ipts(sx, sy))
    for quad in art.stop_lines:
        sx, sy = view.to_screen(quad[:, 0], quad[:, 1])
        pygame.draw.polygon(surface, EDGE_LINE, _ipts(sx, sy))
    if scale < 0.4:
        return  # markings would be sub-pixel noise
    if len(art.dashes) and scale >= 1.2:
        c = art.dash_centres
        vis = np.flatnonzero((c[:, 0] >= xmin) & (c[:, 0] <= xmax) & (c[:, 1] >= ymin)
                             & (c[:, 1] <= ymax))
        if len(vis):
            thick = art.dash_w_m[vis] * scale >= 2.0
            thin = vis[~thick]
            if len(thin):  # a dash thinner than 2 px: a one-pixel line
                e = art.dash_ends[thin]
                sx, sy = view.to_screen(e[..., 0], e[..., 1])
                ends = np.stack([sx, sy], axis=-1).round().astype(np.int64).tolist()
                for p0, p1 in ends:
                    pygame.draw.line(surface, MARKING, p0, p1, 1)
            if thick.any():
                q = art.dashes[vis[thick]]
                sx, sy = view.to_screen(q[..., 0], q[..., 1])
                for quad in np.stack([sx, sy], axis=-1).round().astype(np.int64).tolist():
                    pygame.draw.polygon(surface, MARKING, quad)
    for pts, w_m, colour in art.solid:
        seg = _clip_line(pts, rect, scale)
        if seg is None:
            continue
        sx, sy = view.to_screen(seg[:, 0], seg[:, 1])
        _draw_polyline(surface, colour, sx, sy, int(round(w_m * scale)))


@dataclass
class _Layer:
    """The background and road drawn once over twice the window and reused while the view
    stays inside it (only the zoom or the window size invalidates it)."""

    key: tuple
    surface: pygame.Surface
    cx_px: int  # layer centre, world metres times px_per_m (integers: the pixel grid)
    cy_px: int


_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _blit_road(surface, road: Road, view: View) -> None:
    """Blit the road layer under view (whose centre lies on the pixel grid, see render)."""
    s, w, h = view.px_per_m, view.width_px, view.height_px
    mx, my = w // 2, h // 2
    vx, vy = int(round(view.center_x_m * s)), int(round(view.center_y_m * s))
    layer = _LAYERS.get(road)
    if (layer is None or layer.key != (s, w, h) or abs(vx - layer.cx_px) > mx
            or abs(vy - layer.cy_px) > my):
        big = replace(view, width_px=w + 2 * mx, height_px=h + 2 * my,
                      center_x_m=vx / s, center_y_m=vy / s)
        layer_surface = pygame.Surface((big.width_px, big.height_px))
        if pygame.display.get_init() and pygame.display.get_surface() is not None:
            layer_surface = layer_surface.convert()  # the window's pixel format: fast blits
        layer_surface.fill(BG)
        _draw_road(layer_surface, road, big)
        layer = _Layer((s, w, h), layer_surface, vx, vy)
        _LAYERS[road] = layer
    u0 = vx - layer.cx_px + mx
    v0 = layer.cy_px - vy + my
    surface.blit(layer.surface, (0, 0), (u0, v0, w, h))


def _draw_grid(surface, view: View) -> None:
    """A metric grid for scenes without a road (spacing >= 40 px)."""
    step = next((g for g in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
                 if g * view.px_per_m >= 40), 20000)
    xmin, ymin, xmax, ymax = view.world_rect()
    for gx in np.arange(math.floor(xmin / step) * step, xmax + step, step):
        sx, _ = view.to_screen(gx, 0.0)
        pygame.draw.line(surface, GRID, (int(sx), 0), (int(sx), view.height_px))
    for gy in np.arange(math.floor(ymin / step) * step, ymax + step, step):
        _, sy = view.to_screen(0.0, gy)
        pygame.draw.line(surface, GRID, (0, int(sy)), (view.width_px, int(sy)))


def visible_vehicles(v: Vehicles, view: View) -> np.ndarray:
    """Rows of the vehicles (partly) on screen."""
    xmin, ymin, xmax, ymax = view.world_rect(margin_px=20)
    r = 0.5 * np.hypot(v.length, v.width)
    return np.flatnonzero((v.x + r >= xmin) & (v.x - r <= xmax) & (v.y + r >= ymin)
                          & (v.y - r <= ymax))


def _local_quads(v: Vehicles, rows, f0, f1, w_frac):
    """(n, 4, 2) world corners of a part of each box: from f0 to f1 of the length (-0.5 rear,
    +0.5 front), w_frac of the width."""
    c, s = np.cos(v.heading[rows]), np.sin(v.heading[rows])
    L, W = v.length[rows], v.width[rows] * w_frac
    a0, a1 = f0 * L, f1 * L
    hw = 0.5 * W
    lx, ly = -s * hw, c * hw
    xs = np.stack([v.x[rows] + a1 * c + lx, v.x[rows] + a1 * c - lx, v.x[rows] + a0 * c - lx,
                   v.x[rows] + a0 * c + lx], axis=-1)
    ys = np.stack([v.y[rows] + a1 * s + ly, v.y[rows] + a1 * s - ly, v.y[rows] + a0 * s - ly,
                   v.y[rows] + a0 * s + ly], axis=-1)
    return xs, ys


def _draw_vehicles(surface, v: Vehicles, codes: np.ndarray, rows: np.ndarray,
                   view: View) -> None:
    if len(rows) == 0:
        return
    corners = box_corners(v.x[rows], v.y[rows], v.heading[rows], v.length[rows], v.width[rows])
    sx, sy = view.to_screen(corners[..., 0], corners[..., 1])
    body = np.stack([sx, sy], axis=-1).round().astype(np.int64).tolist()
    colours = PAINT_RGB[codes[rows]].tolist()
    detail = view.px_per_m >= 3.0
    small = view.px_per_m * float(np.min(v.width[rows])) < 3.0
    for i, pts in enumerate(body):
        col = colours[i]
        if small:
            pygame.draw.polygon(surface, col, pts)
        else:
            pygame.gfxdraw.filled_polygon(surface, pts, col)
            pygame.gfxdraw.aapolygon(surface, pts, col)
    if not detail:
        return
    truck = v.kind[rows] == KIND_TRUCK
    # cabs of trucks: a lighter front part, and a dark line between cab and trailer
    tr = rows[truck]
    if len(tr):
        cab_f0 = 0.5 - np.minimum(2.4 / v.length[tr], 0.3)
        xs, ys = _local_quads(v, tr, cab_f0, 0.5, 1.0)
        csx, csy = view.to_screen(xs, ys)
        cab = np.stack([csx, csy], axis=-1).round().astype(np.int64).tolist()
        for i, pts in zip(np.flatnonzero(truck), cab):
            pygame.gfxdraw.filled_polygon(surface, pts, _mix((235, 238, 242), colours[i], 0.35))
            pygame.draw.line(surface, (40, 44, 52), pts[2], pts[3], max(1, int(view.px_per_m
                                                                             * 0.25)))
    # windscreens: a dark band behind the front (cars: at 58-80 % of the length from the rear)
    f0 = np.where(truck, 0.5 - np.minimum(0.7 / v.length[rows], 0.1), 0.08)
    f1 = np.where(truck, 0.5 - np.minimum(0.25 / v.length[rows], 0.04), 0.28)
    xs, ys = _local_quads(v, rows, f0, f1, 0.8)
    wsx, wsy = view.to_screen(xs, ys)
    screens = np.stack([wsx, wsy], axis=-1).round().astype(np.int64).tolist()
    for i, pts in enumerate(screens):
        pygame.gfxdraw.filled_polygon(surface, pts, _mix((25, 30, 40), colours[i], 0.75))
    # brake lights
    with np.errstate(invalid="ignore"):
        braking = np.flatnonzero(v.accel[rows] < BRAKE_LIGHT_MPS2)
    if len(braking):
        br = rows[braking]
        for side in (+1, -1):
            xs, ys = _local_quads(v, br, -0.5, -0.5 + np.minimum(0.35 / v.length[br], 0.1),
                                  0.3)
            off = side * 0.3 * v.width[br]
            c, s = np.cos(v.heading[br]), np.sin(v.heading[br])
            xs = xs + (-s * off)[:, None]
            ys = ys + (c * off)[:, None]
            bsx, bsy = view.to_screen(xs, ys)
            for pts in np.stack([bsx, bsy], axis=-1).round().astype(np.int64).tolist():
                pygame.draw.polygon(surface, BRAKE_LIGHT, pts)


def _screen_paths(paths: np.ndarray, view: View):
    """(n, T, 2) world paths with NaN gaps -> per path a list of int screen points (valid
    steps only)."""
    ok = np.isfinite(paths[..., 0]) & np.isfinite(paths[..., 1])
    sx, sy = view.to_screen(np.where(ok, paths[..., 0], 0.0), np.where(ok, paths[..., 1], 0.0))
    pts = np.stack([sx, sy], axis=-1).round().astype(np.int64).tolist()
    full = ok.all(axis=1).tolist()
    ok_l = ok.tolist()
    return [p if f else [q for q, o in zip(p, m) if o] for p, f, m in zip(pts, full, ok_l)]


def _draw_trails(surface, scene: Scene, codes, rows, view: View) -> None:
    trails = scene.trails[rows]
    n_t = trails.shape[1]
    every = 2 if view.px_per_m >= 4 else 5
    if n_t > every:
        trails = trails[:, np.arange(n_t - 1, -1, -every)[::-1]]
    width = 2 if view.px_per_m >= 3 else 1
    aa = width == 1 and len(rows) <= AA_MAX_LINES
    for pts, code in zip(_screen_paths(trails, view), codes[rows].tolist()):
        if len(pts) >= 2:
            if aa:
                pygame.draw.aalines(surface, _TRAIL_RGB[code], False, pts)
            else:
                pygame.draw.lines(surface, _TRAIL_RGB[code], False, pts, width)


def _whole_second_steps(n_steps: int, dt_s: float) -> np.ndarray:
    """Indices f (0-based, step f is (f+1) dt_s ahead) that fall on whole seconds."""
    t = dt_s * np.arange(1, n_steps + 1)
    return np.flatnonzero(np.abs(t - np.round(t)) < 1e-6 * max(1.0, dt_s * n_steps))


def _path_steps(f_n: int, dt_s: float, scale: float, marks: np.ndarray) -> np.ndarray:
    """Indices of the predicted steps to draw: every step when zoomed in, fewer when zoomed
    out (lines stay smooth on screen), always the whole-second marks and the last step."""
    every_s = 0.1 if scale >= 12 else 0.2 if scale >= 4 else 0.5
    stride = max(1, int(round(every_s / dt_s)))
    return np.unique(np.concatenate([np.arange(stride - 1, f_n, stride), [0, f_n - 1], marks]))


def _draw_ellipses(surface, cx, cy, rx, ry, alpha, view: View) -> None:
    """Translucent ellipses (n,) px, drawn through an overlay only as large as they are."""
    x0 = max(0, int(np.floor((cx - rx).min())) - 2)
    y0 = max(0, int(np.floor((cy - ry).min())) - 2)
    x1 = min(view.width_px, int(np.ceil((cx + rx).max())) + 3)
    y1 = min(view.height_px, int(np.ceil((cy + ry).max())) + 3)
    if x1 <= x0 or y1 <= y0:
        return
    layer = pygame.Surface((x1 - x0, y1 - y0), pygame.SRCALPHA)
    rects = np.stack([cx - rx - x0, cy - ry - y0, 2 * rx + 1, 2 * ry + 1], axis=1).astype(
        np.int64).tolist()
    alpha = alpha.tolist()
    for rect, a in zip(rects, alpha):
        pygame.draw.ellipse(layer, (*FORECAST, a), rect)
    for rect, a in zip(rects, alpha):
        pygame.draw.ellipse(layer, (*FORECAST, min(255, 3 * a)), rect, 1)
    surface.blit(layer, (x0, y0))


def _draw_forecasts(surface, fc: Forecasts, visible: np.ndarray, n_vehicles: int,
                    view: View) -> None:
    """Every mode as a line from the vehicle whose width and opacity grow with its
    probability (the most likely on top), dots at whole seconds on the most likely mode, and
    2-sigma ellipses at whole seconds for the most likely mode and any other with prob >=
    ELLIPSE_MIN_PROB."""
    pred = fc.prediction
    is_vis = np.zeros(n_vehicles, bool)
    is_vis[visible] = True
    rows = np.asarray(fc.rows)
    samples = np.flatnonzero(is_vis[rows])
    if len(samples) == 0:
        return
    xy = np.asarray(pred.xy)[samples]
    prob = np.asarray(pred.prob)[samples]
    n_s, n_k, f_n, _ = xy.shape
    scale = view.px_per_m
    marks = _whole_second_steps(f_n, fc.dt_s)
    keep = _path_steps(f_n, fc.dt_s, scale, marks)
    sx, sy = view.to_screen(xy[..., keep, 0], xy[..., keep, 1])
    mark_at = np.searchsorted(keep, marks)
    sigma = getattr(pred, "sigma_m", None)
    if sigma is not None and len(marks):
        sig = np.asarray(sigma)[samples][:, :, marks] * (ELLIPSE_SIGMA * scale)
        top = prob >= prob.max(axis=1, keepdims=True)
        big = ((top | (prob >= ELLIPSE_MIN_PROB))[..., None]
               & ((sig[..., 0] >= 1.0) | (sig[..., 1] >= 1.0)))
        if big.any():
            s_i, k_i, m_i = np.nonzero(big)
            _draw_ellipses(surface, sx[s_i, k_i, mark_at[m_i]], sy[s_i, k_i, mark_at[m_i]],
                           sig[s_i, k_i, m_i, 0], sig[s_i, k_i, m_i, 1],
                           (30 + 40 * prob[s_i, k_i]).astype(np.int64), view)
    pts = np.stack([sx, sy], axis=-1)  # float pixels: pygame takes them as they are
    order = np.argsort(prob, axis=1, kind="stable").tolist()
    pmax = np.maximum(prob.max(axis=1, keepdims=True), 1e-12)
    level = np.clip(np.round(15 * prob / pmax), 0, 15).astype(np.int64).tolist()
    width = (1 + np.round(2.0 * prob)).astype(np.int64).tolist() if scale >= 3 else None
    aa = n_s * n_k <= AA_MAX_LINES
    dot = 2 if scale < 8 else 3
    lines, aalines, circle = pygame.draw.lines, pygame.draw.aalines, pygame.draw.circle
    marks_l = mark_at.tolist()
    # the most likely mode fades with the horizon, one piece per second (when few lines)
    fade = aa and len(marks_l) >= 2
    cuts = [0, *marks_l[:-1], len(keep) - 1]
    fade_lv = np.linspace(1.0, 0.45, len(cuts) - 1).tolist()
    for s, pts_s in enumerate(pts):
        top_k = order[s][-1]
        for k in order[s]:
            colour = _FORECAST_LUT[level[s][k]]
            w = width[s][k] if width is not None else 1
            if k == top_k and fade:
                for (a, b), f in zip(zip(cuts[:-1], cuts[1:]), fade_lv):
                    c = _FORECAST_LUT[int(round(level[s][k] * f))]
                    if w <= 1:
                        aalines(surface, c, False, pts_s[k][a:b + 1])
                    else:
                        lines(surface, c, False, pts_s[k][a:b + 1], w)
            elif w <= 1 and aa:
                aalines(surface, colour, False, pts_s[k])
            else:
                lines(surface, colour, False, pts_s[k], w)
        if scale >= 2.0:
            top = pts_s[top_k]
            for m in marks_l[:-1]:
                circle(surface, FORECAST, top[m], dot)
            if marks_l:
                circle(surface, FORECAST, top[marks_l[-1]], dot + 2, 1)


def _draw_truth(surface, truth: np.ndarray, dt_s: float, rows: np.ndarray, view: View) -> None:
    marks = _whole_second_steps(truth.shape[1], dt_s)
    for r in rows.tolist():
        tr = truth[r]
        ok = np.isfinite(tr[:, 0])
        if ok.sum() < 2:
            continue
        sx, sy = view.to_screen(tr[:, 0], tr[:, 1])
        pts = _ipts(sx[ok], sy[ok])
        pygame.draw.aalines(surface, TRUTH, False, pts)
        if view.px_per_m >= 2.0:
            for m in marks[ok[marks]].tolist():
                c = (int(sx[m]), int(sy[m]))
                pygame.draw.circle(surface, TRUTH, c, 3 if view.px_per_m >= 8 else 2, 1)


def _draw_plan(surface, plan_xy: np.ndarray, view: View) -> None:
    sx, sy = view.to_screen(plan_xy[:, 0], plan_xy[:, 1])
    w = max(2, int(round(0.6 * view.px_per_m)))
    pygame.draw.lines(surface, _mix(PAINT_RGB[PAINT_EGO].tolist(), ASPHALT, 0.55), False,
                      _ipts(sx, sy), w)


SIGNAL_RGB = {0: (235, 50, 50), 1: (255, 190, 40), 2: (40, 210, 110)}  # red, amber, green


SIGNAL_LIGHT_M = 0.5  # radius of a connector's signal light


def _signal_lights(road: Road) -> np.ndarray:
    """(L, 2) where each connector lane's signal light sits: just inside the junction at its
    start, shifted left / right for left / right turns so the lights of one approach lane sit
    side by side; NaN for other lanes."""
    out = np.full((road.n_lanes, 2), np.nan)
    in_junction = getattr(road, "in_junction", None)
    if in_junction is None:
        return out
    turn = np.asarray(getattr(road, "turn", np.full(road.n_lanes, -1)))
    for k in np.flatnonzero(in_junction):
        a = road.lane_start[k]
        h = road.seg_heading[a]
        t, n = np.array([math.cos(h), math.sin(h)]), np.array([-math.sin(h), math.cos(h)])
        shift = {1: 0.32, 2: -0.32}.get(int(turn[k]), 0.0) * road.width_m[k]
        out[k] = np.array([road.px[a], road.py[a]]) + 1.3 * t + shift * n
    return out


def _draw_signals(surface, road: Road, lane_signal: np.ndarray, view: View) -> None:
    """Signals (sim.intersection SIG_* codes per lane): a light at the start of each
    connector lane that has one; an approach lane with one gets its stop line coloured."""
    art = road_art(road)
    sig = np.asarray(lane_signal)
    for quad, lane in zip(art.stop_lines, art.stop_lanes):
        code = int(sig[lane]) if lane < len(sig) else -1
        if code in SIGNAL_RGB:
            back = quad[3] - quad[0]  # the bar, three stop lines deep, upstream of the line
            bar = np.stack([quad[0], quad[1], quad[2] + 2 * back, quad[3] + 2 * back])
            sx, sy = view.to_screen(bar[:, 0], bar[:, 1])
            pygame.draw.polygon(surface, SIGNAL_RGB[code], _ipts(sx, sy))
    lights = art.signal_lights
    n = min(len(sig), len(lights))
    show = np.flatnonzero(np.isin(sig[:n], list(SIGNAL_RGB)) & np.isfinite(lights[:n, 0]))
    if len(show):
        sx, sy = view.to_screen(lights[show, 0], lights[show, 1])
        r = max(3, int(round(SIGNAL_LIGHT_M * view.px_per_m)))
        for x, y, code in zip(sx.round().astype(int).tolist(), sy.round().astype(int).tolist(),
                              sig[show].tolist()):
            pygame.gfxdraw.filled_circle(surface, x, y, r + 1, (20, 22, 26))
            pygame.gfxdraw.filled_circle(surface, x, y, r, SIGNAL_RGB[code])
            pygame.gfxdraw.aacircle(surface, x, y, r, SIGNAL_RGB[code])


def _ring(surface, v: Vehicles, row: int, view: View, colour, pad_m: float = 0.8) -> None:
    cx, cy = view.to_screen(v.x[row], v.y[row])
    r = max(6, int((0.5 * float(v.length[row]) + pad_m) * view.px_per_m))
    pygame.draw.circle(surface, colour, (int(cx), int(cy)), r, 2)


def _draw_ttc_tags(surface, v: Vehicles, ttc: np.ndarray, rows: np.ndarray, view: View) -> None:
    warn = rows[ttc[rows] < TTC_WARN_S]
    for r in warn.tolist():
        colour = DANGER if ttc[r] < TTC_DANGER_S else WARN
        sx, sy = view.to_screen(v.x[r], v.y[r])
        img = text_surface(f"TTC {ttc[r]:.1f} s", 17, colour, bold=True)
        off = int(0.5 * float(v.width[r]) * view.px_per_m) + 6
        pos = (int(sx) - img.get_width() // 2, int(sy) - off - img.get_height())
        _panel(surface, (pos[0] - 3, pos[1] - 1, img.get_width() + 6, img.get_height() + 2),
               (14, 16, 20, 170), 4)
        surface.blit(img, pos)


def _draw_ids(surface, v: Vehicles, rows: np.ndarray, view: View) -> None:
    for r in rows.tolist():
        sx, sy = view.to_screen(v.x[r], v.y[r])
        img = text_surface(str(int(v.ids[r])), 15, TEXT)
        off = int(0.5 * float(v.width[r]) * view.px_per_m) + 2
        surface.blit(img, (int(sx) - img.get_width() // 2, int(sy) + off))


def _ttc_colour(t: float):
    return DANGER if t < TTC_DANGER_S else WARN if t < TTC_WARN_S else TEXT


def _fmt_ttc(t: float) -> str:
    return "-" if not math.isfinite(t) else f"{t:.1f} s"


def _draw_hud(surface, hud: Hud, view: View) -> None:
    rows: list[tuple[str, str, tuple]] = []
    state = "PAUSED" if hud.paused else f"x{hud.sim_speed:g}"
    rows.append(("time", f"{hud.t_s:7.1f} s   {state}", WARN if hud.paused else TEXT))
    if math.isfinite(hud.ego_speed_mps):
        acc = (f"   {hud.ego_accel_mps2:+.1f} m/s²" if math.isfinite(hud.ego_accel_mps2)
               else "")
        rows.append((hud.target or "ego", f"{hud.ego_speed_mps * 3.6:5.0f} km/h{acc}", TEXT))
    if hud.action:
        rows.append(("action", hud.action, TEXT))
    if math.isfinite(hud.ego_speed_mps):
        rows.append(("TTC", _fmt_ttc(hud.ttc_s), _ttc_colour(hud.ttc_s)))
    if not math.isnan(hud.min_ttc_s):
        rows.append(("min TTC", _fmt_ttc(hud.min_ttc_s), _ttc_colour(hud.min_ttc_s)))
    if hud.collisions is not None:
        rows.append(("collided", str(hud.collisions), DANGER if hud.collisions else TEXT))
    if hud.vehicles is not None:
        rows.append(("vehicles", str(hud.vehicles), TEXT))
    if hud.predictor:
        ms = f"   {hud.predictor_ms:.1f} ms" if math.isfinite(hud.predictor_ms) else ""
        rows.append(("predictor", f"{hud.predictor}{ms}", TEXT))
    if hud.fps is not None:
        rows.append(("FPS", f"{hud.fps:.0f}", TEXT))
    size = 19
    title = text_surface(hud.title, 20, TEXT, bold=True) if hud.title else None
    labels = [text_surface(a, size, TEXT_DIM) for a, _, _ in rows]
    values = [text_surface(b, size, c) for _, b, c in rows]
    lw = max(s.get_width() for s in labels) + 14
    vw = max(s.get_width() for s in values)
    line = 22
    width = max(lw + vw, title.get_width() if title else 0) + 24
    height = len(rows) * line + 16 + (26 if title else 0)
    _panel(surface, (10, 10, width, height))
    y = 18
    if title:
        surface.blit(title, (22, y))
        y += 26
    for lab, val in zip(labels, values):
        surface.blit(lab, (22, y))
        surface.blit(val, (22 + lw, y))
        y += line
    if hud.status:
        img = text_surface(hud.status, 20, WARN, bold=True)
        x = view.width_px // 2 - img.get_width() // 2
        _panel(surface, (x - 10, 10, img.get_width() + 20, img.get_height() + 10))
        surface.blit(img, (x, 15))
    hint = text_surface("H  help", 17, TEXT_DIM)
    surface.blit(hint, (view.width_px - hint.get_width() - 12, 12))


def _draw_timeline(surface, tl: Timeline, view: View) -> None:
    x, y, w, h = timeline_rect(view)
    _panel(surface, (8, y - 10, view.width_px - 16, h + 20))
    span = max(tl.t1_s - tl.t0_s, 1e-9)
    frac = float(np.clip((tl.t_s - tl.t0_s) / span, 0.0, 1.0))
    pygame.draw.rect(surface, (60, 66, 76), (x, y, w, h), border_radius=h // 2)
    pygame.draw.rect(surface, _mix(ACCENT, (60, 66, 76), 0.7), (x, y, max(h, int(w * frac)), h),
                     border_radius=h // 2)
    knob = (x + int(w * frac), y + h // 2)
    pygame.gfxdraw.filled_circle(surface, *knob, h // 2 + 3, TEXT)
    pygame.gfxdraw.aacircle(surface, *knob, h // 2 + 3, TEXT)
    label = text_surface(f"{tl.t_s - tl.t0_s:6.1f} / {span:.1f} s", 18, TEXT)
    surface.blit(label, (x - label.get_width() - 12, y + h // 2 - label.get_height() // 2))


def _draw_scale_bar(surface, view: View, bottom: int) -> None:
    target_px = 110
    metres = next((m for m in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
                   if m * view.px_per_m >= target_px * 0.6), 10000)
    px = int(metres * view.px_per_m)
    x0, y0 = 16, bottom
    pygame.draw.line(surface, TEXT_DIM, (x0, y0), (x0 + px, y0), 2)
    for xe in (x0, x0 + px):
        pygame.draw.line(surface, TEXT_DIM, (xe, y0 - 5), (xe, y0 + 1), 2)
    label = text_surface(f"{metres} m", 16, TEXT_DIM)
    surface.blit(label, (x0 + px + 6, y0 - label.get_height() + 3))


HELP_LINES = (
    ("Space", "pause / resume"),
    ("Right / Left", "step forward / back (pauses)"),
    ("+ / -", "simulation speed"),
    ("wheel, drag", "zoom, pan"),
    ("click, Tab", "select a vehicle, next vehicle"),
    ("F", "follow the ego (or the selected vehicle)"),
    ("P", "forecasts on / off"),
    ("G", "true future on / off"),
    ("T", "trails on / off"),
    ("I", "vehicle ids on / off"),
    ("R", "restart"),
    ("S", "screenshot to PNG"),
    ("Home / End", "go to the start / end (replay)"),
    ("timeline", "click or drag to seek (replay)"),
    ("H", "this help"),
    ("Esc", "quit"),
)


def _draw_help(surface, view: View) -> None:
    """The controls and a colour legend: side by side when the window is wide enough."""
    keys = [text_surface(k, 19, ACCENT, bold=True) for k, _ in HELP_LINES]
    texts = [text_surface(t, 19, TEXT) for _, t in HELP_LINES]
    legend = [(PAINT_RGB[i].tolist(), PAINT_NAMES[i]) for i in
              (PAINT_EGO, PAINT_CAR, PAINT_TRUCK, PAINT_BRAKING, PAINT_THREAT, PAINT_COLLIDED)]
    legend += [(list(FORECAST), "forecast: width and strength = probability"),
               (list(FORECAST), "ellipses: 2 sigma at each whole second"),
               (list(TRUTH), "true future (replay)"), (list(WARN), "TTC below 3 s"),
               (list(SELECT), "ring: selected vehicle")]
    names = [text_surface(n, 18, TEXT) for _, n in legend]
    kw = max(s.get_width() for s in keys) + 18
    line = 24
    left_w = kw + max(s.get_width() for s in texts)
    right_w = 36 + max(s.get_width() for s in names)
    side = view.width_px >= left_w + right_w + 120
    if side:
        width = left_w + right_w + 80
        height = max(len(HELP_LINES), len(legend) + 1) * line + 70
    else:
        width = max(left_w, right_w) + 40
        height = (len(HELP_LINES) + len(legend) + 1) * line + 80
    x0 = max(4, view.width_px // 2 - width // 2)
    y0 = max(4, view.height_px // 2 - height // 2)
    _panel(surface, (x0, y0, width, height), (14, 16, 20, 235), 12)
    surface.blit(text_surface("Controls", 22, TEXT, bold=True), (x0 + 20, y0 + 14))
    y = y0 + 46
    for k, t in zip(keys, texts):
        surface.blit(k, (x0 + 20, y))
        surface.blit(t, (x0 + 20 + kw, y))
        y += line
    if side:
        lx, y = x0 + 40 + left_w + 20, y0 + 14
    else:
        lx, y = x0 + 20, y + 12
    surface.blit(text_surface("Colours", 22, TEXT, bold=True), (lx, y))
    y += 32
    for (colour, _), img in zip(legend, names):
        pygame.draw.rect(surface, colour, (lx, y + 3, 26, 12), border_radius=3)
        surface.blit(img, (lx + 36, y))
        y += line


def _draw_toast(surface, text: str, view: View, bottom: int) -> None:
    img = text_surface(text, 19, TEXT)
    x = view.width_px // 2 - img.get_width() // 2
    y = bottom - img.get_height() - 8
    _panel(surface, (x - 12, y - 6, img.get_width() + 24, img.get_height() + 12))
    surface.blit(img, (x, y))


def render(scene: Scene, view: View, surface: pygame.Surface | None = None) -> pygame.Surface:
    """Draw scene as seen through view onto surface (a new width x height one by default)."""
    size = (view.width_px, view.height_px)
    if surface is None or surface.get_size() != size:
        surface = pygame.Surface(size)
    view = view.snapped()
    if scene.road is not None:
        _blit_road(surface, scene.road, view)
    else:
        surface.fill(BG)
        _draw_grid(surface, view)
    if scene.road is not None and scene.lane_signal is not None:
        _draw_signals(surface, scene.road, scene.lane_signal, view)
    v = scene.vehicles
    codes = paint(v)
    vis = visible_vehicles(v, view)
    if view.trails and scene.trails is not None:
        _draw_trails(surface, scene, codes, vis, view)
    if view.forecasts and scene.forecasts is not None:
        _draw_forecasts(surface, scene.forecasts, vis, v.n, view)
    if view.truth and scene.truth is not None:
        _draw_truth(surface, scene.truth, scene.truth_dt_s, vis, view)
    if scene.plan_xy is not None and len(scene.plan_xy) > 1:
        _draw_plan(surface, scene.plan_xy, view)
    _draw_vehicles(surface, v, codes, vis, view)
    if 0 <= scene.reacts_to < v.n:
        _ring(surface, v, scene.reacts_to, view, PAINT_RGB[PAINT_THREAT].tolist())
    if 0 <= scene.selected < v.n:
        _ring(surface, v, scene.selected, view, SELECT)
    if scene.ttc_s is not None:
        _draw_ttc_tags(surface, v, scene.ttc_s, vis, view)
    if view.ids:
        _draw_ids(surface, v, vis, view)
    bottom = view.height_px - 12
    if scene.timeline is not None:
        _draw_timeline(surface, scene.timeline, view)
        bottom = timeline_rect(view)[1] - 18
    if view.hud:
        _draw_scale_bar(surface, view, bottom)
        if scene.hud is not None:
            _draw_hud(surface, scene.hud, view)
    if scene.toast:
        _draw_toast(surface, scene.toast, view, bottom - 10)
    if view.help:
        _draw_help(surface, view)
    return surface


def save_png(surface: pygame.Surface, path: str | os.PathLike) -> None:
    """Write surface as a PNG atomically (temporary file in the same folder, then rename)."""
    with atomic_path(path, suffix=".png") as tmp:
        pygame.image.save(surface, str(tmp))
