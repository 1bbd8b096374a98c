"""Log replay: any track file as background traffic, with an ego driven by the simulator.

Recorded agents follow their tracks exactly (their positions are copied, not re-integrated).
An ego can be inserted, either replacing a recorded agent from a given time or as a new
vehicle placed on a lane; it drives with IDM car following and lane keeping (no lane
changes), on its lane and, on junction roads, through the connector its route takes (the
replaced agent's recorded one, else straight), stopping for red and amber as a simulated
driver does when the recording carries its signal plan. Its leader is the nearest vehicle
ahead whose body overlaps its lane corridor (so a recorded car cutting in counts as soon as
it intrudes). A control hook (the avoidance layer) may override its acceleration.

Non-reactive replay (default): recorded agents ignore the ego; a recorded agent that runs into
it is a collision, counted (`ReplayResult.ego_collisions`) and marked in the output's
`collided` array. Reactive replay: a recorded agent whose recorded motion over the next
`react_horizon_s` would bring its body within `react_margin_m` of a simulated vehicle (the ego,
or an agent already switched) switches to IDM and lane keeping from then on, the way the ego
drives. Overlaps between recorded agents (NGSIM has some: transcription errors) are counted
separately and never switch anyone.

Track files without a road (NGSIM) get one fitted from the data (`fit_road`): straight,
parallel lanes along the traffic's mean direction, their centres at the peaks of the
histogram of lateral positions, their width the median peak spacing.

The result is a track file like any run (agents in the input's order, a new ego last), whose
recorded agents reproduce the input's positions exactly until they switch (reactive) or are
replaced (the ego).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from sim import behavior, collision, dynamics
from sim.road import LANE_EXIT, TURN_NONE, TURN_STRAIGHT, Road
from sim.state import KIND_TRUCK, ROLE_BACKGROUND, ROLE_EGO, TrafficState, empty_state, wheelbase_m
from sim.tracks import Tracks

MAX_SUBSTEP_S = 0.1  # recordings with a coarser step are simulated in sub-steps
OBSERVE_S = 3.0  # a control hook with `observe` sees the recording this long before takeover
LOOK_AHEAD_M = 150.0  # vehicles further than this are never a simulated vehicle's leader
CORRIDOR_MARGIN_M = 0.3  # lateral clearance a simulated driver keeps to bodies beside its lane
EGO_DEFAULTS = dict(length=4.7, width=1.9, time_gap_s=1.5, min_gap_m=2.0, max_accel_mps2=1.5,
                    comf_decel_mps2=2.0)


class ReplayError(ValueError):
    """A replay that cannot be set up (bad ego agent, time, lane or station); the message
    names the setting."""


@dataclass(frozen=True)
class ReplaySpec:
    """What to do with a track file. Times are seconds from the file's first time stamp.

    ego_agent: id of the recorded agent the ego replaces from ego_from_s (default: from its
    first appearance). ego_lane / ego_station_m: a new ego placed on that lane of the road at
    that station at ego_from_s (default 0), at ego_speed_mps (default: the mean speed of the
    recorded vehicles within 100 m on its lane, else its desired speed). ego_desired_speed_mps:
    its IDM desired speed (default: the 95th percentile of the replaced agent's recorded speed,
    or of all recorded speeds for a new ego, at least 5 m/s). duration_s: how much of the file
    to replay (default: to its end).
    """

    ego_agent: int | None = None
    ego_from_s: float | None = None
    ego_lane: int | None = None
    ego_station_m: float | None = None
    ego_speed_mps: float | None = None
    ego_desired_speed_mps: float | None = None
    ego_turn: str | None = None  # junction roads: left, straight, right (default: recorded)
    reactive: bool = False
    react_horizon_s: float = 1.0
    react_margin_m: float = 0.2
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.ego_agent is not None and (self.ego_lane is not None
                                           or self.ego_station_m is not None):
            raise ReplayError("ego: replace an agent (ego_agent) or place a new ego "
                              "(ego_lane, ego_station_m), not both")
        if (self.ego_lane is None) != (self.ego_station_m is None):
            raise ReplayError("ego: a new ego needs both ego_lane and ego_station_m")
        for name in ("ego_from_s", "ego_speed_mps", "duration_s"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ReplayError(f"{name}: expected a number >= 0, got {v}")
        v = self.ego_desired_speed_mps
        if v is not None and not (math.isfinite(v) and 0 < v <= 70):
            raise ReplayError(f"ego_desired_speed_mps: expected a speed in (0, 70] m/s, got {v}")
        if self.ego_speed_mps is not None and self.ego_speed_mps > 70:
            raise ReplayError(f"ego_speed_mps: expected a speed in [0, 70] m/s, got "
                              f"{self.ego_speed_mps}")
        if not 0.1 <= self.react_horizon_s <= 10:
            raise ReplayError("react_horizon_s: expected a time in [0.1, 10] s")
        if not 0 <= self.react_margin_m <= 5:
            raise ReplayError("react_margin_m: expected a distance in [0, 5] m")
        if self.ego_turn is not None and self.ego_turn not in ("left", "straight", "right"):
            raise ReplayError("ego_turn: expected left, straight or right")

    @property
    def has_ego(self) -> bool:
        return self.ego_agent is not None or self.ego_lane is not None


@dataclass
class ReplayResult:
    """The replayed episode and what happened in it."""

    tracks: Tracks
    ego_collisions: int  # new overlaps between the ego and another vehicle
    sim_collisions: int  # new overlaps involving a switched (reactive) agent, not the ego
    data_collisions: int  # new overlaps between recorded agents (errors in the data)
    switched: dict[int, float] = field(default_factory=dict)  # agent id -> time it switched
    ego_id: int | None = None
    ego_from_s: float | None = None
    ego_distance_m: float = 0.0
    ego_mean_speed_mps: float = float("nan")
    ego_min_gap_m: float = float("inf")  # smallest bumper gap to its leader while driving
    road_fitted: bool = False
    steps: int = 0
    # each ego collision: t_s, partner_id, ran_into, ego_speed_mps and rel_speed_mps (on
    # the frame before the contact)
    ego_contacts: list[dict] = field(default_factory=list)

    @property
    def ego_front_collisions(self) -> int:
        """Of ego_collisions, those where the ego ran into a vehicle ahead of it
        (`_ran_into`); the others hit the ego from behind or merged into its side."""
        return sum(1 for c in self.ego_contacts if c["ran_into"])


# ---- a road for roadless recordings ------------------------------------------------------


def fit_road(tracks: Tracks, margin_m: float = 30.0) -> Road:
    """Straight parallel lanes fitted to a recording without a road (NGSIM).

    Direction: the mean velocity over all samples. Lane centres: peaks of the histogram of
    lateral positions (0.1 m bins, smoothed with a 0.3 m Gaussian) that are the highest within
    2.5 m and reach 5 % of the highest; the lane width (2.8..4.6 m) is the one that puts every
    peak nearest to a lane centre (lanes without a peak are kept: sparse data), and the grid's
    offset the mean over the peaks (one lane of 3.7 m if there is a single peak). Lanes span
    the data along the direction, plus margin_m at both ends; lane 0 is the rightmost.
    ReplayError if nothing moves."""
    present = tracks.present
    vx, vy = tracks.vx[present].astype(float), tracks.vy[present].astype(float)
    if not present.any() or np.hypot(vx, vy).max(initial=0.0) < 0.5:
        raise ReplayError("road: the recording has no moving vehicles to fit lanes to")
    theta = math.atan2(vy.sum(), vx.sum())
    co, si = math.cos(theta), math.sin(theta)
    x, y = tracks.x[present].astype(float), tracks.y[present].astype(float)
    along = x * co + y * si
    lateral = -x * si + y * co  # left of the direction of travel positive
    lo, hi = np.percentile(lateral, [0.5, 99.5])
    bins = np.arange(lo - 2.0, hi + 2.0 + 0.1, 0.1)
    hist, edges = np.histogram(lateral, bins=bins)
    kernel = np.exp(-0.5 * (np.arange(-9, 10) / 3.0) ** 2)
    smooth = np.convolve(hist.astype(float), kernel / kernel.sum(), mode="same")
    pad = np.pad(smooth, 25, constant_values=-1.0)
    window = np.lib.stride_tricks.sliding_window_view(pad, 51)  # +-2.5 m around each bin
    peaks = np.flatnonzero((smooth >= window.max(axis=1)) & (smooth >= 0.05 * smooth.max()))
    if len(peaks) > 1:  # plateaus: keep one bin per peak
        peaks = peaks[np.concatenate([[True], np.diff(peaks) > 25])]
    centres = 0.5 * (edges[peaks] + edges[peaks + 1])
    if len(centres) >= 2:  # the lane width (2.8..4.6 m) that puts every peak on a lane
        rel = centres - centres[0]
        widths = np.arange(2.8, 4.6001, 0.01)
        resid = rel[None, :] / widths[:, None]
        err = (np.abs(resid - np.round(resid)) * widths[:, None]).max(axis=1)
        width = float(widths[np.argmin(err + 1e-3 * widths)])
        k = np.round(rel / width)
        offset = float(np.mean(centres - k * width))
        n_lanes = int(k.max()) + 1
    else:
        width = 3.7
        offset = float(centres[0]) if len(centres) else float(np.median(lateral))
        n_lanes = 1
    if n_lanes > 12:
        raise ReplayError(f"road: fitted {n_lanes} lanes; the recording does not look like "
                          "traffic on parallel lanes")
    u0, u1 = float(along.min() - margin_m), float(along.max() + margin_m)
    xs, ys, sts = [], [], []
    for lane in range(n_lanes):
        w = offset + lane * width
        xs.append([u0 * co - w * si, u1 * co - w * si])
        ys.append([u0 * si + w * co, u1 * si + w * co])
        sts.append([0.0, u1 - u0])
    lanes = np.arange(n_lanes)
    return Road(
        kind="fitted_straight",
        lane_start=np.arange(0, 2 * n_lanes + 1, 2, dtype=np.int64),
        px=np.concatenate(xs), py=np.concatenate(ys), station=np.concatenate(sts),
        width_m=np.full(n_lanes, width),
        left=np.where(lanes + 1 < n_lanes, lanes + 1, -1).astype(np.int64),
        right=np.where(lanes > 0, lanes - 1, -1).astype(np.int64),
        successor=np.full(n_lanes, -1, np.int64),
        end_kind=np.full(n_lanes, LANE_EXIT, np.int8),
        entry=np.ones(n_lanes, bool),
        change_from_m=np.full(n_lanes, -np.inf), change_to_m=np.full(n_lanes, np.inf),
        params=dict(n_lanes=n_lanes, lane_width_m=round(width, 3),
                    heading_rad=round(theta, 6), fitted_from=tracks.meta.get("source")),
    )


class RoadLocator:
    """Nearest lane of world points, fast: a KD-tree of lane centre points every 2 m gives a
    few candidate (lane, s) guesses, each refined by Road.project; the one with the smallest
    lateral offset that lies within its lane wins."""

    def __init__(self, road: Road, step_m: float = 2.0):
        from scipy.spatial import cKDTree

        lanes, ss = [], []
        for k in range(road.n_lanes):
            s = np.append(np.arange(0.0, road.length_m[k], step_m), road.length_m[k])
            lanes.append(np.full(len(s), k))
            ss.append(s)
        self.road = road
        self.lane = np.concatenate(lanes)
        self.s = np.concatenate(ss)
        x, y, *_ = road.pose_at(self.lane, self.s)
        self.tree = cKDTree(np.stack([x, y], axis=1))
        self.k = int(min(8, len(self.lane)))

    def locate(self, x_m: np.ndarray, y_m: np.ndarray):
        """(N,) lane, s_m, d_m of world points."""
        x_m, y_m = np.atleast_1d(np.asarray(x_m, float)), np.atleast_1d(np.asarray(y_m, float))
        if len(x_m) == 0:
            e = np.empty(0)
            return np.empty(0, np.int64), e, e
        _, idx = self.tree.query(np.stack([x_m, y_m], axis=1), k=self.k)
        idx = idx.reshape(len(x_m), -1)
        lane = self.lane[idx]
        s, d, *_ = self.road.project(lane.ravel(), self.s[idx].ravel(),
                                     np.repeat(x_m, idx.shape[1]), np.repeat(y_m, idx.shape[1]))
        s, d = s.reshape(idx.shape), d.reshape(idx.shape)
        length = self.road.length_m[lane]
        outside = np.maximum(np.maximum(-s, s - length), 0.0)
        score = np.abs(d) + 10.0 * outside
        best = np.argmin(score, axis=1)
        rows = np.arange(len(x_m))
        return lane[rows, best].astype(np.int64), s[rows, best], d[rows, best]


# ---- the replay ----------------------------------------------------------------------------

ReplayHook = Callable[[TrafficState, object, behavior.LaneIndex, np.ndarray], object]


def replay(tracks: Tracks, spec: ReplaySpec = ReplaySpec(), road: Road | None = None,
           hook: ReplayHook | None = None,
           progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Replay `tracks` as background traffic with the ego and reactivity of `spec`.

    road: the road to drive on (default: the recording's, else `fit_road`). hook(state,
    world, lane_index, accel) is called every step with every vehicle present (recorded ones
    included) and may return an object with `rows`, `accel_mps2` (an Override) for the
    simulated rows; a hook with an `observe(state, world)` method is also shown the last
    OBSERVE_S of recorded traffic before the ego takes over. ReplayError on a spec that does
    not fit the recording."""
    fitted = road is None and tracks.road is None
    road = road if road is not None else road_of(tracks)
    sim = _Replay(tracks, spec, road, hook)
    sim.run(progress)
    return sim.result(fitted)


