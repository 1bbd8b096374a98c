"""WorldSpec: everything a simulation needs to start, as frozen dataclasses with units.

A scenario file becomes a WorldSpec (scenarios/ does the parsing); `sim/` only reads this type.
Cross-field checks raise ValueError in __post_init__.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from sim import road as road_mod


class FieldError(ValueError):
    """A bad value of one field. `field` is a key path relative to the object checked (e.g.
    "decel_mps2", or "events[2].actor" from WorldSpec); the message says what was expected."""

    def __init__(self, field: str, expected: str):
        super().__init__(f"{field}: {expected}")
        self.field = field
        self.expected = expected


# nominal drivers of the ego and of scripted actors:
#   idm       IDM car following and MOBIL lane changes, like background traffic
#   idm_lane  IDM car following, never changes lanes by itself
#   cruise    holds its set speed and its lane whatever is ahead (no car following)
DRIVERS = ("idm", "idm_lane", "cruise")
FOLLOW_ACTORS = ("always", "in_lane", "never")  # EgoSpec.follow_actors
MAX_SPEED_MPS = 70.0  # fastest speed a scenario may ask for
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")


@dataclass(frozen=True)
class Dist:
    """A normal distribution truncated (by clipping) to [lo, hi]; std 0 gives a constant."""

    mean: float
    std: float = 0.0
    lo: float = -np.inf
    hi: float = np.inf

    def __post_init__(self) -> None:
        if not np.isfinite(self.mean) or self.std < 0 or not self.lo <= self.mean <= self.hi:
            raise ValueError(f"bad distribution {self}: need std >= 0 and lo <= mean <= hi")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n,) draws; always consumes n normals so streams stay aligned across specs."""
        z = rng.standard_normal(n)
        return np.clip(self.mean + self.std * z, self.lo, self.hi)


