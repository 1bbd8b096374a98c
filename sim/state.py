"""TrafficState: all vehicles at one time, one row per vehicle, fixed capacity.

Rows are reused: a vehicle that leaves the road clears `active` and a later arrival takes
its row, so memory stays flat however long a run lasts. `ids` are unique over a run.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from sim.spec import DriverDist

KIND_CAR = 0
KIND_TRUCK = 1

ROLE_BACKGROUND = 0
ROLE_EGO = 1
ROLE_ACTOR = 2  # a vehicle placed and scripted by the scenario (sim/events.py)


@dataclass(frozen=True, eq=False)
class TrafficState:
    """All vehicles at time t_s. Arrays are (C,) for capacity C; row i = vehicle slot i.

    Units: metres, seconds, m/s, m/s^2, radians. Rows with active False hold stale values.
    """

    t_s: float
    step: int
    next_id: int
    # pose and motion (world frame)
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray  # rad, 0 along +x, counter-clockwise positive
    speed: np.ndarray  # m/s along the direction of travel, never negative
    vx: np.ndarray  # m/s world-frame velocity (includes the bicycle's slip angle)
    vy: np.ndarray
    accel: np.ndarray  # m/s^2, the last applied longitudinal command
    tan_steer: np.ndarray  # tangent of the last applied front-wheel angle
    # lane (Frenet) coordinates, refreshed after every move
    lane: np.ndarray  # int64 lane index, -1 off road
    s: np.ndarray  # m along the lane's centre line
    d: np.ndarray  # m left of the lane's centre line
    station: np.ndarray  # m along the road's reference line (orders vehicles across lanes)
    lane_heading: np.ndarray  # rad, heading of the lane's centre line at s
    lane_curvature: np.ndarray  # 1/m, curvature of the lane's centre line at s
    # lane change in progress
    lane_from: np.ndarray  # int64 lane being left, -1 when not changing lanes
    lc_elapsed_s: np.ndarray
    lc_duration_s: np.ndarray
    lc_d0_m: np.ndarray  # lateral offset from the target lane's centre when the change began
    # vehicle and driver
    ids: np.ndarray  # int64, -1 for free rows
    kind: np.ndarray  # int8 KIND_*
    role: np.ndarray  # int8 ROLE_*
    length: np.ndarray
    width: np.ndarray
    v0_mps: np.ndarray
    time_gap_s: np.ndarray
    min_gap_m: np.ndarray
    max_accel_mps2: np.ndarray
    comf_decel_mps2: np.ndarray
    politeness: np.ndarray
    safe_decel_mps2: np.ndarray
    accel_threshold_mps2: np.ndarray
    lane_change_s: np.ndarray
    turn: np.ndarray  # int8 movement wanted at the next junction (sim.road.TURN_*), -1 none
    # bookkeeping
    active: np.ndarray  # bool
    collided: np.ndarray  # bool, overlaps another vehicle now
    inflow_next_s: np.ndarray  # (L,) time of the next arrival at each lane's start, inf none
    # runtime state of scripted events (sim/events.ScriptState), None without a script
    script: object = None

    def evolve(self, **changes) -> TrafficState:
        """A copy with some fields replaced (dataclasses.replace, without its per-call cost,
        which matters in the step loop)."""
        unknown = changes.keys() - _FIELD_NAMES
        if unknown:
            raise TypeError(f"TrafficState has no field(s) {sorted(unknown)}")
        new = object.__new__(TrafficState)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    @property
    def capacity(self) -> int:
        return len(self.x)

    @property
    def n_active(self) -> int:
        return int(np.count_nonzero(self.active))



_FIELD_NAMES = frozenset(f.name for f in fields(TrafficState))


def empty_state(capacity: int, n_lanes: int) -> TrafficState:
    """A state with `capacity` free rows and no arrivals scheduled."""
    values = {}
    for f in fields(TrafficState):
        if f.name in ("t_s", "step", "next_id"):
            values[f.name] = 0.0 if f.name == "t_s" else 0
        elif f.name in ("lane", "lane_from", "ids"):
            values[f.name] = np.full(capacity, -1, np.int64)
        elif f.name in ("kind", "role"):
            values[f.name] = np.zeros(capacity, np.int8)
        elif f.name == "turn":
            values[f.name] = np.full(capacity, -1, np.int8)
        elif f.name in ("active", "collided"):
            values[f.name] = np.zeros(capacity, bool)
        elif f.name == "script":
            values[f.name] = None
        elif f.name == "inflow_next_s":
            values[f.name] = np.full(n_lanes, np.inf)
        else:
            values[f.name] = np.zeros(capacity)
    for name, value in DEFAULT_DRIVER.items():  # a typical car until rows are written
        values[name][:] = value
    return TrafficState(**values)


DEFAULT_DRIVER = dict(length=4.5, width=1.8, v0_mps=30.0, time_gap_s=1.5, min_gap_m=2.0,
                      max_accel_mps2=1.5, comf_decel_mps2=2.0, politeness=0.3,
                      safe_decel_mps2=3.0, accel_threshold_mps2=0.2, lane_change_s=4.0)


def sample_vehicles(rng: np.random.Generator, n: int, truck_share,
                    car: DriverDist, truck: DriverDist) -> dict[str, np.ndarray]:
    """Draw n vehicles: kind, size and driver parameters, each (n,).

    truck_share is a number or (n,) per vehicle. Both classes are drawn and then selected,
    so the random stream consumed depends only on n.
    """
    is_truck = rng.random(n) < truck_share
    values = np.where(is_truck[:, None], truck.sample(rng, n), car.sample(rng, n))
    out = {"kind": np.where(is_truck, KIND_TRUCK, KIND_CAR).astype(np.int8)}
    for j, name in enumerate(DriverDist.FIELDS):
        out[name.removesuffix("_m") if name in ("length_m", "width_m") else name] = values[:, j]
    return out


def wheelbase_m(length: np.ndarray) -> np.ndarray:
    """(N,) wheelbase from body length: 60 % of the length, as for cars and rigid trucks."""
    return 0.6 * length