class _Replay:
    """The replay loop's working state (one use)."""

    def __init__(self, tracks: Tracks, spec: ReplaySpec, road: Road, hook):
        self.tr, self.spec, self.road, self.hook = tracks, spec, road, hook
        self.locator = RoadLocator(road)
        self.junction = _junction_of(tracks, road)
        if spec.ego_turn is not None and self.junction is None:
            raise ReplayError(f"ego_turn: the recording's road ({road.kind}) has no junction "
                              "to turn at")
        n, n_t = tracks.n_agents, tracks.n_steps
        if n_t < 2:
            raise ReplayError("the recording has fewer than two time steps")
        self.dt = float(tracks.t[1] - tracks.t[0])
        t0 = float(tracks.t[0])
        # the signal plan runs from the recording's first time stamp (a time window of it,
        # sim.tracks.time_window, names the whole recording's)
        self.t_signal0 = float(tracks.meta.get("recording_t0_s", t0))
        self.k_end = n_t - 1
        if spec.duration_s is not None:
            self.k_end = min(n_t - 1, int(round(spec.duration_s / self.dt)))
            if self.k_end < 1:
                raise ReplayError("duration_s: shorter than one step of the recording")
        self.n_sub = _n_substeps(self.dt)
        self.present = tracks.present
        self.speed = np.hypot(tracks.vx, tracks.vy)
        self.new_ego = spec.ego_lane is not None
        cap = n + (1 if self.new_ego else 0)
        self.cap = cap
        # all rows: recorded agents first (their file order), a new ego last
        st = empty_state(cap, road.n_lanes)
        st.length[:n], st.width[:n] = tracks.length, tracks.width
        if tracks.kind is not None:
            st.kind[:n] = np.where(tracks.kind == 1, KIND_TRUCK, 0)
        st.ids[:n] = tracks.ids
        self.st = st
        self.mode = np.zeros(cap, np.int8)  # 0 recorded, 1 simulated, 2 simulated and gone
        self.ego_row = -1
        self.k_ins = None
        self.ego_from_s = None
        if spec.has_ego:
            self._plan_ego(t0)
        # the output starts as a copy of the recording; simulated rows overwrite theirs
        extra = cap - n
        self.out = {k: np.concatenate([getattr(tracks, k).astype(np.float32),
                                       np.full((extra, n_t), np.nan, np.float32)])
                    for k in ("x", "y", "vx", "vy", "heading")}
        self.out_lane = np.full((cap, n_t), -1, np.int16)
        self.collided = np.zeros((cap, n_t), bool)
        self.switched: dict[int, float] = {}
        self.ego_collisions = self.sim_collisions = self.data_collisions = 0
        self.ego_contacts: list[dict] = []
        self.ego_dist = 0.0
        self.ego_speed_sum = 0.0
        self.ego_steps = 0
        self.ego_min_gap = math.inf
        self.file_lane_ok = tracks.lane is not None and tracks.road is not None and road is \
            tracks.road
        if self.file_lane_ok:
            self.out_lane[:n] = tracks.lane
        self.prev_pairs: set[tuple[int, int]] = set()
        # what a control hook sees as `world`
        self.world_view = SimpleNamespace(
            road=road, dt_s=self.dt / self.n_sub, junction=self.junction, spec=None,
            ego_row=max(self.ego_row, 0), ego_id=int(st.ids[self.ego_row])
            if self.ego_row >= 0 else -1)

    # ---- setup -----------------------------------------------------------------------

    def _plan_ego(self, t0: float) -> None:
        spec, tr = self.spec, self.tr
        if spec.ego_agent is not None:
            rows = np.flatnonzero(tr.ids == spec.ego_agent)
            if len(rows) == 0:
                raise ReplayError(f"ego_agent: no agent with id {spec.ego_agent} in the "
                                  f"recording ({tr.n_agents} agents, ids {int(tr.ids.min())}.."
                                  f"{int(tr.ids.max())})")
            row = int(rows[0])
            steps = np.flatnonzero(self.present[row])
            if len(steps) == 0:
                raise ReplayError(f"ego_agent: agent {spec.ego_agent} is never present")
            first_s, last_s = tr.t[steps[0]] - t0, tr.t[steps[-1]] - t0
            at = first_s if spec.ego_from_s is None else spec.ego_from_s
            k = int(round(at / self.dt))
            if not (0 <= k < self.k_end and self.present[row, k]):
                raise ReplayError(
                    f"ego_from_s: agent {spec.ego_agent} is not present at {at:g} s (it is "
                    f"from {first_s:g} s to {last_s:g} s, the replay ends at "
                    f"{self.k_end * self.dt:g} s)")
            self.ego_row, self.k_ins = row, k
        else:
            if not 0 <= spec.ego_lane < self.road.n_lanes:
                raise ReplayError(f"ego_lane: lane {spec.ego_lane} does not exist (the road has "
                                  f"{self.road.n_lanes} lanes, 0 the rightmost)")
            lo, hi = self.road.station_range_m[spec.ego_lane]
            if not lo <= spec.ego_station_m <= hi:
                raise ReplayError(f"ego_station_m: {spec.ego_station_m:g} m is off lane "
                                  f"{spec.ego_lane} (stations {lo:.0f}..{hi:.0f} m)")
            at = spec.ego_from_s or 0.0
            k = int(round(at / self.dt))
            if not 0 <= k < self.k_end:
                raise ReplayError(f"ego_from_s: {at:g} s is not within the replay (0.."
                                  f"{self.k_end * self.dt:g} s)")
            self.ego_row, self.k_ins = self.cap - 1, k
            self.st.ids[self.ego_row] = int(self.tr.ids.max(initial=-1)) + 1
        self.ego_from_s = self.k_ins * self.dt

    def _start_simulating(self, rows: np.ndarray, k: int, ego: bool) -> None:
        """Rows begin to be driven by the simulator at frame k, from their recorded state
        there (the new ego: from its placement)."""
        st, tr, road = self.st, self.tr, self.road
        n = tr.n_agents
        for r in rows:
            if ego and self.new_ego:
                spec = self.spec
                lane = np.array([spec.ego_lane])
                s = road.s_at_station(lane, np.array([spec.ego_station_m]))
                x, y, h = road.to_world(lane, s, np.zeros(1))
                st.length[r], st.width[r] = EGO_DEFAULTS["length"], EGO_DEFAULTS["width"]
                st.x[r], st.y[r], st.heading[r] = x[0], y[0], h[0]
                speed = spec.ego_speed_mps
                if speed is None:
                    speed = self._traffic_speed(k, int(lane[0]), float(s[0]))
                st.speed[r] = speed
            else:
                st.x[r], st.y[r] = tr.x[r, k], tr.y[r, k]
                st.heading[r], st.speed[r] = tr.heading[r, k], self.speed[r, k]
            lane, s, d = self.locator.locate(st.x[r:r + 1], st.y[r:r + 1])
            if (self.file_lane_ok and r < n and 0 <= tr.lane[r, k] < road.n_lanes
                    and not (ego and self.new_ego)):  # the recorded lane (junction boxes
                lane = np.array([int(tr.lane[r, k])])  # hold overlapping connectors)
                s = road.project(lane, self._s_hint(lane, r), st.x[r:r + 1],
                                 st.y[r:r + 1])[0]
            st.lane[r], st.lane_from[r] = lane[0], -1
            self._refresh_frenet(np.array([r]), s)
            st.active[r] = True
            st.role[r] = ROLE_EGO if ego else ROLE_BACKGROUND
            self.mode[r] = 1
            st.turn[r] = self._route_turn(r, k) if self.junction is not None else TURN_NONE
            big = st.length[r] > 7.0
            st.time_gap_s[r] = EGO_DEFAULTS["time_gap_s"] if ego else (1.7 if big else 1.3)
            st.min_gap_m[r] = EGO_DEFAULTS["min_gap_m"] if ego else (3.0 if big else 2.0)
            st.max_accel_mps2[r] = EGO_DEFAULTS["max_accel_mps2"] if ego else (0.7 if big
                                                                               else 1.5)
            st.comf_decel_mps2[r] = EGO_DEFAULTS["comf_decel_mps2"] if ego else (1.5 if big
                                                                                 else 2.0)
            st.v0_mps[r] = self._desired_speed(r, ego)
            st.vx[r] = st.speed[r] * math.cos(st.heading[r])
            st.vy[r] = st.speed[r] * math.sin(st.heading[r])
            # its acceleration as recorded (a control hook's actuator starts from it)
            st.accel[r] = 0.0 if (ego and self.new_ego) else self._recorded_accel(
                np.array([r]), k)[0]
            if not ego and r < n:
                self.switched[int(tr.ids[r])] = round(float(k * self.dt), 6)
            for name in self.out:  # from now on the row is what the simulator makes of it
                self.out[name][r, k + 1:] = np.nan
            self.out_lane[r, k + 1:] = -1

    def _s_hint(self, lane: np.ndarray, r: int) -> np.ndarray:
        """A guess of row r's arc length on a lane, for Road.project: the nearest of points
        every 2 m along it."""
        st, road = self.st, self.road
        s = np.append(np.arange(0.0, road.length_m[lane[0]], 2.0), road.length_m[lane[0]])
        x, y, *_ = road.pose_at(np.full(len(s), lane[0]), s)
        return s[[int(np.argmin((x - st.x[r]) ** 2 + (y - st.y[r]) ** 2))]]

    def _desired_speed(self, r: int, ego: bool) -> float:
        if ego and self.spec.ego_desired_speed_mps is not None:
            return float(self.spec.ego_desired_speed_mps)
        if r < self.tr.n_agents:
            v = self.speed[r][self.present[r]]
        else:
            v = self.speed[self.present]
        top = float(np.percentile(v, 95)) if v.size else 0.0
        return max(top, float(self.st.speed[r]), 5.0)

    def _traffic_speed(self, k: int, lane: int, s: float) -> float:
        """Mean recorded speed within 100 m on a lane at frame k (desired speed if none)."""
        rows = np.flatnonzero(self.present[:, k])
        if len(rows):
            ln, ss, _ = self.locator.locate(self.tr.x[rows, k], self.tr.y[rows, k])
            near = (ln == lane) & (np.abs(ss - s) < 100.0)
            if near.any():
                return float(self.speed[rows[near], k].mean())
        if self.spec.ego_desired_speed_mps is not None:
            return float(self.spec.ego_desired_speed_mps)
        v = self.speed[self.present]
        return float(np.median(v)) if v.size else 10.0

    def _route_turn(self, r: int, k: int) -> int:
        """A simulated vehicle's movement at the junction: the ego's setting, else the
        connector the recording took next, else straight."""
        from sim.road import TURN_NAMES

        if r == self.ego_row and self.spec.ego_turn is not None:
            return TURN_NAMES.index(self.spec.ego_turn)
        if self.file_lane_ok and r < self.tr.n_agents:
            later = self.tr.lane[r, k:]
            later = later[(later >= 0) & (later < self.road.n_lanes)]
            inside = later[self.road.in_junction[later]]
            if len(inside):
                return int(self.road.turn[inside[0]])
        return TURN_STRAIGHT

    def _refresh_frenet(self, rows: np.ndarray, s_guess: np.ndarray) -> None:
        st, road = self.st, self.road
        s, d, station, h, kappa = road.project(st.lane[rows], s_guess, st.x[rows], st.y[rows])
        st.s[rows], st.d[rows], st.station[rows] = s, d, station
        st.lane_heading[rows], st.lane_curvature[rows] = h, kappa

    # ---- the loop --------------------------------------------------------------------

    def run(self, progress) -> None:
        tr = self.tr
        self._record(0)
        observe = getattr(self.hook, "observe", None)
        k_obs = None
        if observe is not None and self.k_ins is not None:
            k_obs = max(0, self.k_ins - int(math.ceil(OBSERVE_S / self.dt - 1e-9)))
        for k in range(self.k_end):
            if k_obs is not None and k_obs <= k < self.k_ins:
                for sub in range(self.n_sub):
                    self._observe(k, sub, observe)
            if self.k_ins is not None and k == self.k_ins:
                self._start_simulating(np.array([self.ego_row]), k, ego=True)
                if self.new_ego:
                    self._check_clear_at_insert(k)
                self._record(k, overwrite_sim=True)
            if self.spec.reactive and np.any(self.mode == 1):
                self._react(k)
            for sub in range(self.n_sub):
                self._advance(k, sub)
            self._record(k + 1)
            if progress:
                progress(k + 1, self.k_end)
        self.steps = self.k_end
        del tr

    def _observe(self, k: int, sub: int, observe) -> None:
        """Show a control hook with an `observe(state, world)` method the recorded traffic
        at a (sub-)step before the ego is driven (what its sensors saw before it takes
        over); nothing is simulated."""
        rows = self._place_recorded(k, sub)
        self._recorded_motion(k, sub / self.n_sub, rows)
        self._lanes_for_index()
        observe(self._hook_state(k, sub), self.world_view)

    def _check_clear_at_insert(self, k: int) -> None:
        r = self.ego_row
        rows = np.flatnonzero(self.present[:, k])
        if len(rows) == 0:
            return
        st, tr = self.st, self.tr
        hit = collision.boxes_overlap(
            np.full(len(rows), st.x[r]), np.full(len(rows), st.y[r]),
            np.full(len(rows), st.heading[r]), st.length[r], st.width[r],
            tr.x[rows, k].astype(float), tr.y[rows, k].astype(float),
            tr.heading[rows, k].astype(float), tr.length[rows].astype(float),
            tr.width[rows].astype(float))
        if hit.any():
            raise ReplayError(f"ego_station_m: a new ego there would overlap agent "
                              f"{int(tr.ids[rows[hit][0]])} at {k * self.dt:g} s")

    def _recorded_at(self, k: int, frac: float):
        """Rows recorded at frame k (and k + 1 if frac > 0) and their pose, linearly
        interpolated a fraction frac of the way to frame k + 1."""
        tr = self.tr
        live = self.mode[: tr.n_agents] == 0
        here = self.present[:, k] & live
        if frac > 0.0 and k + 1 < tr.n_steps:
            here &= self.present[:, k + 1]
        rows = np.flatnonzero(here)
        x, y = tr.x[rows, k].astype(float), tr.y[rows, k].astype(float)
        h, v = tr.heading[rows, k].astype(float), self.speed[rows, k].astype(float)
        if frac > 0.0 and len(rows):
            dh = (tr.heading[rows, k + 1] - h + np.pi) % (2 * np.pi) - np.pi
            x = x + frac * (tr.x[rows, k + 1] - x)
            y = y + frac * (tr.y[rows, k + 1] - y)
            h = h + frac * dh
            v = v + frac * (self.speed[rows, k + 1] - v)
        return rows, x, y, h, v

    def _place_recorded(self, k: int, sub: int) -> np.ndarray:
        """Put the recorded rows where their tracks are at sub-step `sub` of frame k (the
        only active recorded rows then); returns them."""
        st = self.st
        rows, x, y, h, v = self._recorded_at(k, sub / self.n_sub)
        st.x[rows], st.y[rows], st.heading[rows], st.speed[rows] = x, y, h, v
        st.active[: self.tr.n_agents] = False
        st.active[rows] = True
        return rows

    def _hook_state(self, k: int, sub: int) -> TrafficState:
        """The state as a control hook sees it: stamped with the replay's time (s from the
        recording's first time stamp) and (sub-)step."""
        return self.st.evolve(t_s=float(self.tr.t[k] - self.tr.t[0])
                              + sub * self.dt / self.n_sub, step=k * self.n_sub + sub)

    def _advance(self, k: int, sub: int) -> None:
        """Simulated rows take one sub-step; recorded rows stand where their track puts them
        at its start."""
        st, road = self.st, self.road
        h_s = self.dt / self.n_sub
        sim_rows = np.flatnonzero(self.mode == 1)
        if len(sim_rows) == 0:
            return
        rows = self._place_recorded(k, sub)
        st.active[sim_rows] = True
        lead, gap = self._leaders(sim_rows)
        has = lead >= 0
        lead_v = np.where(has, self._along_speed(sim_rows, np.maximum(lead, 0)), 0.0)
        accel = behavior.idm_accel(st.speed[sim_rows], lead_v, np.where(has, gap, np.inf),
                                   st.v0_mps[sim_rows], st.time_gap_s[sim_rows],
                                   st.min_gap_m[sim_rows], st.max_accel_mps2[sim_rows],
                                   st.comf_decel_mps2[sim_rows])
        if self.junction is not None:
            accel = np.minimum(accel, self._signal_accel(sim_rows, k))
        accel = np.minimum(np.maximum(accel, -behavior.MAX_DECEL_MPS2),
                           st.max_accel_mps2[sim_rows])
        if np.any(has):
            g = gap[has & (sim_rows == self.ego_row)]
            if len(g):
                self.ego_min_gap = min(self.ego_min_gap, float(g.min()))
        if self.hook is not None:
            full = np.zeros(self.cap)
            full[sim_rows] = accel
            index = behavior.build_lane_index(*self._lanes_for_index())
            self._recorded_motion(k, sub / self.n_sub, rows)
            ov = self.hook(self._hook_state(k, sub), self.world_view, index, full)
            if ov is not None:
                a = np.asarray(ov.accel_mps2, float)
                mine = self.mode[ov.rows] == 1
                r_ov = ov.rows[mine]
                full[r_ov] = np.where(np.isnan(a[mine]), full[r_ov], a[mine])
                accel = full[sim_rows]
        steer = behavior.lateral_steer(_subset(st, sim_rows), behavior.BehaviorParams())
        nx, ny, nh, nv, nvx, nvy = dynamics.bicycle_step(
            st.x[sim_rows], st.y[sim_rows], st.heading[sim_rows], st.speed[sim_rows], accel,
            steer, wheelbase_m(st.length[sim_rows]), h_s)
        ego = sim_rows == self.ego_row
        if ego.any():
            self.ego_dist += float(np.hypot(nx[ego] - st.x[sim_rows[ego]],
                                            ny[ego] - st.y[sim_rows[ego]]).sum())
        st.x[sim_rows], st.y[sim_rows], st.heading[sim_rows] = nx, ny, nh
        st.speed[sim_rows], st.vx[sim_rows], st.vy[sim_rows] = nv, nvx, nvy
        st.accel[sim_rows], st.tan_steer[sim_rows] = accel, steer
        # Frenet coordinates, next lanes and leaving the road
        guess = st.s[sim_rows] + nv * h_s
        self._refresh_frenet(sim_rows, guess)
        over = sim_rows[st.s[sim_rows] > road.length_m[st.lane[sim_rows]]]
        if len(over):
            nxt = road.next_lane(st.lane[over], st.turn[over])
            moves, leaves = over[nxt >= 0], over[nxt < 0]
            if len(moves):
                rest = st.s[moves] - road.length_m[st.lane[moves]]
                st.lane[moves] = nxt[nxt >= 0]
                self._refresh_frenet(moves, rest)
            self.mode[leaves] = 2
            st.active[leaves] = False

    def _recorded_motion(self, k: int, frac: float, rows: np.ndarray) -> None:
        """Velocity (interpolated like the pose) and acceleration (the recorded speed's change
        over the frame before) of the recorded rows, for a control hook: the simulation
        itself does not use them."""
        tr, st = self.tr, self.st
        k1 = min(k + 1, tr.n_steps - 1)
        vx, vy = tr.vx[rows, k].astype(float), tr.vy[rows, k].astype(float)
        nxt = self.present[rows, k1] & (k1 > k)
        if frac > 0.0:
            vx = np.where(nxt, vx + frac * (tr.vx[rows, k1] - vx), vx)
            vy = np.where(nxt, vy + frac * (tr.vy[rows, k1] - vy), vy)
        st.vx[rows], st.vy[rows] = vx, vy
        st.accel[rows] = self._recorded_accel(rows, k)

    def _recorded_accel(self, rows: np.ndarray, k: int) -> np.ndarray:
        """(R,) m/s^2 the recorded speed's change over the frame before k (causal; 0 on an
        agent's first frame)."""
        prev = self.present[rows, max(k - 1, 0)] & (k > 0)
        return np.where(prev, (self.speed[rows, k] - self.speed[rows, max(k - 1, 0)])
                        / self.dt, 0.0)

    def _lanes_for_index(self):
        """Lanes and stations of every present row (recorded rows located on the road)."""
        st = self.st
        rec = np.flatnonzero(st.active & (self.mode == 0))
        if len(rec):
            lane, s, _ = self.locator.locate(st.x[rec], st.y[rec])
            st.lane[rec], st.s[rec] = lane, s
            st.station[rec] = self.road.pose_at(lane, s)[4]
        return st.lane, st.lane_from, st.station, st.active

    def _route(self, rows: np.ndarray):
        """(M, 3) the lanes simulated rows drive on next (own, next, the one after; -1 none)
        and (M, 3) the arc length at which each starts, from the start of the own lane."""
        road, st = self.road, self.st
        lanes = np.full((len(rows), 3), -1, np.int64)
        start = np.zeros((len(rows), 3))
        lanes[:, 0] = st.lane[rows]
        for c in (1, 2):
            prev = lanes[:, c - 1]
            ok = prev >= 0
            nxt = np.full(len(rows), -1, np.int64)
            nxt[ok] = road.next_lane(prev[ok], st.turn[rows[ok]])
            lanes[:, c] = nxt
            start[:, c] = start[:, c - 1] + np.where(ok, road.length_m[np.maximum(prev, 0)], 0)
        return lanes, start

    def _leaders(self, rows: np.ndarray):
        """Nearest vehicle ahead of each simulated row whose body overlaps its lane corridor
        (on its lane or the next ones on its route): leader rows (-1 none) and bumper gaps
        along the route, m."""
        st, road = self.st, self.road
        cand = np.flatnonzero(st.active)
        m, c = np.repeat(rows, len(cand)), np.tile(cand, len(rows))
        keep = (m != c) & ((st.x[c] - st.x[m]) ** 2 + (st.y[c] - st.y[m]) ** 2
                           < LOOK_AHEAD_M ** 2)
        m, c = m[keep], c[keep]
        lead = np.full(len(rows), -1, np.int64)
        gap = np.full(len(rows), np.inf)
        if len(m) == 0:
            return lead, gap
        pos = np.searchsorted(rows, m)
        lanes, start = self._route(rows)
        best_along = np.full(len(m), np.inf)
        best_abs = np.full(len(m), np.inf)
        best_d = np.zeros(len(m))
        best_rel = np.zeros(len(m))
        for col in range(3):
            lane = lanes[pos, col]
            ok = lane >= 0
            if not ok.any():
                continue
            mm, cc, ln = m[ok], c[ok], lane[ok]
            ch, sh = np.cos(st.heading[mm]), np.sin(st.heading[mm])
            ahead_m = (st.x[cc] - st.x[mm]) * ch + (st.y[cc] - st.y[mm]) * sh
            s_guess = np.where(col == 0, st.s[mm] + ahead_m, np.maximum(
                st.s[mm] + ahead_m - start[pos[ok], col], 0.0))
            s, d, _, lane_h, _ = road.project(ln, s_guess, st.x[cc], st.y[cc])
            within = (s >= -2.0) & (s <= road.length_m[ln] + 2.0)
            if col == 0:
                within |= s < 0  # behind the ego on its own lane: ruled out below as behind
            along = start[pos[ok], col] + s
            better = within & (np.abs(d) < best_abs[ok])
            idx = np.flatnonzero(ok)[better]
            best_along[idx], best_abs[idx], best_d[idx] = along[better], np.abs(d[better]), \
                d[better]
            rel = st.heading[cc] - lane_h
            best_rel[idx] = ((rel + np.pi) % (2 * np.pi) - np.pi)[better]
        found = np.isfinite(best_along)
        m, c, along, d, rel = m[found], c[found], best_along[found], best_d[found], \
            best_rel[found]
        pos = np.searchsorted(rows, m)
        cos_r, sin_r = np.abs(np.cos(rel)), np.abs(np.sin(rel))
        half_w = 0.5 * (st.width[c] * cos_r + st.length[c] * sin_r)
        half_l = 0.5 * (st.length[c] * cos_r + st.width[c] * sin_r)
        overlap = np.abs(d - st.d[m]) < half_w + 0.5 * st.width[m] + CORRIDOR_MARGIN_M
        g = along - st.s[m] - half_l - 0.5 * st.length[m]
        ahead = overlap & (along > st.s[m])
        if not ahead.any():
            return lead, gap
        m_pos, g, c = pos[ahead], g[ahead], c[ahead]
        order = np.lexsort((g, m_pos))
        m_pos, g, c = m_pos[order], g[order], c[order]
        first = np.ones(len(m_pos), bool)
        first[1:] = m_pos[1:] != m_pos[:-1]
        lead[m_pos[first]] = c[first]
        gap[m_pos[first]] = g[first]
        return lead, gap

    def _along_speed(self, rows: np.ndarray, lead: np.ndarray) -> np.ndarray:
        """Speed of each leader along the follower's heading (>= 0), m/s."""
        st = self.st
        rel = st.heading[lead] - st.heading[rows]
        return np.maximum(st.speed[lead] * np.cos(rel), 0.0)

    def _signal_accel(self, rows: np.ndarray, k: int) -> np.ndarray:
        """IDM toward the stop line where the simulated row's movement shows red, or amber
        with room to stop (junction recordings with a signal plan); +inf elsewhere."""
        from sim import intersection

        st, j, road = self.st, self.junction, self.road
        out = np.full(len(rows), np.inf)
        lane = st.lane[rows]
        app = j.is_approach[lane]
        if not app.any():
            return out
        conn = j.conn_of_lane[np.maximum(road.next_lane(lane, st.turn[rows]), 0)]
        state, _ = j.movement_states(float(self.tr.t[k] - self.t_signal0))
        sig = state[j.conn_move[np.maximum(conn, 0)]]
        line_gap = road.length_m[lane] - st.s[rows] - 0.5 * st.length[rows]
        v = st.speed[rows]
        can_stop = line_gap >= v * v / (2.0 * j.spec.amber_decel_mps2)
        stop = app & (conn >= 0) & (line_gap > 0) & (
            (sig == intersection.SIG_RED) | ((sig == intersection.SIG_AMBER) & can_stop))
        if stop.any():
            r = rows[stop]
            out[stop] = behavior.idm_accel(
                v[stop], 0.0, line_gap[stop] - intersection.STOP_MARGIN_M + st.min_gap_m[r],
                st.v0_mps[r], st.time_gap_s[r], st.min_gap_m[r], st.max_accel_mps2[r],
                st.comf_decel_mps2[r])
        return out

    def _react(self, k: int) -> None:
        """Switch the recorded agents whose recorded motion over the reaction horizon would
        bring their body within react_margin_m of a simulated vehicle (constant velocity)."""
        tr, st, spec = self.tr, self.st, self.spec
        sim_rows = np.flatnonzero(self.mode == 1)
        rec = np.flatnonzero(self.present[:, k] & (self.mode[: tr.n_agents] == 0))
        if len(rec) == 0 or len(sim_rows) == 0:
            return
        a, b = np.repeat(rec, len(sim_rows)), np.tile(sim_rows, len(rec))
        reach = spec.react_horizon_s * 45.0 + 20.0
        near = (tr.x[a, k] - st.x[b]) ** 2 + (tr.y[a, k] - st.y[b]) ** 2 < reach ** 2
        a, b = a[near], b[near]
        if len(a) == 0:
            return
        n_h = max(1, int(round(spec.react_horizon_s / self.dt)))
        step = np.arange(n_h + 1)
        aa, bb = np.repeat(a, n_h + 1), np.repeat(b, n_h + 1)
        kk = np.minimum(k + np.tile(step, len(a)), tr.n_steps - 1)
        tau = np.tile(step, len(a)) * self.dt
        grow = 2.0 * spec.react_margin_m
        ok = self.present[aa, kk]
        hit = collision.boxes_overlap(
            tr.x[aa, kk].astype(float), tr.y[aa, kk].astype(float),
            tr.heading[aa, kk].astype(float), tr.length[aa] + grow, tr.width[aa] + grow,
            st.x[bb] + st.vx[bb] * tau, st.y[bb] + st.vy[bb] * tau, st.heading[bb],
            st.length[bb], st.width[bb])
        hits = np.zeros(len(a), bool)
        np.logical_or.at(hits, np.repeat(np.arange(len(a)), n_h + 1), ok & hit)
        # only agents that run into the simulated vehicle: it is ahead of them
        ahead = ((st.x[b] - tr.x[a, k]) * np.cos(tr.heading[a, k])
                 + (st.y[b] - tr.y[a, k]) * np.sin(tr.heading[a, k])) > 0
        switch = np.unique(a[hits & ahead])
        if len(switch):
            self._start_simulating(switch, k, ego=False)

    def _record(self, k: int, overwrite_sim: bool = False) -> None:
        """Frame k of the simulated rows (the recorded ones are in place already)."""
        st, out = self.st, self.out
        sim_rows = np.flatnonzero(self.mode == 1)
        if len(sim_rows) and (overwrite_sim or k > 0):
            for name in ("x", "y", "vx", "vy", "heading"):
                out[name][sim_rows, k] = getattr(st, name)[sim_rows]
            self.out_lane[sim_rows, k] = st.lane[sim_rows]
        ego = self.ego_row
        if ego >= 0 and self.mode[ego] == 1 and k > (self.k_ins or 0):
            self.ego_speed_sum += float(st.speed[ego])
            self.ego_steps += 1
        self._collisions(k)

    def _collisions(self, k: int) -> None:
        out = self.out
        rows = np.flatnonzero(np.isfinite(out["x"][:, k]))
        length = np.concatenate([self.tr.length, self.st.length[self.tr.n_agents:]])
        width = np.concatenate([self.tr.width, self.st.width[self.tr.n_agents:]])
        x, y, h = (out[n][rows, k].astype(float) for n in ("x", "y", "heading"))
        pi, pj = collision.overlapping_pairs(x, y, h, length[rows].astype(float),
                                             width[rows].astype(float))
        a, b = rows[pi], rows[pj]
        self.collided[a, k] = True
        self.collided[b, k] = True
        pairs = set(zip(a.tolist(), b.tolist()))
        for i, jj in pairs - self.prev_pairs:
            if self.ego_row in (i, jj) and self.mode[self.ego_row] == 1:
                self.ego_collisions += 1
                o = jj if i == self.ego_row else i
                self.ego_contacts.append(self._contact(o, k, self._ran_into(o, k)))
            elif self.mode[i] != 0 or self.mode[jj] != 0:
                self.sim_collisions += 1
            else:
                self.data_collisions += 1
        self.prev_pairs = pairs

    def _frame_before(self, other: int, k: int) -> int:
        """The frame before a contact at frame k when the ego and `other` are both in it,
        else k."""
        both = k > 0 and np.isfinite(self.out["x"][[self.ego_row, other], k - 1]).all()
        return k - 1 if both else k

    def _ran_into(self, other: int, k: int) -> bool:
        """Whether the ego ran into `other` (their contact at frame k): on the frame before,
        the other was ahead of the ego along its heading, the gap that closed was the
        longitudinal one (the lateral one for a vehicle merging into the ego's side), and the
        ego was faster along its heading than the other (and moving forward)."""
        out, e, st = self.out, self.ego_row, self.st
        j = self._frame_before(other, k)
        h = float(out["heading"][e, j])
        dx, dy = out["x"][other, j] - out["x"][e, j], out["y"][other, j] - out["y"][e, j]
        lon = dx * math.cos(h) + dy * math.sin(h)
        lat = -dx * math.sin(h) + dy * math.cos(h)
        lon_gap = abs(lon) - 0.5 * float(st.length[e] + st.length[other])
        lat_gap = abs(lat) - 0.5 * float(st.width[e] + st.width[other])
        # and the ego moved toward it (not: a stopped ego that a recorded car backs into)
        v_e = out["vx"][e, j] * math.cos(h) + out["vy"][e, j] * math.sin(h)
        v_o = out["vx"][other, j] * math.cos(h) + out["vy"][other, j] * math.sin(h)
        return bool(lon > 0.0 and lon_gap >= lat_gap and v_e > max(v_o, 0.0))

    def _contact(self, other: int, k: int, ran_into: bool) -> dict:
        """A new ego collision at frame k: when, with whom, and the speeds on the frame
        before it."""
        out, e = self.out, self.ego_row
        j = self._frame_before(other, k)
        vx, vy = out["vx"][[e, other], j].astype(float), out["vy"][[e, other], j].astype(float)
        return {"t_s": round(float(self.tr.t[k] - self.tr.t[0]), 4),
                "partner_id": int(self.st.ids[other]), "ran_into": ran_into,
                "ego_speed_mps": float(math.hypot(vx[0], vy[0])),
                "rel_speed_mps": float(math.hypot(vx[0] - vx[1], vy[0] - vy[1]))}

    # ---- the result ------------------------------------------------------------------

    def result(self, fitted: bool) -> ReplayResult:
        tr, n_t = self.tr, self.k_end + 1
        ids = np.concatenate([tr.ids, self.st.ids[tr.n_agents:]]).astype(np.int64)
        length = np.concatenate([tr.length, self.st.length[tr.n_agents:]]).astype(np.float32)
        width = np.concatenate([tr.width, self.st.width[tr.n_agents:]]).astype(np.float32)
        kind = None
        if tr.kind is not None or self.new_ego:
            base = tr.kind if tr.kind is not None else np.full(tr.n_agents, -1, np.int8)
            kind = np.concatenate([base, np.zeros(self.cap - tr.n_agents, np.int8)])
        ego = self.ego_row if self.ego_row >= 0 else (tr.ego if tr.ego >= 0 else -1)
        meta = {
            "source": "replay", "dt": self.dt,
            "replay_of": {k: tr.meta.get(k) for k in ("source", "scenario", "seed", "file")
                          if tr.meta.get(k) is not None},
            "reactive": self.spec.reactive,
            "ego_id": int(ids[ego]) if ego >= 0 else None,
            "ego_from_s": self.ego_from_s,
            "ego_replaces": self.spec.ego_agent,
            "switched": {str(k): v for k, v in self.switched.items()},
            "road": "fitted" if fitted else "recorded",
        }
        if "junction" in tr.meta:
            meta["junction"] = tr.meta["junction"]
        out = {k: v[:, :n_t] for k, v in self.out.items()}
        lane = self.out_lane[:, :n_t]
        todo = np.isfinite(out["x"]) & (lane < 0)  # recorded samples: located on the road
        if todo.any():
            lane[todo] = self.locator.locate(out["x"][todo], out["y"][todo])[0]
        tracks = Tracks(t=tr.t[:n_t].copy(), **out, length=length, width=width, ids=ids,
                        meta=meta, kind=kind, lane=lane, ego=int(ego),
                        collided=self.collided[:, :n_t], road=self.road)
        mean_v = self.ego_speed_sum / self.ego_steps if self.ego_steps else float("nan")
        return ReplayResult(
            tracks=tracks, ego_collisions=self.ego_collisions,
            sim_collisions=self.sim_collisions, data_collisions=self.data_collisions,
            switched=dict(self.switched),
            ego_id=int(ids[self.ego_row]) if self.ego_row >= 0 else None,
            ego_from_s=self.ego_from_s, ego_distance_m=self.ego_dist,
            ego_mean_speed_mps=mean_v, ego_min_gap_m=self.ego_min_gap, road_fitted=fitted,
            steps=self.k_end, ego_contacts=list(self.ego_contacts))