@dataclass(frozen=True)
class DriverDist:
    """Per-vehicle behaviour and size distributions of one vehicle class."""

    v0_mps: Dist  # IDM desired speed
    time_gap_s: Dist  # IDM safe time headway T
    min_gap_m: Dist  # IDM jam distance s0
    max_accel_mps2: Dist  # IDM maximum acceleration a
    comf_decel_mps2: Dist  # IDM comfortable deceleration b
    politeness: Dist  # MOBIL p
    safe_decel_mps2: Dist  # MOBIL b_safe: the most a new follower may be made to brake
    accel_threshold_mps2: Dist  # MOBIL a_thr: the least advantage worth a lane change
    length_m: Dist
    width_m: Dist
    lane_change_s: Dist  # duration of the lateral manoeuvre

    FIELDS = ("v0_mps", "time_gap_s", "min_gap_m", "max_accel_mps2", "comf_decel_mps2",
              "politeness", "safe_decel_mps2", "accel_threshold_mps2", "length_m", "width_m",
              "lane_change_s")

    @cached_property
    def table(self) -> np.ndarray:
        """(4, F) mean, std, lo, hi of the FIELDS, for sampling many vehicles at once."""
        return np.array([[getattr(getattr(self, f), a) for f in self.FIELDS]
                         for a in ("mean", "std", "lo", "hi")])

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, F) draws of the FIELDS (truncated normals)."""
        mean, std, lo, hi = self.table
        return np.minimum(np.maximum(mean + std * rng.standard_normal((n, len(mean))), lo), hi)


CAR = DriverDist(
    v0_mps=Dist(33.0, 3.5, 22.0, 45.0),
    time_gap_s=Dist(1.3, 0.25, 0.8, 2.2),
    min_gap_m=Dist(2.0, 0.3, 1.5, 3.0),
    max_accel_mps2=Dist(1.5, 0.25, 0.8, 2.5),
    comf_decel_mps2=Dist(2.0, 0.3, 1.2, 3.0),
    politeness=Dist(0.3, 0.15, 0.0, 1.0),
    safe_decel_mps2=Dist(3.0, 0.3, 2.0, 4.0),
    accel_threshold_mps2=Dist(0.1, 0.03, 0.05, 0.2),
    length_m=Dist(4.6, 0.35, 3.8, 5.5),
    width_m=Dist(1.85, 0.08, 1.6, 2.1),
    lane_change_s=Dist(4.0, 0.4, 3.5, 5.0),
)

TRUCK = DriverDist(
    v0_mps=Dist(24.0, 1.0, 22.0, 26.5),
    time_gap_s=Dist(1.7, 0.2, 1.2, 2.5),
    min_gap_m=Dist(3.0, 0.3, 2.5, 4.0),
    max_accel_mps2=Dist(0.7, 0.1, 0.4, 1.0),
    comf_decel_mps2=Dist(1.5, 0.2, 1.0, 2.0),
    politeness=Dist(0.5, 0.1, 0.2, 1.0),
    safe_decel_mps2=Dist(2.0, 0.2, 1.5, 2.5),
    accel_threshold_mps2=Dist(0.15, 0.03, 0.1, 0.25),
    length_m=Dist(14.0, 2.0, 10.0, 18.0),
    width_m=Dist(2.5, 0.03, 2.4, 2.6),
    lane_change_s=Dist(4.5, 0.3, 4.0, 5.0),
)


@dataclass(frozen=True)
class RoadSpec:
    """A road builder name and its keyword parameters (see sim/road.py)."""

    kind: str = "straight_highway"
    params: dict = field(default_factory=dict)

    BUILDERS = ("straight_highway", "curved_highway", "on_ramp_highway",
                "four_way_intersection")

    def __post_init__(self) -> None:
        if self.kind not in self.BUILDERS:
            raise ValueError(f"road kind must be one of {', '.join(self.BUILDERS)}")

    def build(self) -> road_mod.Road:
        return getattr(road_mod, self.kind)(**self.params)


# movements through a four-way intersection: "<arm>_<turn>", e.g. "E_left" (from the east arm)
MOVEMENTS = tuple(f"{arm}_{turn}" for arm in road_mod.ARMS for turn in road_mod.TURN_NAMES)
CONTROLS = ("signals", "priority")


@dataclass(frozen=True)
class PhaseSpec:
    """One signal phase: movements (MOVEMENTS names) with the right of way (protected) and
    movements that may go but yield to conflicting traffic (permissive), for green_s; amber_s
    and all_red_s of the IntersectionSpec follow for movements that lose their green."""

    protected: tuple[str, ...] = ()
    permissive: tuple[str, ...] = ()
    green_s: float = 20.0

    def __post_init__(self) -> None:
        for key in ("protected", "permissive"):
            for i, m in enumerate(getattr(self, key)):
                if m not in MOVEMENTS:
                    raise FieldError(f"{key}[{i}]", "a movement <arm>_<turn> with arm E, N, W "
                                     "or S and turn left, straight or right")
        both = set(self.protected) & set(self.permissive)
        if both:
            raise FieldError("permissive", f"movements not also protected ({sorted(both)[0]})")
        if not self.protected and not self.permissive:
            raise FieldError("protected", "at least one movement with green in the phase")
        if not 1.0 <= self.green_s <= 300.0:
            raise FieldError("green_s", "a green time in [1, 300] s")


@dataclass(frozen=True)
class IntersectionSpec:
    """Control and routes of a four_way_intersection road (ignored on other roads).

    control "signals": a fixed-time plan; `phases` or, when empty, the default plan of four
    phases: E/W protected left (left_green_s, skipped when 0), E/W straight and right with
    permissive left (green_s), then the same for N/S. control "priority": no signals, the
    major_axis arms ("EW" or "NS") have the right of way, the minor arms yield (approaching
    at no more than yield_speed_mps) and left turns yield to oncoming traffic.
    """

    control: str = "signals"
    # share of each approach's arrivals turning left, going straight, turning right: one
    # triple for every arm, or four (E, N, W, S). Right turns come from the rightmost lane,
    # left turns from the leftmost.
    turn_shares: tuple = (0.2, 0.6, 0.2)
    phases: tuple[PhaseSpec, ...] = ()
    green_s: float = 20.0  # default plan: straight/right green of each axis, s
    left_green_s: float = 6.0  # default plan: protected left green of each axis, s (0 none)
    amber_s: float = 3.0
    all_red_s: float = 2.0
    offset_s: float = 0.0  # the plan's time at t = 0, s
    major_axis: str = "EW"  # priority control: arms with the right of way
    gap_margin_s: float = 1.5  # least time between clearing a conflict zone and a foe arriving
    yield_speed_mps: float = 5.0  # most speed at a yield line (priority control, minor arms)
    amber_decel_mps2: float = 3.0  # on amber, stop if this deceleration suffices, else go
    turn_lat_accel_mps2: float = 2.0  # speed through turns: sqrt(this * radius)
    ego_turn: str = "straight"  # the ego's movement at the junction

    def __post_init__(self) -> None:
        if self.control not in CONTROLS:
            raise FieldError("control", f"one of {', '.join(CONTROLS)}")
        try:
            shares = np.asarray(self.turn_shares, dtype=float) if _is_numeric_nested(
                self.turn_shares) else None
        except ValueError:  # ragged lists
            shares = None
        if shares is None or shares.shape not in ((3,), (4, 3)) or not np.all(
                np.isfinite(shares)):
            raise FieldError("turn_shares", "three shares (left, straight, right) or four "
                             "such triples (E, N, W, S)")
        rows = shares.reshape(-1, 3)
        for i, row in enumerate(rows):
            where = "turn_shares" if shares.ndim == 1 else f"turn_shares[{i}]"
            if np.any(row < 0) or abs(row.sum() - 1.0) > 1e-6:
                raise FieldError(where, "non-negative shares that sum to 1")
        for name, lo, hi in (("green_s", 1.0, 300.0), ("left_green_s", 0.0, 120.0),
                             ("amber_s", 2.0, 8.0), ("all_red_s", 0.0, 10.0),
                             ("offset_s", 0.0, 3600.0), ("gap_margin_s", 0.0, 10.0),
                             ("yield_speed_mps", 1.0, 20.0), ("amber_decel_mps2", 1.0, 8.0),
                             ("turn_lat_accel_mps2", 0.5, 6.0)):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise FieldError(name, f"a value in [{lo:g}, {hi:g}]")
        if self.major_axis not in ("EW", "NS"):
            raise FieldError("major_axis", "EW or NS")
        if self.ego_turn not in road_mod.TURN_NAMES:
            raise FieldError("ego_turn", "left, straight or right")

    @property
    def shares_by_arm(self) -> np.ndarray:
        """(4, 3) left, straight, right shares of the E, N, W, S approaches."""
        shares = np.asarray(self.turn_shares, float)
        return np.broadcast_to(shares, (4, 3)).copy()


def _is_numeric_nested(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_numeric_nested(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrafficSpec:
    """Background traffic: inflow per entry lane, vehicle mix and driver distributions."""

    flow_vph_per_lane: float = 1500.0  # inflow at each main entry lane, veh/h/lane
    ramp_flow_vph: float = 600.0  # inflow on an on-ramp, veh/h
    truck_share: float = 0.1
    min_headway_s: float = 0.8  # shortest entry time headway (shifted exponential headways)
    initial_fill: bool = True  # start with the road populated at the inflow density
    car: DriverDist = CAR
    truck: DriverDist = TRUCK
    # per main entry lane (lane 0 first), replacing flow_vph_per_lane when given, veh/h
    lane_flows_vph: tuple[float, ...] = ()
    # initial fill density, veh/km, one value for every lane or one per main lane (lane 0
    # first); empty: fill at the spacing the inflow implies at 28 m/s
    density_vpkm_per_lane: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.flow_vph_per_lane <= 3000:
            raise ValueError("flow_vph_per_lane must be in [0, 3000] veh/h/lane")
        for i, flow in enumerate(self.lane_flows_vph):
            if not 0 <= flow <= 3000:
                raise FieldError(f"lane_flows_vph[{i}]", "a flow in [0, 3000] veh/h")
            if flow > 0 and 3600.0 / flow <= self.min_headway_s:
                raise FieldError(f"lane_flows_vph[{i}]", "a flow whose mean headway exceeds "
                                 "min_headway_s")
        for i, density in enumerate(self.density_vpkm_per_lane):
            if not 0 <= density <= 150:
                raise FieldError(f"density_vpkm_per_lane[{i}]", "a density in [0, 150] veh/km")
        if not 0 <= self.ramp_flow_vph <= 2000:
            raise ValueError("ramp_flow_vph must be in [0, 2000] veh/h")
        if not 0 <= self.truck_share <= 1:
            raise ValueError("truck_share must be in [0, 1]")
        if not 0.3 <= self.min_headway_s <= 5:
            raise ValueError("min_headway_s must be in [0.3, 5] s")
        for flow in (self.flow_vph_per_lane, self.ramp_flow_vph):
            if flow > 0 and 3600.0 / flow <= self.min_headway_s:
                raise ValueError("flow too high for min_headway_s: mean headway must exceed it")


@dataclass(frozen=True)
class EgoSpec:
    """The ego vehicle: where it starts and how it wants to drive."""

    lane: int = 1
    station_m: float = 200.0
    speed_mps: float = 27.0
    desired_speed_mps: float = 30.0
    length_m: float = 4.7
    width_m: float = 1.9
    time_gap_s: float = 1.5
    politeness: float = 0.3
    # nominal driving (see DRIVERS): "idm" follows and changes lanes like traffic; "cruise"
    # holds desired_speed_mps and its lane whatever is ahead (the Euro NCAP vehicle under test
    # without its safety layer)
    driver: str = "idm"
    # whether the nominal car following (IDM) treats scripted actors as leaders (FOLLOW_ACTORS):
    # "always"; "in_lane" only once an actor is fully in the ego's lane (an ACC's late target
    # selection: a cut-in is ignored while it moves over); "never" (they are hazards only the
    # avoidance layer may answer). Background traffic is always followed.
    follow_actors: str = "always"
    avoidance: str = "none"  # the safety layer's mode, resolved by name by main.py

    def __post_init__(self) -> None:
        _integer("lane", self.lane, 0, 63)
        _number("station_m", self.station_m, 0.0, 200_000.0)
        _number("speed_mps", self.speed_mps, 0.0, MAX_SPEED_MPS)
        _number("desired_speed_mps", self.desired_speed_mps, 0.0, MAX_SPEED_MPS, lo_open=True)
        _number("length_m", self.length_m, 2.0, 20.0)
        _number("width_m", self.width_m, 1.0, 3.0)
        _number("time_gap_s", self.time_gap_s, 0.3, 5.0)
        _number("politeness", self.politeness, 0.0, 1.0)
        if self.follow_actors not in FOLLOW_ACTORS:
            raise FieldError("follow_actors", f"one of {', '.join(FOLLOW_ACTORS)}")
        if self.driver not in DRIVERS:
            raise FieldError("driver", f"one of {', '.join(DRIVERS)}")
        if not isinstance(self.avoidance, str) or not _NAME_RE.fullmatch(self.avoidance):
            raise FieldError("avoidance", "a mode name such as none, reactive, cv, kalman, rnn")


# ---- scripted actors and events (what scenario files add) ---------------------------------

ACTOR_KINDS = ("car", "truck", "obstacle")
ACTOR_SIZE_M = {"car": (4.5, 1.8), "truck": (12.0, 2.5), "obstacle": (1.0, 1.0)}  # length, width
PLACEMENTS = ("station_m", "offset_m", "gap_m", "headway_s", "ttc_s")
EVENT_TYPES = ("brake", "speed_change", "stall", "lane_change", "cut_in")
TRIGGERS = ("at_s", "when_gap_m", "when_ttc_s", "after")
EVENT_MAX_DECEL_MPS2 = 9.0  # the braking limit (sim/behavior.MAX_DECEL_MPS2)
EVENT_MAX_ACCEL_MPS2 = 5.0
REQUIRED = "required"
# per event type: its settings and their defaults (REQUIRED: no default)
EVENT_SETTINGS = {
    "brake": {"decel_mps2": REQUIRED, "to_speed_mps": 0.0},
    "speed_change": {"to_speed_mps": REQUIRED, "accel_mps2": 2.0},
    "stall": {"decel_mps2": 4.0, "duration_s": math.inf},
    "lane_change": {"to_lane": None, "direction": None, "duration_s": 4.0},
    "cut_in": {"duration_s": 2.0},
}
_EVENT_SETTING_NAMES = ("decel_mps2", "accel_mps2", "to_speed_mps", "duration_s", "to_lane",
                        "direction")


def _number(name: str, value, lo: float, hi: float, lo_open: bool = False,
            what: str = "") -> None:
    """FieldError unless value is a real number in [lo, hi] ((lo, hi] if lo_open)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        left = "(" if lo_open else "["
        raise FieldError(name, f"a number in {left}{lo:g}, {hi:g}]{' ' + what if what else ''}")


