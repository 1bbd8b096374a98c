"""WorldSpec: everything a simulation needs to start, as frozen dataclasses with units.

A scenario file becomes a WorldSpec (scenarios/ does the parsing); `sim/` only reads this type.
Cross-field checks raise ValueError in __post_init__.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from sim import road as road_mod


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

    BUILDERS = ("straight_highway", "curved_highway", "on_ramp_highway")

    def __post_init__(self) -> None:
        if self.kind not in self.BUILDERS:
            raise ValueError(f"road kind must be one of {', '.join(self.BUILDERS)}")

    def build(self) -> road_mod.Road:
        return getattr(road_mod, self.kind)(**self.params)


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

    def __post_init__(self) -> None:
        if not 0 <= self.flow_vph_per_lane <= 3000:
            raise ValueError("flow_vph_per_lane must be in [0, 3000] veh/h/lane")
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

    def __post_init__(self) -> None:
        if self.lane < 0 or self.speed_mps < 0 or self.desired_speed_mps <= 0:
            raise ValueError("ego lane and speeds must be non-negative (desired speed > 0)")
        if not (2.0 <= self.length_m <= 20.0 and 1.0 <= self.width_m <= 3.0):
            raise ValueError("ego size out of range (length 2-20 m, width 1-3 m)")


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

    def __post_init__(self) -> None:
        if not 0.01 <= self.dt_s <= 0.5:
            raise ValueError("dt_s must be in [0.01, 0.5] s")
        if not 0 < self.duration_s <= 24 * 3600:
            raise ValueError("duration_s must be in (0, 86400] s")
        if not 0 <= self.seed < 2**63:
            raise ValueError("seed must be a non-negative integer")
