"""Road geometry: lanes as centre-line polylines, and world <-> lane (Frenet) coordinates.

All lanes of a road are flattened into one set of vertex arrays (V,) with per-lane offsets
`lane_start` (L+1,). Lane indices grow to the left of the direction of travel on highways
(lane 0 is the rightmost main lane); an on-ramp's acceleration lane is appended last.

Every vertex also carries a `station`: the arc length of the road's reference line at the
point, so positions on parallel lanes can be ordered and compared (gaps, neighbours).

A lane may continue into several successor lanes (CSR arrays `succ_start`, `succ_lane`), e.g.
an intersection approach into its left, straight and right connectors; `successor` is the
first of them (-1 none). Lanes flagged `in_junction` lie inside a junction box; their `turn`
(TURN_*) follows from their geometry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

LANE_EXIT = 0  # vehicles leave the road at the end of the lane
LANE_DEAD_END = 1  # the lane ends: vehicles must leave it sideways before (acceleration lane)

_LANE_KEY_M = 1.0e7  # separates lanes in flattened search keys; larger than any lane
MAX_COORD_M = 1.0e7  # vertex coordinates within this (UTM northings fit)
MAX_STATION_M = 0.5 * _LANE_KEY_M  # stations within this (the search keys need it)
MAX_LANE_WIDTH_M = 10.0

TURN_NONE = -1  # not a junction lane / no route preference
TURN_STRAIGHT = 0
TURN_LEFT = 1
TURN_RIGHT = 2
TURN_NAMES = ("straight", "left", "right")


@dataclass(frozen=True, eq=False)
class Road:
    """Lanes as polylines. Vertex arrays are (V,), lane arrays (L,); metres and radians."""

    kind: str
    lane_start: np.ndarray  # (L+1,) int64, vertices of lane k are lane_start[k]:lane_start[k+1]
    px: np.ndarray  # (V,) float64 vertex x, m
    py: np.ndarray  # (V,) float64 vertex y, m
    station: np.ndarray  # (V,) float64 reference-line arc length at the vertex, m
    width_m: np.ndarray  # (L,) float64 lane width, m
    left: np.ndarray  # (L,) int64 lane to the left, -1 none
    right: np.ndarray  # (L,) int64 lane to the right, -1 none
    successor: np.ndarray  # (L,) int64 lane that continues this one, -1 none
    end_kind: np.ndarray  # (L,) int8 LANE_EXIT or LANE_DEAD_END
    entry: np.ndarray  # (L,) bool, traffic enters the road at the start of this lane
    change_from_m: np.ndarray  # (L,) float64 station from which leaving the lane is allowed
    change_to_m: np.ndarray  # (L,) float64 station up to which leaving the lane is allowed
    params: dict = field(default_factory=dict)  # builder parameters, for display only
    # several successors per lane (CSR): lane k continues into
    # succ_lane[succ_start[k]:succ_start[k+1]]; None: derived from `successor`
    succ_start: np.ndarray | None = None  # (L+1,) int64
    succ_lane: np.ndarray | None = None  # (E,) int64
    in_junction: np.ndarray | None = None  # (L,) bool, lane inside a junction box (connector)

    def __post_init__(self) -> None:
        n_lanes = len(self.width_m)
        if len(self.lane_start) != n_lanes + 1:
            raise ValueError("lane_start must have one entry more than there are lanes")
        if np.any(np.diff(self.lane_start) < 2):
            raise ValueError("every lane needs at least two vertices")
        for name in ("left", "right", "successor", "end_kind", "entry",
                     "change_from_m", "change_to_m"):
            if len(getattr(self, name)) != n_lanes:
                raise ValueError(f"{name} must have one entry per lane")
        n_vertices = int(self.lane_start[-1])
        for name in ("px", "py", "station"):
            arr = getattr(self, name)
            if arr.shape != (n_vertices,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be {n_vertices} finite numbers")
        lane_of = np.repeat(np.arange(n_lanes), np.diff(self.lane_start))

        def first(bad: np.ndarray, what: str) -> None:
            if bad.any():
                raise ValueError(f"lane {int(lane_of[np.flatnonzero(bad)[0]])}: {what}")

        first((np.abs(self.px) > MAX_COORD_M) | (np.abs(self.py) > MAX_COORD_M),
              f"x, y must be within +-{MAX_COORD_M:g} m")
        first(np.abs(self.station) > MAX_STATION_M,
              f"station must be within +-{MAX_STATION_M:g} m")
        seg = np.hypot(np.diff(self.px), np.diff(self.py))
        inner = np.ones(n_vertices - 1, bool)
        inner[self.lane_start[1:-1] - 1] = False
        first(np.append(inner & (seg <= 1e-9), False), "two coincident consecutive vertices")
        first(np.append(inner & (np.diff(self.station) <= 0.0), False),
              "station must increase along the lane")
        width = np.asarray(self.width_m, float)
        bad = np.flatnonzero(~((width > 0.0) & (width <= MAX_LANE_WIDTH_M)))  # NaN too
        if len(bad):
            raise ValueError(f"lane {bad[0]}: width_m must be in (0, {MAX_LANE_WIDTH_M:g}] m, "
                             f"got {float(width[bad[0]]):g}")
        for links in (self.left, self.right, self.successor):
            if np.any((links < -1) | (links >= n_lanes)):
                raise ValueError("lane links must be -1 or a lane index")
        if (self.succ_start is None) != (self.succ_lane is None):
            raise ValueError("succ_start and succ_lane go together")
        if self.succ_start is None:
            has = self.successor >= 0
            object.__setattr__(self, "succ_start",
                               np.concatenate([[0], np.cumsum(has)]).astype(np.int64))
            object.__setattr__(self, "succ_lane", self.successor[has].astype(np.int64))
        start, succ = self.succ_start, self.succ_lane
        if (len(start) != n_lanes + 1 or start[0] != 0 or np.any(np.diff(start) < 0)
                or start[-1] != len(succ)):
            raise ValueError("succ_start must be (lanes + 1,) offsets into succ_lane from 0")
        if np.any((succ < 0) | (succ >= n_lanes)):
            raise ValueError("successor lanes must be lane indices")
        has = np.diff(start) > 0
        first = np.full(n_lanes, -1, np.int64)
        first[has] = succ[start[:-1][has]]
        if not np.array_equal(first, self.successor):
            raise ValueError("successor must be the first of each lane's successors (-1 none)")
        if self.in_junction is None:
            object.__setattr__(self, "in_junction", np.zeros(n_lanes, bool))
        elif len(self.in_junction) != n_lanes:
            raise ValueError("in_junction must have one entry per lane")

    # ---- derived arrays (computed once) ---------------------------------------------------

    @property
    def n_lanes(self) -> int:
        return len(self.width_m)

    @cached_property
    def has_successors(self) -> bool:
        """Some lane continues into another (junctions): routing and successor leaders apply."""
        return bool(len(self.succ_lane))

    @cached_property
    def turn(self) -> np.ndarray:
        """(L,) int8 TURN_* of junction lanes from their heading change (within 45 degrees of
        straight, else left or right), TURN_NONE elsewhere."""
        out = np.full(self.n_lanes, TURN_NONE, np.int8)
        for k in np.flatnonzero(self.in_junction):
            a, b = self.lane_start[k], self.lane_start[k + 1]
            change = float(np.sum(np.diff(np.unwrap(self.seg_heading[a : b - 1])))) if b - a > 2 \
                else 0.0
            out[k] = (TURN_STRAIGHT if abs(change) < math.pi / 4
                      else TURN_LEFT if change > 0 else TURN_RIGHT)
        return out

    @cached_property
    def _succ_table(self) -> np.ndarray:
        """(L, D) successors of each lane padded with -1 (D the most any lane has, >= 1)."""
        deg = np.diff(self.succ_start)
        table = np.full((self.n_lanes, max(1, int(deg.max(initial=0)))), -1, np.int64)
        col = np.arange(len(self.succ_lane)) - np.repeat(self.succ_start[:-1], deg)
        table[np.repeat(np.arange(self.n_lanes), deg), col] = self.succ_lane
        return table

    def successors(self, lane: int) -> np.ndarray:
        """The successor lanes of one lane, (D,) int64 (maybe empty)."""
        return self.succ_lane[self.succ_start[lane] : self.succ_start[lane + 1]]

    @cached_property
    def _next_by_turn(self) -> np.ndarray:
        """(L, 4) successor taken by a vehicle with turn TURN_NONE, STRAIGHT, LEFT, RIGHT
        (column turn + 1): the successor making that turn, else the first, -1 none; and
        whether that turn is possible from the lane, as (L, 4) bool in `_turn_ok`."""
        table = self._succ_table
        out = np.repeat(table[:, :1], 4, axis=1)
        ok = np.ones((self.n_lanes, 4), bool)
        has = table >= 0
        turns = np.where(has, self.turn[np.maximum(table, 0)], TURN_NONE - 1)
        for t in (TURN_STRAIGHT, TURN_LEFT, TURN_RIGHT):
            match = turns == t
            pick = np.argmax(match, axis=1)
            out[:, t + 1] = np.where(match.any(axis=1), table[np.arange(self.n_lanes), pick],
                                     table[:, 0])
            ok[:, t + 1] = ~has[:, 0] | match.any(axis=1)
        object.__setattr__(self, "_turn_ok", ok)
        return out

    def next_lane(self, lane: np.ndarray, turn: np.ndarray) -> np.ndarray:
        """(N,) the successor of each lane that makes the wanted turn (TURN_*), else the first
        successor, -1 where the lane has none."""
        return self._next_by_turn[lane, np.asarray(turn, np.int64) + 1]

    def allows_turn(self, lane: np.ndarray, turn: np.ndarray) -> np.ndarray:
        """(N,) True where a vehicle wanting `turn` may use the lane: the lane has no
        successors, the vehicle has no preference, or a successor makes that turn."""
        _ = self._next_by_turn
        return self._turn_ok[lane, np.asarray(turn, np.int64) + 1]

    @cached_property
    def vertex_lane(self) -> np.ndarray:
        """(V,) int64 lane of each vertex."""
        return np.repeat(np.arange(self.n_lanes), np.diff(self.lane_start))

    @cached_property
    def ps(self) -> np.ndarray:
        """(V,) arc length along the vertex's own lane, m (0 at each lane's first vertex)."""
        seg = np.hypot(np.diff(self.px), np.diff(self.py))
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        return cum - cum[self.lane_start[:-1]][self.vertex_lane]

    @cached_property
    def length_m(self) -> np.ndarray:
        """(L,) lane length, m."""
        return self.ps[self.lane_start[1:] - 1].copy()

    @cached_property
    def seg_heading(self) -> np.ndarray:
        """(V,) heading of the segment that starts at each vertex (last vertex: previous), rad."""
        h = np.arctan2(np.diff(self.py), np.diff(self.px))
        h = np.append(h, h[-1])
        last = self.lane_start[1:] - 1
        h[last] = h[last - 1]
        return h

    @cached_property
    def seg_cos(self) -> np.ndarray:
        """(V,) cos of seg_heading."""
        return np.cos(self.seg_heading)

    @cached_property
    def seg_sin(self) -> np.ndarray:
        """(V,) sin of seg_heading."""
        return np.sin(self.seg_heading)

    @cached_property
    def heading(self) -> np.ndarray:
        """(V,) tangent heading at each vertex, unwrapped along each lane, rad."""
        out = np.empty_like(self.px)
        for k in range(self.n_lanes):
            a, b = self.lane_start[k], self.lane_start[k + 1]
            seg = np.unwrap(self.seg_heading[a : b - 1])
            vert = np.empty(b - a)
            vert[0], vert[-1] = seg[0], seg[-1]
            vert[1:-1] = 0.5 * (seg[:-1] + seg[1:])
            out[a:b] = vert
        return out

    @cached_property
    def curvature(self) -> np.ndarray:
        """(V,) signed curvature at each vertex (left turn positive), 1/m."""
        out = np.zeros_like(self.px)
        for k in range(self.n_lanes):
            a, b = self.lane_start[k], self.lane_start[k + 1]
            if b - a > 2:
                out[a:b] = np.gradient(self.heading[a:b], self.ps[a:b])
        return out

    @cached_property
    def _station_per_s(self) -> np.ndarray:
        """(V,) reference stations per metre of lane along the segment starting at a vertex."""
        ds = np.diff(self.ps)
        out = np.append(np.diff(self.station) / np.where(ds > 0, ds, 1.0), 1.0)
        last = self.lane_start[1:] - 1
        out[last] = out[last - 1]
        return out

    @cached_property
    def _s_key(self) -> np.ndarray:
        return self.ps + self.vertex_lane * _LANE_KEY_M

    @cached_property
    def _station_key(self) -> np.ndarray:
        return self.station + self.vertex_lane * _LANE_KEY_M

    @cached_property
    def station_range_m(self) -> np.ndarray:
        """(L, 2) first and last station of each lane, m."""
        return np.stack([self.station[self.lane_start[:-1]], self.station[self.lane_start[1:] - 1]],
                        axis=1)

    @cached_property
    def bounds_m(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of all lane centre lines widened by the widest lane."""
        pad = float(self.width_m.max())
        return (float(self.px.min() - pad), float(self.py.min() - pad),
                float(self.px.max() + pad), float(self.py.max() + pad))

    # ---- queries (vectorised over vehicles) ------------------------------------------------

    @cached_property
    def wider_than_tall(self) -> bool:
        """The road spreads more along x than along y (the better sweep axis)."""
        x0, y0, x1, y1 = self.bounds_m
        return bool(x1 - x0 >= y1 - y0)

    @cached_property
    def has_dead_end(self) -> bool:
        """Some lane ends (an on-ramp's acceleration lane)."""
        return bool(np.any(self.end_kind == LANE_DEAD_END))

    @cached_property
    def all_straight(self) -> bool:
        """Every lane is a single segment (a straight line)."""
        return bool(np.all(np.diff(self.lane_start) == 2))

    def segment_of(self, lane: np.ndarray, s_m: np.ndarray) -> np.ndarray:
        """(N,) index of the segment start vertex holding arc length s_m on lane (clamped)."""
        if self.all_straight:
            return self.lane_start[lane]
        key = s_m + lane * _LANE_KEY_M
        seg = np.searchsorted(self._s_key, key, side="right") - 1
        return np.clip(seg, self.lane_start[lane], self.lane_start[lane + 1] - 2)

    def pose_at(self, lane: np.ndarray, s_m: np.ndarray):
        """Centre-line point of lane at arc length s_m (extrapolated past the ends).

        Returns x_m, y_m, heading_rad, curvature_1pm, station_m, each (N,).
        """
        seg = self.segment_of(lane, s_m)
        t = s_m - self.ps[seg]
        x = self.px[seg] + t * self.seg_cos[seg]
        y = self.py[seg] + t * self.seg_sin[seg]
        return (x, y, *self._along(seg, t))

    def _along(self, seg: np.ndarray, t: np.ndarray):
        """Heading, curvature and station at t metres along segments seg, each (N,)."""
        frac = np.minimum(np.maximum(t * self._inv_seg_len[seg], 0.0), 1.0)
        heading = self.heading[seg] + frac * self._dheading[seg]
        curv = self.curvature[seg] + frac * self._dcurvature[seg]
        station = self.station[seg] + t * self._station_per_s[seg]
        return heading, curv, station

    @cached_property
    def _inv_seg_len(self) -> np.ndarray:
        ds = np.append(np.diff(self.ps), 1.0)
        return 1.0 / np.where(ds > 0, ds, 1.0)

    @cached_property
    def _dheading(self) -> np.ndarray:
        out = np.append(np.diff(self.heading), 0.0)
        out[self.lane_start[1:] - 1] = 0.0
        return out

    @cached_property
    def _dcurvature(self) -> np.ndarray:
        out = np.append(np.diff(self.curvature), 0.0)
        out[self.lane_start[1:] - 1] = 0.0
        return out

    def to_world(self, lane: np.ndarray, s_m: np.ndarray, d_m: np.ndarray):
        """World position and lane heading of Frenet coordinates. Returns x_m, y_m, heading_rad."""
        x, y, h, _, _ = self.pose_at(lane, s_m)
        return x - d_m * np.sin(h), y + d_m * np.cos(h), h

    def project(self, lane: np.ndarray, s_guess_m: np.ndarray, x_m: np.ndarray,
                y_m: np.ndarray):
        """Frenet coordinates of world points on a known lane, searching near s_guess_m.

        Two local refinements: exact on straight lanes, within millimetres on curves sampled
        every few metres. Returns s_m, d_m (left of the centre line positive), and at that
        point the reference station_m, lane heading_rad and curvature_1pm, each (N,).
        """
        s = s_guess_m
        for _ in range(1 if self.all_straight else 2):
            seg = self.segment_of(lane, s)
            c, sn = self.seg_cos[seg], self.seg_sin[seg]
            dx = x_m - self.px[seg]
            dy = y_m - self.py[seg]
            t = dx * c + dy * sn
            s = self.ps[seg] + t
        d = dy * c - dx * sn
        heading, curv, station = self._along(seg, t)
        return s, d, station, heading, curv

    def s_at_station(self, lane: np.ndarray, station_m: np.ndarray) -> np.ndarray:
        """(N,) arc length on lane of the point at a reference station (extrapolated), m."""
        key = station_m + lane * _LANE_KEY_M
        v = np.searchsorted(self._station_key, key, side="right") - 1
        v = np.clip(v, self.lane_start[lane], self.lane_start[lane + 1] - 2)
        dst = self.station[v + 1] - self.station[v]
        return self.ps[v] + (station_m - self.station[v]) * (self.ps[v + 1] - self.ps[v]) / dst

    def locate(self, x_m: np.ndarray, y_m: np.ndarray, lanes: np.ndarray | None = None):
        """Nearest lane centre line of world points (global search, not for the step loop).

        Returns lane (N,) int64, s_m (N,), d_m (N,). `lanes` restricts the candidates.
        """
        x_m = np.atleast_1d(np.asarray(x_m, float))
        y_m = np.atleast_1d(np.asarray(y_m, float))
        seg_ok = np.ones(len(self.px), bool)
        seg_ok[self.lane_start[1:] - 1] = False
        if lanes is not None:
            seg_ok &= np.isin(self.vertex_lane, lanes)
        seg = np.flatnonzero(seg_ok)
        ax, ay = self.px[seg], self.py[seg]
        bx, by = self.px[seg + 1], self.py[seg + 1]
        ux, uy = bx - ax, by - ay
        seg_len2 = ux * ux + uy * uy
        best_lane = np.empty(len(x_m), np.int64)
        best_s = np.empty(len(x_m))
        best_d = np.empty(len(x_m))
        chunk = max(1, 2_000_000 // max(1, len(seg)))
        for a in range(0, len(x_m), chunk):
            px, py = x_m[a : a + chunk, None], y_m[a : a + chunk, None]
            t = np.clip(((px - ax) * ux + (py - ay) * uy) / seg_len2, 0.0, 1.0)
            dist2 = (ax + t * ux - px) ** 2 + (ay + t * uy - py) ** 2
            j = np.argmin(dist2, axis=1)
            rows = np.arange(len(j))
            v = seg[j]
            tj = t[rows, j] * np.sqrt(seg_len2[j])
            h = self.seg_heading[v]
            dx, dy = px[:, 0] - self.px[v], py[:, 0] - self.py[v]
            best_lane[a : a + chunk] = self.vertex_lane[v]
            best_s[a : a + chunk] = self.ps[v] + tj
            best_d[a : a + chunk] = dy * np.cos(h) - dx * np.sin(h)
        return best_lane, best_s, best_d

    # ---- serialisation ----------------------------------------------------------------------

    def to_json(self) -> str:
        """The road as a JSON object (the track file's `road`), enough to rebuild and draw it."""
        lanes = []
        for k in range(self.n_lanes):
            a, b = self.lane_start[k], self.lane_start[k + 1]
            lanes.append({
                "x": np.round(self.px[a:b], 4).tolist(),
                "y": np.round(self.py[a:b], 4).tolist(),
                "station": np.round(self.station[a:b], 4).tolist(),
                "width_m": float(self.width_m[k]),
                "left": int(self.left[k]),
                "right": int(self.right[k]),
                "successor": int(self.successor[k]),
                "successors": self.successors(k).tolist(),
                "in_junction": bool(self.in_junction[k]),
                "end": "dead_end" if self.end_kind[k] == LANE_DEAD_END else "exit",
                "entry": bool(self.entry[k]),
                "change_from_m": _finite_or_none(self.change_from_m[k]),
                "change_to_m": _finite_or_none(self.change_to_m[k]),
            })
        return json.dumps({"kind": self.kind, "params": self.params, "lanes": lanes})

    @staticmethod
    def from_json(text: str) -> Road:
        """Inverse of `to_json`. Raises ValueError naming the offending field."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"road is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("lanes"), list) or not obj["lanes"]:
            raise ValueError("road.lanes must be a non-empty list")
        xs, ys, sts, starts = [], [], [], [0]
        cols: dict[str, list] = {k: [] for k in (
            "width_m", "left", "right", "successor", "end", "entry",
            "change_from_m", "change_to_m", "in_junction")}
        succ_lists: list[list[int]] = []
        for i, lane in enumerate(obj["lanes"]):
            try:
                x = np.asarray(lane["x"], float)
                y = np.asarray(lane["y"], float)
                st = np.asarray(lane["station"], float)
                if x.ndim != 1 or x.shape != y.shape or x.shape != st.shape or len(x) < 2:
                    raise ValueError("x, y, station must be equal-length lists of >= 2 numbers")
                xs.append(x)
                ys.append(y)
                sts.append(st)
                starts.append(starts[-1] + len(x))
                cols["width_m"].append(float(lane["width_m"]))
                for name in ("left", "right", "successor"):
                    cols[name].append(int(lane[name]))
                succ = lane.get("successors")
                if succ is None:  # files written before lanes had several successors
                    succ = [cols["successor"][-1]] if cols["successor"][-1] >= 0 else []
                if not isinstance(succ, list) or any(
                        isinstance(v, bool) or not isinstance(v, int) for v in succ):
                    raise ValueError("successors must be a list of lane indices")
                succ_lists.append(succ)
                in_junction = lane.get("in_junction", False)
                if not isinstance(in_junction, bool):
                    raise ValueError("in_junction must be true or false")
                cols["in_junction"].append(in_junction)
                if lane["end"] not in ("exit", "dead_end"):
                    raise ValueError("end must be 'exit' or 'dead_end'")
                cols["end"].append(LANE_DEAD_END if lane["end"] == "dead_end" else LANE_EXIT)
                cols["entry"].append(bool(lane["entry"]))
                for name, default in (("change_from_m", -np.inf), ("change_to_m", np.inf)):
                    v = lane.get(name)
                    cols[name].append(default if v is None else float(v))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"road.lanes[{i}]: {exc}") from None
        succ_start = np.concatenate([[0], np.cumsum([len(v) for v in succ_lists])])
        succ_lane = np.asarray([v for lst in succ_lists for v in lst], np.int64)
        return Road(
            kind=str(obj.get("kind", "custom")),
            lane_start=np.asarray(starts, np.int64),
            px=np.concatenate(xs), py=np.concatenate(ys), station=np.concatenate(sts),
            width_m=np.asarray(cols["width_m"]),
            left=np.asarray(cols["left"], np.int64),
            right=np.asarray(cols["right"], np.int64),
            successor=np.asarray(cols["successor"], np.int64),
            end_kind=np.asarray(cols["end"], np.int8),
            entry=np.asarray(cols["entry"], bool),
            change_from_m=np.asarray(cols["change_from_m"]),
            change_to_m=np.asarray(cols["change_to_m"]),
            params=dict(obj.get("params") or {}),
            succ_start=succ_start.astype(np.int64), succ_lane=succ_lane,
            in_junction=np.asarray(cols["in_junction"], bool),
        )


def _finite_or_none(v: float):
    return float(v) if math.isfinite(v) else None


# ---- builders ------------------------------------------------------------------------------


def _reference_line(pieces: list[tuple[float, float]], ds_m: float):
    """Sample a reference line made of (length_m, curvature_1pm) pieces, starting at the origin
    heading +x. Returns x, y, heading, station arrays (M,)."""
    xs, ys, hs, ss = [0.0], [0.0], [0.0], [0.0]
    for length_m, kappa in pieces:
        if length_m <= 0:
            raise ValueError("reference pieces need positive lengths")
        n = max(1, int(math.ceil(length_m / ds_m)))
        u = np.linspace(0.0, length_m, n + 1)[1:]
        x0, y0, h0 = xs[-1], ys[-1], hs[-1]
        if kappa == 0:
            x = x0 + u * math.cos(h0)
            y = y0 + u * math.sin(h0)
            h = np.full_like(u, h0)
        else:
            h = h0 + kappa * u
            x = x0 + (np.sin(h) - math.sin(h0)) / kappa
            y = y0 - (np.cos(h) - math.cos(h0)) / kappa
        xs.extend(x)
        ys.extend(y)
        hs.extend(h)
        ss.extend(ss[-1] + u)
    return np.array(xs), np.array(ys), np.array(hs), np.array(ss)


def _parallel_road(kind, ref, n_lanes, lane_width_m, params, extra=None) -> Road:
    """Main lanes offset from a reference line (lane k centre at (k + 0.5) * width to the left),
    plus optional extra lanes given as (x, y, station, lane dict) tuples."""
    rx, ry, rh, rs = ref
    xs, ys, sts, starts = [], [], [], [0]
    for k in range(n_lanes):
        d = (k + 0.5) * lane_width_m
        xs.append(rx - d * np.sin(rh))
        ys.append(ry + d * np.cos(rh))
        sts.append(rs)
        starts.append(starts[-1] + len(rx))
    lanes = np.arange(n_lanes)
    cols = dict(
        width_m=[lane_width_m] * n_lanes,
        left=list(np.where(lanes + 1 < n_lanes, lanes + 1, -1)),
        right=list(np.where(lanes > 0, lanes - 1, -1)),
        successor=[-1] * n_lanes,
        end_kind=[LANE_EXIT] * n_lanes,
        entry=[True] * n_lanes,
        change_from_m=[-np.inf] * n_lanes,
        change_to_m=[np.inf] * n_lanes,
    )
    for x, y, st, lane in extra or []:
        xs.append(x)
        ys.append(y)
        sts.append(st)
        starts.append(starts[-1] + len(x))
        for name, v in lane.items():
            cols[name].append(v)
    return Road(
        kind=kind,
        lane_start=np.asarray(starts, np.int64),
        px=np.concatenate(xs), py=np.concatenate(ys), station=np.concatenate(sts),
        width_m=np.asarray(cols["width_m"], float),
        left=np.asarray(cols["left"], np.int64),
        right=np.asarray(cols["right"], np.int64),
        successor=np.asarray(cols["successor"], np.int64),
        end_kind=np.asarray(cols["end_kind"], np.int8),
        entry=np.asarray(cols["entry"], bool),
        change_from_m=np.asarray(cols["change_from_m"], float),
        change_to_m=np.asarray(cols["change_to_m"], float),
        params=params,
    )


def straight_highway(n_lanes: int = 3, length_m: float = 2000.0,
                     lane_width_m: float = 3.7) -> Road:
    """n parallel lanes along +x from x = 0 to length_m; lane 0 is the rightmost."""
    _check_common(n_lanes, length_m, lane_width_m)
    ref = _reference_line([(length_m, 0.0)], ds_m=length_m)
    return _parallel_road("straight_highway", ref, n_lanes, lane_width_m,
                          dict(n_lanes=n_lanes, length_m=length_m, lane_width_m=lane_width_m))


def curved_highway(n_lanes: int = 3, pieces: list[tuple[float, float]] | None = None,
                   lane_width_m: float = 3.7, ds_m: float = 2.0) -> Road:
    """Parallel lanes along a reference line of (length_m, radius_m) pieces; radius 0 means
    straight, positive turns left, negative right. Default: an S-bend of radius 800 m."""
    pieces = pieces or [(300.0, 0.0), (500.0, 800.0), (300.0, 0.0), (500.0, -800.0), (400.0, 0.0)]
    for _, radius_m in pieces:
        if radius_m != 0 and abs(radius_m) < (n_lanes + 1) * lane_width_m + 10:
            raise ValueError(f"curve radius {radius_m} m too tight for {n_lanes} lanes")
    kappas = [(length, 0.0 if radius == 0 else 1.0 / radius) for length, radius in pieces]
    _check_common(n_lanes, sum(p[0] for p in pieces), lane_width_m)
    ref = _reference_line(kappas, ds_m=ds_m)
    return _parallel_road("curved_highway", ref, n_lanes, lane_width_m,
                          dict(n_lanes=n_lanes, pieces=[list(p) for p in pieces],
                               lane_width_m=lane_width_m))


def on_ramp_highway(n_lanes: int = 3, length_m: float = 2000.0, lane_width_m: float = 3.7,
                    merge_start_m: float = 700.0, merge_end_m: float = 950.0,
                    ramp_length_m: float = 250.0, ramp_offset_m: float = 30.0,
                    ds_m: float = 2.0) -> Road:
    """A straight highway with an on-ramp from the right.

    The ramp (lane n_lanes) starts ramp_offset_m to the right of the main road at station
    merge_start_m - ramp_length_m, bends smoothly into an acceleration lane beside lane 0 by
    merge_start_m, and ends at merge_end_m: ramp traffic must merge left in between.
    """
    _check_common(n_lanes, length_m, lane_width_m)
    ramp_start_m = merge_start_m - ramp_length_m
    if not (0 <= ramp_start_m < merge_start_m < merge_end_m < length_m):
        raise ValueError("need 0 <= merge_start_m - ramp_length_m < merge_start_m "
                         "< merge_end_m < length_m")
    if ramp_offset_m < 0:
        raise ValueError("ramp_offset_m must be >= 0")
    ref = _reference_line([(length_m, 0.0)], ds_m=length_m)
    st = np.concatenate([np.arange(ramp_start_m, merge_start_m, ds_m),
                         np.arange(merge_start_m, merge_end_m, ds_m), [merge_end_m]])
    u = np.clip((st - ramp_start_m) / ramp_length_m, 0.0, 1.0)
    smooth = u * u * u * (10 - 15 * u + 6 * u * u)  # quintic smoothstep: zero slope and bend
    y = -0.5 * lane_width_m - ramp_offset_m * (1.0 - smooth)
    lane = dict(width_m=lane_width_m, left=0, right=-1, successor=-1, end_kind=LANE_DEAD_END,
                entry=True, change_from_m=merge_start_m, change_to_m=merge_end_m)
    params = dict(n_lanes=n_lanes, length_m=length_m, lane_width_m=lane_width_m,
                  merge_start_m=merge_start_m, merge_end_m=merge_end_m,
                  ramp_length_m=ramp_length_m, ramp_offset_m=ramp_offset_m)
    return _parallel_road("on_ramp_highway", ref, n_lanes, lane_width_m, params,
                          extra=[(st.copy(), y, st.copy(), lane)])


ARMS = ("E", "N", "W", "S")  # the arms of four_way_intersection, counter-clockwise from east


def four_way_intersection(n_lanes: int = 2, arm_length_m: float = 150.0,
                          lane_width_m: float = 3.5, kerb_radius_m: float = 12.0,
                          no_change_m: float = 40.0, ds_m: float = 1.0) -> Road:
    """A four-way intersection centred at the origin, right-hand traffic.

    Arms east, north, west, south (ARMS order) each carry n_lanes approach lanes towards the
    centre and n_lanes exit lanes away from it, arm_length_m long. Approach lanes end at the
    stop line, box_half_m = kerb_radius_m + n_lanes * lane_width_m from the centre, and
    continue through connector lanes (`in_junction`; straight lines and quarter circles,
    tangent at both ends) into exit lanes: every lane goes straight into the opposite arm's
    lane of the same index, the rightmost also turns right into the right-hand arm's rightmost
    exit lane (radius kerb_radius_m + lane_width_m / 2), the leftmost also turns left into
    the left-hand arm's leftmost exit lane. Lane numbers: approach lane k (0 rightmost) of arm
    a is a * n_lanes + k, its exit lane 4 * n_lanes + a * n_lanes + k, connectors follow.
    Stations are arc lengths along each lane (the lanes of one arm start level, so stations
    compare across them); no lane changes in the last no_change_m before the stop line and
    the first no_change_m after the junction (solid lines).
    """
    if not 1 <= n_lanes <= 3:
        raise ValueError("n_lanes must be between 1 and 3 for an intersection")
    if not 50.0 <= arm_length_m <= 2000.0:
        raise ValueError("arm_length_m must be between 50 and 2000 m")
    if not 2.5 <= lane_width_m <= 5.0:
        raise ValueError("lane_width_m must be between 2.5 and 5 m")
    if not 4.0 <= kerb_radius_m <= 40.0:
        raise ValueError("kerb_radius_m must be between 4 and 40 m")
    if not 0.0 <= no_change_m <= arm_length_m - 20.0:
        raise ValueError("no_change_m must be between 0 and arm_length_m - 20 m")
    if not 0.2 <= ds_m <= 5.0:
        raise ValueError("ds_m must be between 0.2 and 5 m")
    n, w = n_lanes, lane_width_m
    box = kerb_radius_m + n * w
    lanes: list[dict] = []

    def add(x, y, **attrs) -> int:
        x, y = np.asarray(x, float), np.asarray(y, float)
        st = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
        lanes.append(dict(x=x, y=y, station=st, **attrs))
        return len(lanes) - 1

    def right_of(h: float) -> np.ndarray:
        return np.array([math.sin(h), -math.cos(h)])

    ends = {}  # (arm, k, "in"/"out") -> (point at the box edge, heading)
    for direction in ("in", "out"):
        for a in range(4):
            theta = a * math.pi / 2
            u = np.array([math.cos(theta), math.sin(theta)])
            h = theta + math.pi if direction == "in" else theta
            for k in range(n):
                off = (n - k - 0.5) * w
                edge = u * box + right_of(h) * off
                far = u * (box + arm_length_m) + right_of(h) * off
                p0, p1 = (far, edge) if direction == "in" else (edge, far)
                base = 0 if direction == "in" else 4 * n
                left = base + a * n + k + 1 if k + 1 < n else -1
                right = base + a * n + k - 1 if k > 0 else -1
                idx = add([p0[0], p1[0]], [p0[1], p1[1]], width_m=w, left=left, right=right,
                          entry=direction == "in",
                          change_from_m=-np.inf if direction == "in" else no_change_m,
                          change_to_m=(arm_length_m - no_change_m if direction == "in"
                                       else np.inf))
                assert idx == base + a * n + k
                ends[a, k, direction] = (edge, h)
    succ: dict[int, list[int]] = {i: [] for i in range(8 * n)}
    for a in range(4):
        for k in range(n):
            moves = [((a + 2) % 4, k, 0.0)]  # (exit arm, exit lane, turn sign); straight first
            if k == n - 1:
                moves.append(((a + 3) % 4, n - 1, 1.0))
            if k == 0:
                moves.append(((a + 1) % 4, 0, -1.0))
            for out_arm, out_k, sign in moves:
                (p0, h0), (p1, _) = ends[a, k, "in"], ends[out_arm, out_k, "out"]
                if sign == 0.0:
                    x, y = [p0[0], p1[0]], [p0[1], p1[1]]
                else:
                    radius = float(np.hypot(*(p1 - p0))) / math.sqrt(2.0)
                    centre = p0 - sign * right_of(h0) * radius
                    phi0 = math.atan2(p0[1] - centre[1], p0[0] - centre[0])
                    m = max(4, int(math.ceil(radius * math.pi / 2 / ds_m)))
                    phi = phi0 + sign * np.linspace(0.0, math.pi / 2, m + 1)
                    x, y = centre[0] + radius * np.cos(phi), centre[1] + radius * np.sin(phi)
                    x[-1], y[-1] = p1  # exact joins
                    x[0], y[0] = p0
                idx = add(x, y, width_m=w, left=-1, right=-1, entry=False,
                          change_from_m=-np.inf, change_to_m=np.inf, in_junction=True)
                succ[a * n + k].append(idx)
                succ[idx] = [4 * n + out_arm * n + out_k]
    n_all = len(lanes)
    succ_lists = [succ.get(i, []) for i in range(n_all)]
    starts = np.concatenate([[0], np.cumsum([len(ln["x"]) for ln in lanes])])
    return Road(
        kind="four_way_intersection",
        lane_start=starts.astype(np.int64),
        px=np.concatenate([ln["x"] for ln in lanes]),
        py=np.concatenate([ln["y"] for ln in lanes]),
        station=np.concatenate([ln["station"] for ln in lanes]),
        width_m=np.array([ln["width_m"] for ln in lanes], float),
        left=np.array([ln["left"] for ln in lanes], np.int64),
        right=np.array([ln["right"] for ln in lanes], np.int64),
        successor=np.array([v[0] if v else -1 for v in succ_lists], np.int64),
        end_kind=np.full(n_all, LANE_EXIT, np.int8),
        entry=np.array([ln["entry"] for ln in lanes], bool),
        change_from_m=np.array([ln["change_from_m"] for ln in lanes], float),
        change_to_m=np.array([ln["change_to_m"] for ln in lanes], float),
        params=dict(n_lanes=n_lanes, arm_length_m=arm_length_m, lane_width_m=lane_width_m,
                    kerb_radius_m=kerb_radius_m, no_change_m=no_change_m, ds_m=ds_m,
                    box_half_m=box, arms=list(ARMS)),
        succ_start=np.concatenate([[0], np.cumsum([len(v) for v in succ_lists])]).astype(
            np.int64),
        succ_lane=np.array([v for lst in succ_lists for v in lst], np.int64),
        in_junction=np.array([ln.get("in_junction", False) for ln in lanes], bool),
    )


def _check_common(n_lanes: int, length_m: float, lane_width_m: float) -> None:
    if not 1 <= n_lanes <= 8:
        raise ValueError("n_lanes must be between 1 and 8")
    if not 50.0 <= length_m <= 200_000.0:
        raise ValueError("road length must be between 50 m and 200 km")
    if not 2.0 <= lane_width_m <= 6.0:
        raise ValueError("lane_width_m must be between 2 and 6 m")