def _integer(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not lo <= value <= hi:
        raise FieldError(name, f"an integer in [{lo}, {hi}]")


def _name(field_name: str, value, allow_ego: bool) -> None:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or (
            value == "ego" and not allow_ego):
        raise FieldError(field_name, "a name of up to 64 letters, digits, _ or -"
                         + ("" if allow_ego else " other than 'ego'"))


@dataclass(frozen=True)
class ActorSpec:
    """A vehicle the scenario places and scripts (e.g. the Euro NCAP target), named for events.

    Longitudinal placement, exactly one of (along the road's reference line):
      station_m  station of the actor's centre, m
      offset_m   centre-to-centre distance ahead of the ego (negative: behind), m
      gap_m      bumper gap ahead of the ego (the actor's rear to the ego's front), m
      headway_s  gap = headway_s x ego speed, s
      ttc_s      gap = ttc_s x (ego speed - actor speed), s (the ego must be faster)
    Lateral placement, at most one of: lateral_offset_m (m left of the lane centre, held while
    in that lane) or overlap_pct (Euro NCAP overlap, same lane as the ego: the share of the
    ego's width the actor covers; positive puts the actor to the ego's right, negative to its
    left, 100 centred). Unset length_m, width_m take the kind's size, desired_speed_mps the
    start speed. An obstacle never moves (speed 0, no events).
    """

    name: str
    lane: int
    station_m: float | None = None
    offset_m: float | None = None
    gap_m: float | None = None
    headway_s: float | None = None
    ttc_s: float | None = None
    lateral_offset_m: float | None = None
    overlap_pct: float | None = None
    speed_mps: float = 0.0
    desired_speed_mps: float | None = None
    kind: str = "car"
    driver: str = "cruise"
    length_m: float | None = None
    width_m: float | None = None
    time_gap_s: float = 1.3
    max_accel_mps2: float = 1.5
    comf_decel_mps2: float = 2.0

    def __post_init__(self) -> None:
        _name("name", self.name, allow_ego=False)
        _integer("lane", self.lane, 0, 63)
        if self.kind not in ACTOR_KINDS:
            raise FieldError("kind", f"one of {', '.join(ACTOR_KINDS)}")
        if self.driver not in DRIVERS:
            raise FieldError("driver", f"one of {', '.join(DRIVERS)}")
        given = [p for p in PLACEMENTS if getattr(self, p) is not None]
        if len(given) != 1:
            raise FieldError(given[1] if given else "station_m",
                             "exactly one of " + ", ".join(PLACEMENTS))
        for name, lo, hi, lo_open in (("station_m", 0.0, 200_000.0, False),
                                      ("offset_m", -10_000.0, 10_000.0, False),
                                      ("gap_m", 0.0, 10_000.0, False),
                                      ("headway_s", 0.0, 60.0, True),
                                      ("ttc_s", 0.0, 60.0, True)):
            if getattr(self, name) is not None:
                _number(name, getattr(self, name), lo, hi, lo_open)
        if self.lateral_offset_m is not None and self.overlap_pct is not None:
            raise FieldError("overlap_pct", "either overlap_pct or lateral_offset_m, not both")
        if self.lateral_offset_m is not None:
            _number("lateral_offset_m", self.lateral_offset_m, -3.0, 3.0)
        if self.overlap_pct is not None:
            _number("overlap_pct", self.overlap_pct, -100.0, 100.0)
            if self.overlap_pct == 0:
                raise FieldError("overlap_pct", "a non-zero overlap in [-100, 100] %")
        _number("speed_mps", self.speed_mps, 0.0, MAX_SPEED_MPS)
        if self.desired_speed_mps is None:
            object.__setattr__(self, "desired_speed_mps", float(self.speed_mps))
        _number("desired_speed_mps", self.desired_speed_mps, 0.0, MAX_SPEED_MPS)
        length_m, width_m = ACTOR_SIZE_M[self.kind]
        if self.length_m is None:
            object.__setattr__(self, "length_m", length_m)
        if self.width_m is None:
            object.__setattr__(self, "width_m", width_m)
        _number("length_m", self.length_m, 0.2, 25.0)
        _number("width_m", self.width_m, 0.2, 3.5)
        _number("time_gap_s", self.time_gap_s, 0.3, 5.0)
        _number("max_accel_mps2", self.max_accel_mps2, 0.2, EVENT_MAX_ACCEL_MPS2)
        _number("comf_decel_mps2", self.comf_decel_mps2, 0.5, EVENT_MAX_DECEL_MPS2)
        if self.kind == "obstacle":
            if self.speed_mps != 0 or self.desired_speed_mps != 0:
                raise FieldError("speed_mps", "0 for an obstacle (it never moves)")
            if self.driver != "cruise":
                raise FieldError("driver", "'cruise' for an obstacle (it never moves)")

    @property
    def placement(self) -> str:
        """The longitudinal placement key given (one of PLACEMENTS)."""
        return next(p for p in PLACEMENTS if getattr(self, p) is not None)

    def place(self, ego: EgoSpec | None) -> tuple[float, float]:
        """(station of the actor's centre, m; lateral offset, m left of the lane centre)."""
        if self.station_m is not None:
            station_m = float(self.station_m)
        else:
            if ego is None:
                raise FieldError(self.placement, "station_m (relative placement needs an ego)")
            if self.offset_m is not None:
                station_m = ego.station_m + self.offset_m
            else:
                if self.gap_m is not None:
                    gap_m = self.gap_m
                elif self.headway_s is not None:
                    gap_m = self.headway_s * ego.speed_mps
                else:
                    gap_m = self.ttc_s * (ego.speed_mps - self.speed_mps)
                station_m = ego.station_m + 0.5 * (ego.length_m + self.length_m) + gap_m
        if self.overlap_pct is None:
            return station_m, float(self.lateral_offset_m or 0.0)
        if ego is None:
            raise FieldError("overlap_pct", "an ego (the overlap is with the ego)")
        share = abs(self.overlap_pct) / 100.0
        shift = 0.0 if share == 1.0 else max(
            0.5 * (ego.width_m + self.width_m) - share * ego.width_m, 0.0)
        return station_m, -math.copysign(shift, self.overlap_pct) if shift else 0.0


@dataclass(frozen=True)
class EventSpec:
    """A scripted event: what an actor (or the ego) does, and when.

    Trigger, exactly one of: at_s (simulation time, s), when_gap_m (the signed bumper gap
    between the actor and the ego reaches this value from either side: positive with the
    actor ahead, m), when_ttc_s (the ego's time to collision with the actor ahead drops to
    this, s), after (another event's name: when it finishes). The action starts delay_s
    after the trigger. Settings per type: EVENT_SETTINGS (units in the names).
    """

    type: str
    actor: str
    at_s: float | None = None
    when_gap_m: float | None = None
    when_ttc_s: float | None = None
    after: str | None = None
    delay_s: float = 0.0
    name: str | None = None
    decel_mps2: float | None = None
    accel_mps2: float | None = None
    to_speed_mps: float | None = None
    duration_s: float | None = None
    to_lane: int | None = None
    direction: str | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise FieldError("type", f"one of {', '.join(EVENT_TYPES)}")
        _name("actor", self.actor, allow_ego=self.type != "cut_in")
        if self.name is not None:
            _name("name", self.name, allow_ego=True)
        given = [t for t in TRIGGERS if getattr(self, t) is not None]
        if len(given) != 1:
            raise FieldError(given[1] if given else "at_s",
                             "exactly one trigger: " + ", ".join(TRIGGERS))
        if self.at_s is not None:
            _number("at_s", self.at_s, 0.0, 86_400.0)
        if self.when_gap_m is not None:
            _number("when_gap_m", self.when_gap_m, -10_000.0, 10_000.0)
        if self.when_ttc_s is not None:
            _number("when_ttc_s", self.when_ttc_s, 0.0, 60.0, lo_open=True)
        if self.after is not None:
            _name("after", self.after, allow_ego=True)
            if self.after == self.name:
                raise FieldError("after", "another event's name (not its own)")
        _number("delay_s", self.delay_s, 0.0, 86_400.0)
        settings = EVENT_SETTINGS[self.type]
        for key in _EVENT_SETTING_NAMES:
            value = getattr(self, key)
            if key not in settings:
                if value is not None:
                    raise FieldError(key, f"no setting of a {self.type} event (its settings: "
                                     f"{', '.join(settings) or 'none'})")
            elif value is None:
                if settings[key] is REQUIRED:
                    raise FieldError(key, f"a value: required for a {self.type} event")
                if settings[key] is not None:
                    object.__setattr__(self, key, settings[key])
        if self.decel_mps2 is not None:
            _number("decel_mps2", self.decel_mps2, 0.0, EVENT_MAX_DECEL_MPS2, lo_open=True)
        if self.accel_mps2 is not None:
            _number("accel_mps2", self.accel_mps2, 0.0, EVENT_MAX_ACCEL_MPS2, lo_open=True)
        if self.to_speed_mps is not None:
            _number("to_speed_mps", self.to_speed_mps, 0.0, MAX_SPEED_MPS)
        if self.type == "stall":
            _number("duration_s", self.duration_s, 0.0, math.inf, lo_open=True)
        elif self.duration_s is not None:
            _number("duration_s", self.duration_s, 1.0, 10.0, what="(the lateral manoeuvre)")
        if self.type == "lane_change":
            if (self.to_lane is None) == (self.direction is None):
                raise FieldError("direction", "exactly one of direction and to_lane")
            if self.to_lane is not None:
                _integer("to_lane", self.to_lane, 0, 63)
            if self.direction is not None and self.direction not in ("left", "right"):
                raise FieldError("direction", "left or right")

    @property
    def trigger(self) -> str:
        """The trigger key given (one of TRIGGERS)."""
        return next(t for t in TRIGGERS if getattr(self, t) is not None)


@dataclass(frozen=True)
class WorldSpec:
    """What a scenario becomes: road, traffic, ego, duration, step and seed."""

    road: RoadSpec = field(default_factory=RoadSpec)
    traffic: TrafficSpec = field(default_factory=TrafficSpec)
    ego: EgoSpec | None = field(default_factory=EgoSpec)
    duration_s: float = 60.0
    dt_s: float = 0.1
    seed: int = 0
    name: str = "highway"
    actors: tuple[ActorSpec, ...] = ()  # scripted vehicles (ids 1, 2, ... in this order)
    events: tuple[EventSpec, ...] = ()
    description: str = ""
    case: int | None = None  # sweep case number; None for a scenario without a sweep
    case_params: tuple[tuple[str, object], ...] = ()  # (key path, value) of the swept keys
    intersection: IntersectionSpec = field(default_factory=IntersectionSpec)  # junction roads

    def __post_init__(self) -> None:
        if not 0.01 <= self.dt_s <= 0.5:
            raise ValueError("dt_s must be in [0.01, 0.5] s")
        if not 0 < self.duration_s <= 24 * 3600:
            raise ValueError("duration_s must be in (0, 86400] s")
        if not 0 <= self.seed < 2**63:
            raise ValueError("seed must be a non-negative integer")
        self._check_script()

    def _check_script(self) -> None:
        """Cross-checks of actors and events (FieldError with paths like events[2].actor)."""
        ego = self.ego
        actors: dict[str, ActorSpec] = {}
        for i, a in enumerate(self.actors):
            if a.name in actors:
                raise FieldError(f"actors[{i}].name", f"a name not used by another actor "
                                 f"('{a.name}' is taken)")
            actors[a.name] = a
            if ego is None and a.station_m is None:
                raise FieldError(f"actors[{i}].{a.placement}",
                                 "station_m: relative placement needs an ego")
            if a.overlap_pct is not None and ego is not None and a.lane != ego.lane:
                raise FieldError(f"actors[{i}].overlap_pct",
                                 "an actor in the ego's lane (the overlap is with the ego)")
            if a.ttc_s is not None and ego is not None and not ego.speed_mps > a.speed_mps:
                raise FieldError(f"actors[{i}].ttc_s", "an ego faster than the actor (a time "
                                 "to collision needs a closing speed)")
        names: set[str] = set()
        for i, e in enumerate(self.events):
            if e.actor == "ego":
                if ego is None:
                    raise FieldError(f"events[{i}].actor", "an actor name (there is no ego)")
                if e.when_gap_m is not None or e.when_ttc_s is not None:
                    raise FieldError(f"events[{i}].{e.trigger}", "at_s or after for an ego "
                                     "event (gaps and TTC are measured to the ego)")
            elif e.actor not in actors:
                raise FieldError(f"events[{i}].actor", "'ego' or a declared actor ("
                                 + (", ".join(actors) or "none declared") + ")")
            elif actors[e.actor].kind == "obstacle":
                raise FieldError(f"events[{i}].actor", "an actor that can move (an obstacle "
                                 "has no events)")
            if ego is None and (e.when_gap_m is not None or e.when_ttc_s is not None
                                or e.type == "cut_in"):
                raise FieldError(f"events[{i}].{e.trigger if e.type != 'cut_in' else 'type'}",
                                 "an ego (this event is relative to the ego)")
            if e.after is not None and e.after not in names:
                raise FieldError(f"events[{i}].after", "the name of an earlier event")
            if e.name is not None:
                if e.name in names:
                    raise FieldError(f"events[{i}].name", f"a name not used by another event "
                                     f"('{e.name}' is taken)")
                names.add(e.name)