def _n_substeps(frame_dt_s: float) -> int:
    """Sub-steps per recorded frame: frames coarser than MAX_SUBSTEP_S are split."""
    return max(1, int(math.ceil(frame_dt_s / MAX_SUBSTEP_S - 1e-9)))


def substep_s(tracks: Tracks) -> float:
    """The replay's simulation step for a recording, s: its frame interval, split into
    sub-steps of at most MAX_SUBSTEP_S (what a control hook's forecaster must work at)."""
    dt = float(tracks.t[1] - tracks.t[0])
    return dt / _n_substeps(dt)


def road_of(tracks: Tracks) -> Road:
    """The road a recording is replayed on: its own, else one fitted to it."""
    return tracks.road if tracks.road is not None else fit_road(tracks)


@dataclass
class RecordedFuture:
    """The `oracle` forecaster of log replay: each agent's recorded future (sim.forecast's
    Predictor protocol, one mode, zero uncertainty).

    Samples are found by agent id and prediction time (s from the recording's first time
    stamp, as the replay's control hook sees it); positions are interpolated linearly
    between frames. Past the agent's last recorded frame (it leaves the recording) it goes on
    at its last recorded velocity. Agents a reactive replay switched to IDM are forecast by
    the recorded future they no longer follow."""

    tracks: Tracks
    dt_s: float
    name: str = "oracle"
    history_steps: int = 0
    n_neighbors: int = 0

    def __post_init__(self) -> None:
        self._row = {int(i): r for r, i in enumerate(self.tracks.ids)}
        self._t = (self.tracks.t - self.tracks.t[0]).astype(float)
        self._present = self.tracks.present

    def predict(self, history, horizon_steps: int):
        from sim.forecast import Prediction

        tr, n = self.tracks, history.n_samples
        rows = np.array([self._row.get(int(i), -1) for i in history.ids], np.int64)
        if (rows < 0).any():
            raise ValueError(f"oracle: agent {int(history.ids[rows < 0][0])} is not in the "
                             f"recording")
        t = history.t_s[:, None] + self.dt_s * np.arange(1, horizon_steps + 1)  # (S, F)
        kf = np.interp(t, self._t, np.arange(len(self._t), dtype=float))
        k0 = np.minimum(np.floor(kf).astype(np.int64), tr.n_steps - 1)
        k1 = np.minimum(k0 + 1, tr.n_steps - 1)
        w = kf - k0
        r = rows[:, None]
        both = self._present[r, k1]
        ok = self._present[r, k0] & (both | (w < 1e-9)) & (t <= self._t[-1])
        xy = np.full((n, horizon_steps, 2), np.nan)
        for c, name in enumerate(("x", "y")):
            a = getattr(tr, name).astype(float)
            xy[..., c] = np.where(ok, a[r, k0] + w * np.where(both, a[r, k1] - a[r, k0], 0.0),
                                  np.nan)
        # after its last recorded frame: from its last recorded point at its velocity there
        # (from now, at the velocity seen now, if the recording holds nothing ahead)
        if not ok.all():
            j = np.arange(horizon_steps)
            last = np.maximum.accumulate(np.where(ok, j, -1), axis=1)  # (S, F)
            has = last >= 0
            lc = np.maximum(last, 0)
            s_ = np.arange(n)[:, None]
            kb = k0[s_, lc]
            v = np.stack([tr.vx[r, kb], tr.vy[r, kb]], -1).astype(float)
            base = xy[s_, lc]
            tb = t[s_, lc]
            v = np.where(has[..., None], v, np.nan_to_num(history.vxy[:, -1])[:, None])
            base = np.where(has[..., None], base, history.xy[:, -1][:, None])
            tb = np.where(has, tb, history.t_s[:, None])
            xy = np.where(ok[..., None], xy, base + v * (t - tb)[..., None])
        return Prediction(xy=xy[:, None], prob=np.ones((n, 1)),
                          sigma_m=np.zeros((n, 1, horizon_steps, 2)))


def _subset(st: TrafficState, rows: np.ndarray) -> TrafficState:
    """The rows' fields as a small state (for behaviour functions that take a state)."""
    values = {}
    for name, value in vars(st).items():
        if isinstance(value, np.ndarray) and name != "inflow_next_s" and len(value) == st.capacity:
            values[name] = value[rows]
    return st.evolve(**values)


def _junction_of(tracks: Tracks, road: Road):
    """The recording's junction control (its signal plan), if it has one."""
    if not road.in_junction.any() or "junction" not in tracks.meta:
        return None
    from sim.intersection import junction_from_description

    try:
        return junction_from_description(road, tracks.meta["junction"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ReplayError(f"meta.junction: not a signal plan this road can use ({exc})") \
            from None
