"""Junction control for all rows at once: routes, signals or priority rules, and conflicts.

A `Junction` is derived once from a road with connector lanes (`Road.in_junction`) and an
`IntersectionSpec`: which connector serves which movement ("E_left": from the east arm, turning
left), where connectors conflict (precomputed from geometry: a reference vehicle box is swept
along every pair of connectors and the stretches where the boxes overlap are the conflict
zones), the signal plan, and each approach lane's turning probabilities.

Every step, `control` turns the state into IDM constraints (virtual obstacles and leaders) and
speed caps, following these rules:

- Red, or amber while a comfortable stop (amber_decel_mps2) is still possible: stop at the line
  (on red braking as hard as it takes, up to RED_STOP_DECEL_MPS2).
- A vehicle that can no longer stop comfortably before its stop line, or whose front is past
  it, is *committed*: it never stops at the line again, and everybody else keeps clear of it.
- An uncommitted vehicle with green enters only if, for every conflict zone on its path, each
  relevant foe (committed, or with green and a higher rank: protected before permissive,
  major before minor, first come first served among equals) is either through the zone before
  it arrives, or arrives gap_margin_s after it has cleared the zone (for merges: after it has
  entered); and only if its exit lane has room for it (nobody enters the box unless it can
  clear it). Otherwise it stops at the line.
- Two committed vehicles heading for the same crossing zone: the later one stops before the
  zone. On merges and diverges, the vehicle behind (in distance to the merge point, or along
  the shared start) follows the one ahead as if they shared a lane.
- Turns are driven at no more than sqrt(turn_lat_accel_mps2 * radius); minor-road vehicles
  under priority control reach their yield line at no more than yield_speed_mps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from sim import collision
from sim.road import TURN_LEFT, TURN_NAMES, TURN_NONE, TURN_RIGHT, TURN_STRAIGHT, Road
from sim.spec import MOVEMENTS, FieldError, IntersectionSpec, PhaseSpec

SIG_RED = 0
SIG_AMBER = 1
SIG_GREEN = 2

CONFLICT_CROSS = 0
CONFLICT_MERGE = 1  # the two connectors end in the same lane
CONFLICT_DIVERGE = 2  # the two connectors start from the same lane

# vehicle boxes swept along the connectors to find conflict zones: cars up to this size, and
# (when the traffic has any) one class for everything longer or wider, sized to the longest
# vehicle the scenario can draw. A vehicle is in the first class it fits.
CAR_CLASS_M = (5.5, 2.1)  # length, width
ZONE_CLEARANCE_M = 0.3  # added all round the swept boxes
ZONE_DS_M = (0.5, 1.0)  # sampling step along connectors: cars, long vehicles
SLIP_LEVER = 0.3  # l_r / length: 60 % wheelbase, centre of gravity midway (sim/dynamics.py)
STOPPED_MPS = 1.0  # foes slower than this are also checked as obstacles where they stand
LOOK_M = 200.0  # approach vehicles this close to the stop line take part in conflicts
FOLLOW_MARGIN_S = 0.5  # a vehicle may arrive at a zone this long after a foe has left it
STOP_MARGIN_M = 0.5  # vehicles stop with their front this far before the stop line
RED_STOP_DECEL_MPS2 = 8.0  # hardest braking for a red light (the physical limit is 9)
WAIT_SIGNAL = 1  # red, or amber with room to stop
WAIT_YIELD = 2  # a foe has the right of way or is already committed
WAIT_BLOCKED = 3  # no room on the exit lane
FIRST_STATION_M = -1.0e6  # a station before any lane's start (LaneIndex.neighbours: first)

_PRIORITY_RANK = {  # (major arm, turn) -> rank under priority control
    (True, TURN_STRAIGHT): 0, (True, TURN_RIGHT): 0, (True, TURN_LEFT): 1,
    (False, TURN_STRAIGHT): 2, (False, TURN_RIGHT): 2, (False, TURN_LEFT): 3,
}
_YIELD_RANK = 2  # priority control: movements of this rank and above approach at yield speed


@dataclass(frozen=True, eq=False)
class Junction:
    """Fixed data of one junction. Connector arrays are (K,), lane arrays (L,), conflict
    arrays (Q,) with every conflicting pair listed in both orders; metres, seconds."""

    spec: IntersectionSpec
    road: Road
    conn_lane: np.ndarray  # (K,) lane of each connector
    conn_of_lane: np.ndarray  # (L,) connector index of a lane, -1 for other lanes
    conn_from: np.ndarray  # (K,) approach lane
    conn_to: np.ndarray  # (K,) exit lane
    conn_move: np.ndarray  # (K,) movement index into MOVEMENTS (arm * 3 + turn)
    conn_len: np.ndarray  # (K,) m
    conn_speed_mps: np.ndarray  # (K,) curve speed cap, inf on straight connectors
    is_approach: np.ndarray  # (L,) bool, the lane ends at a stop line
    is_exit: np.ndarray  # (L,) bool, the lane starts at the junction's edge
    feeder: np.ndarray  # (L, 3) connector that brings a vehicle with turn t to an exit lane
    turn_prob: np.ndarray  # (L, 3) P(straight, left, right) of arrivals on each entry lane
    cf_i: np.ndarray  # (Q,) connector of the vehicle deciding
    cf_j: np.ndarray  # (Q,) connector of the foe
    # (Q, 4, 4): for size classes (c_i, c_j) at [:, 2 * c_i + c_j], the zone [a_i, b_i] on
    # connector i and [a_j, b_j] on j, centre positions m from each connector's start (may
    # extend past its ends); NaN where vehicles of those sizes do not conflict there
    cf_zone: np.ndarray
    # (Q, 4, S, 2): for size classes (c_i, c_j), the first and last centre position on
    # connector i whose box overlaps a box of class c_j standing on connector j at its
    # sample k (position -class length + k * ZONE_DS_M[c_j]), NaN for none
    cf_reach: np.ndarray
    cf_type: np.ndarray  # (Q,) int8 CONFLICT_*
    phases: tuple[PhaseSpec, ...]  # the signal plan (empty under priority control)
    phase_green: np.ndarray  # (P, 12) int8: 0 red, 1 permissive green, 2 protected green
    phase_start_s: np.ndarray  # (P + 1,) start of each phase in the cycle; last = cycle
    priority_rank: np.ndarray  # (12,) ranks under priority control
    size_classes: tuple = (CAR_CLASS_M,)  # (length m, width m) of the swept size classes

    def size_class(self, length_m: np.ndarray, width_m: np.ndarray) -> np.ndarray:
        """(N,) size class of vehicles: 0 for those that fit the car class, else 1."""
        car_l, car_w = self.size_classes[0]
        fits = (length_m <= car_l + 1e-9) & (width_m <= car_w + 1e-9)
        return np.where(fits | (len(self.size_classes) == 1), 0, 1)

    @property
    def signals(self) -> bool:
        return self.spec.control == "signals"

    @property
    def cycle_s(self) -> float:
        return float(self.phase_start_s[-1]) if self.signals else 0.0

    # ---- signals -------------------------------------------------------------------------

    def movement_states(self, t_s: float):
        """Signal state (SIG_*) and rank of the 12 movements at time t_s, each (12,) int8.
        Rank 0 has the right of way; higher ranks yield to conflicting lower ones."""
        if not self.signals:
            return np.full(12, SIG_GREEN, np.int8), self.priority_rank
        spec = self.spec
        tc = (t_s + spec.offset_s) % self.cycle_s
        p = int(np.searchsorted(self.phase_start_s, tc, side="right") - 1)
        p = min(p, len(self.phases) - 1)
        tau = tc - self.phase_start_s[p]
        green, nxt = self.phase_green[p], self.phase_green[(p + 1) % len(self.phases)]
        state = np.full(12, SIG_RED, np.int8)
        rank = np.where(green == 2, 0, 1).astype(np.int8)
        if tau < self.phases[p].green_s:
            state[green > 0] = SIG_GREEN
            return state, rank
        # change interval: movements green in both phases stay green (the weaker rank holds),
        # the others see amber, then all-red
        both = (green > 0) & (nxt > 0)
        state[both] = SIG_GREEN
        rank = np.where(both & ((green == 1) | (nxt == 1)), 1, rank).astype(np.int8)
        if tau < self.phases[p].green_s + spec.amber_s:
            state[(green > 0) & ~both] = SIG_AMBER
        return state, rank

    def lane_signals(self, t_s: float) -> np.ndarray:
        """(L,) int8 signal state (SIG_*) of each connector lane's movement at t_s, -1 for
        lanes that are not connectors (for drawing: the light at the connector's start)."""
        state, _ = self.movement_states(t_s)
        out = np.full(self.road.n_lanes, -1, np.int8)
        out[self.conn_lane] = state[self.conn_move]
        return out

    def describe(self) -> dict:
        """JSON-able settings (the track file's meta 'junction'); `from_description` rebuilds."""
        d = asdict(self.spec)
        d["turn_shares"] = np.asarray(self.spec.turn_shares, float).tolist()
        d["phases"] = [asdict(p) | {"protected": list(p.protected),
                                    "permissive": list(p.permissive)} for p in self.phases]
        d["cycle_s"] = self.cycle_s
        return d

    # ---- routes ------------------------------------------------------------------------

    def draw_turns(self, rng: np.random.Generator, lanes: np.ndarray) -> np.ndarray:
        """(N,) int8 TURN_* for vehicles arriving on `lanes` (one uniform draw each)."""
        u = rng.random(len(lanes))
        cum = np.cumsum(self.turn_prob[lanes], axis=1)
        pick = np.minimum((u[:, None] >= cum).sum(axis=1), 2)
        return np.where(self.is_approach[lanes], pick, TURN_NONE).astype(np.int8)


def build_junction(spec: IntersectionSpec, road: Road, inflow_vph: np.ndarray,
                   max_size_m: tuple[float, float] = CAR_CLASS_M) -> Junction:
    """Derive a Junction from a road with connector lanes. max_size_m: the longest and widest
    vehicle that will drive on it (m). ValueError (naming the setting) on turn shares the
    lanes cannot serve or a signal plan whose protected movements conflict."""
    conn_lane = np.flatnonzero(road.in_junction)
    if len(conn_lane) == 0:
        raise ValueError("the road has no junction (no lanes in_junction)")
    n_l = road.n_lanes
    conn_of_lane = np.full(n_l, -1, np.int64)
    conn_of_lane[conn_lane] = np.arange(len(conn_lane))
    conn_from = np.full(len(conn_lane), -1, np.int64)
    for lane in range(n_l):
        for nxt in road.successors(lane):
            if road.in_junction[nxt] and not road.in_junction[lane]:
                conn_from[conn_of_lane[nxt]] = lane
    conn_to = road.successor[conn_lane]
    if np.any(conn_from < 0) or np.any(conn_to < 0) or np.any(road.in_junction[conn_to]):
        raise ValueError("every connector needs one approach lane before it and one exit "
                         "lane after it")
    is_approach = np.zeros(n_l, bool)
    is_approach[conn_from] = True
    is_exit = np.zeros(n_l, bool)
    is_exit[conn_to] = True
    # the arm an approach comes from, from the lane's direction (east = 0, counter-clockwise)
    end = road.lane_start[1:] - 1
    h_in = road.seg_heading[end[conn_from]]
    arm = np.round(((h_in + math.pi) % (2 * math.pi)) / (math.pi / 2)).astype(np.int64) % 4
    turn = road.turn[conn_lane].astype(np.int64)
    conn_move = arm * 3 + turn
    conn_len = road.length_m[conn_lane]
    kappa = np.array([np.abs(road.curvature[road.lane_start[k]:road.lane_start[k + 1]]).max()
                      for k in conn_lane])
    conn_speed = np.where(kappa > 1e-4, np.sqrt(spec.turn_lat_accel_mps2
                                                / np.maximum(kappa, 1e-9)), np.inf)
    feeder = np.full((n_l, 3), -1, np.int64)
    feeder[conn_to, turn] = np.arange(len(conn_lane))
    turn_prob = _turn_probabilities(spec, road, inflow_vph, conn_from, arm, turn)
    classes = [CAR_CLASS_M]
    if max_size_m[0] > CAR_CLASS_M[0] + 1e-9 or max_size_m[1] > CAR_CLASS_M[1] + 1e-9:
        classes.append((max(max_size_m[0], CAR_CLASS_M[0]), max(max_size_m[1], CAR_CLASS_M[1])))
    ci, cj, zone, reach = conflict_zones(road, conn_lane, tuple(classes), conn_from, conn_to)
    ctype = np.where(conn_from[ci] == conn_from[cj], CONFLICT_DIVERGE,
                     np.where(conn_to[ci] == conn_to[cj], CONFLICT_MERGE, CONFLICT_CROSS))
    phases = ()
    phase_green = np.zeros((0, 12), np.int8)
    phase_start = np.zeros(1)
    if spec.control == "signals":
        phases = spec.phases or default_phases(spec)
        phase_green = np.zeros((len(phases), 12), np.int8)
        for p, ph in enumerate(phases):
            phase_green[p, [MOVEMENTS.index(m) for m in ph.permissive]] = 1
            phase_green[p, [MOVEMENTS.index(m) for m in ph.protected]] = 2
        _check_plan(phases, phase_green, conn_move, ci, cj, ctype, zone)
        lengths = [ph.green_s + spec.amber_s + spec.all_red_s for ph in phases]
        phase_start = np.concatenate([[0.0], np.cumsum(lengths)])
    major = np.isin(np.arange(4), (0, 2) if spec.major_axis == "EW" else (1, 3))
    priority_rank = np.array([_PRIORITY_RANK[bool(major[m // 3]), m % 3] for m in range(12)],
                             np.int8)
    return Junction(
        spec=spec, road=road, conn_lane=conn_lane, conn_of_lane=conn_of_lane,
        conn_from=conn_from, conn_to=conn_to, conn_move=conn_move, conn_len=conn_len,
        conn_speed_mps=conn_speed, is_approach=is_approach, is_exit=is_exit, feeder=feeder,
        turn_prob=turn_prob, cf_i=ci, cf_j=cj, cf_zone=zone, cf_reach=reach,
        cf_type=ctype.astype(np.int8), phases=tuple(phases), phase_green=phase_green,
        phase_start_s=phase_start, priority_rank=priority_rank, size_classes=tuple(classes))


def junction_from_description(road: Road, description: dict) -> Junction:
    """Rebuild a Junction from a road and `Junction.describe()` (a track file's meta)."""
    d = {k: v for k, v in description.items() if k in IntersectionSpec.__dataclass_fields__}
    d["turn_shares"] = _tuplify(d.get("turn_shares", (0.2, 0.6, 0.2)))
    d["phases"] = tuple(PhaseSpec(protected=tuple(p["protected"]),
                                  permissive=tuple(p["permissive"]), green_s=p["green_s"])
                        for p in d.get("phases", ()))
    d["turn_shares"] = (0.0, 1.0, 0.0)  # routes are not needed to show or obey the signals
    spec = IntersectionSpec(**d)
    return build_junction(spec, road, np.where(road.entry, 1.0, 0.0))


def _tuplify(v):
    return tuple(_tuplify(x) for x in v) if isinstance(v, (list, tuple)) else v


def default_phases(spec: IntersectionSpec) -> tuple[PhaseSpec, ...]:
    """Protected lefts (if left_green_s > 0), then straight and right with permissive lefts,
    for the E/W axis, then the N/S axis."""
    out = []
    for a, b in (("E", "W"), ("N", "S")):
        if spec.left_green_s > 0:
            out.append(PhaseSpec(protected=(f"{a}_left", f"{b}_left"),
                                 green_s=spec.left_green_s))
        out.append(PhaseSpec(protected=(f"{a}_straight", f"{a}_right", f"{b}_straight",
                                        f"{b}_right"),
                             permissive=(f"{a}_left", f"{b}_left"), green_s=spec.green_s))
    return tuple(out)


def _check_plan(phases, phase_green, conn_move, ci, cj, ctype, zone) -> None:
    """Protected movements of one phase must not cross or merge for cars (conflicts that only
    long vehicles have are settled first come, first served)."""
    hard = (ctype != CONFLICT_DIVERGE) & ~np.isnan(zone[:, 0, 0])
    for p in range(len(phases)):
        prot = phase_green[p][conn_move] == 2
        bad = hard & prot[ci] & prot[cj]
        if bad.any():
            q = int(np.flatnonzero(bad)[0])
            m1, m2 = MOVEMENTS[conn_move[ci[q]]], MOVEMENTS[conn_move[cj[q]]]
            raise FieldError(f"intersection.phases[{p}].protected",
                             f"movements that neither cross nor merge ({m1} and {m2} do: make "
                             "one of them permissive or move it to another phase)")


def _turn_probabilities(spec, road, inflow_vph, conn_from, arm, turn) -> np.ndarray:
    """(L, 3) turning probabilities of arrivals per approach lane meeting the arm's shares:
    left turns come from the lanes that have a left connector, right turns likewise."""
    shares = spec.shares_by_arm  # (4, 3) left, straight, right
    prob = np.zeros((road.n_lanes, 3))
    lanes_of_arm: dict[int, list[int]] = {}
    for lane, a in zip(conn_from, arm):
        lanes_of_arm.setdefault(int(a), [])
        if lane not in lanes_of_arm[int(a)]:
            lanes_of_arm[int(a)].append(int(lane))
    can = np.zeros((road.n_lanes, 3), bool)
    can[conn_from, turn] = True
    for a, lanes in lanes_of_arm.items():
        lanes = np.array(sorted(lanes))
        flows = np.asarray(inflow_vph, float)[lanes]
        total = flows.sum()
        p_left, p_straight, p_right = shares[a]
        name = "ENWS"[a]
        need = {TURN_LEFT: p_left * total, TURN_RIGHT: p_right * total}
        for t, demand in need.items():
            if demand <= 0:
                continue
            serving = lanes[can[lanes, t]]
            cap = np.asarray(inflow_vph, float)[serving].sum()
            if cap <= 0 or demand > cap * (1 + 1e-9):
                raise FieldError("intersection.turn_shares", (
                    f"shares the lanes can carry (the {name} arm's {TURN_NAMES[t]} share "
                    f"{demand / max(total, 1e-9):.2f} exceeds the share of its traffic in "
                    f"lanes that can turn {TURN_NAMES[t]})"))
            frac = demand / cap
            prob[serving, t] = frac
        over = prob[lanes, TURN_LEFT] + prob[lanes, TURN_RIGHT] > 1 + 1e-9
        if over.any():
            raise FieldError("intersection.turn_shares", f"shares the lanes can carry (the "
                             f"{name} arm's single lane cannot carry that many turns)")
        prob[lanes, TURN_STRAIGHT] = np.maximum(
            1.0 - prob[lanes, TURN_LEFT] - prob[lanes, TURN_RIGHT], 0.0)
        # lanes without a straight connector (none in the builder) send the rest to turns
        no_straight = ~can[lanes, TURN_STRAIGHT]
        if no_straight.any():
            raise ValueError(f"road: the {name} arm has a lane without a straight connector")
    return prob


_ZONE_CACHE: dict[bytes, tuple] = {}


def conflict_zones(road: Road, conn_lane: np.ndarray, classes: tuple = (CAR_CLASS_M,),
                   conn_from: np.ndarray | None = None, conn_to: np.ndarray | None = None):
    """Where connector lanes conflict, from geometry. For each size class (length, width), a
    box (plus ZONE_CLEARANCE_M all round) is swept along each connector, extended by the class
    length into the lanes before and after it (conn_from, conn_to (K,); default: straight
    on), pointing along the lane and also turned
    inwards by the slip angle a body of the class length has on the lane's curve (its centre
    of gravity tracks the lane); two connectors conflict where the boxes overlap.

    Returns ci, cj (Q,) connector indices (every conflicting pair in both orders), zones
    (Q, 4, 4) as in Junction.cf_zone, and reach (Q, 4, S, 2) as in Junction.cf_reach. Pairs
    with the same relative geometry (the arms of a symmetric junction) are computed once."""
    n_cls = len(classes)
    if len(conn_lane) < 2:
        e = np.empty(0, np.int64)
        return e, e, np.empty((0, 4, 4)), np.empty((0, 4, 1, 2))
    samples = []  # [class][connector] -> s, x, y, (headings of the two poses)
    for c, (length, _) in enumerate(classes):
        ds = ZONE_DS_M[min(c, 1)]
        per = []
        for k, lane in enumerate(conn_lane):
            s = np.arange(-length, road.length_m[lane] + length + 1e-9, ds)
            on, at = np.full(len(s), lane), s.copy()
            if conn_from is not None:  # the stretches before and after lie on those lanes
                before, after = s < 0.0, s > road.length_m[lane]
                on[before], at[before] = conn_from[k], road.length_m[conn_from[k]] + s[before]
                on[after], at[after] = conn_to[k], s[after] - road.length_m[lane]
            x, y, h, kappa, _ = road.pose_at(on, at)
            beta = np.arcsin(np.clip(SLIP_LEVER * length * kappa, -0.9, 0.9))
            per.append((s, x, y, (h, h - beta)))
        samples.append(per)
    boxes = [(lg + 2 * ZONE_CLEARANCE_M, w + 2 * ZONE_CLEARANCE_M) for lg, w in classes]
    n_max = max(len(p[0]) for per in samples for p in per)
    rows = []
    for i in range(len(conn_lane)):
        for j in range(i + 1, len(conn_lane)):
            key = _pair_key(road, conn_lane[i], conn_lane[j], classes)
            if key not in _ZONE_CACHE:
                n_pair = max(len(samples[c][k][0]) for c in range(n_cls) for k in (i, j))
                _ZONE_CACHE[key] = _pair_zones(samples, boxes, i, j, n_pair)
            zone, reach_ij, reach_ji = _ZONE_CACHE[key]
            if zone is None:
                continue
            pad = ((0, 0), (0, n_max - reach_ij.shape[1]), (0, 0))
            reach_ij = np.pad(reach_ij, pad, constant_values=np.nan)
            reach_ji = np.pad(reach_ji, pad, constant_values=np.nan)
            swapped = zone[[0, 2, 1, 3]][:, [2, 3, 0, 1]]  # j deciding, i the foe
            rows.append((i, j, zone, reach_ij))
            rows.append((j, i, swapped, reach_ji))
    ci = np.array([r[0] for r in rows], np.int64)
    cj = np.array([r[1] for r in rows], np.int64)
    zones = np.array([r[2] for r in rows]).reshape(len(rows), 4, 4)
    reach_all = np.array([r[3] for r in rows]).reshape(len(rows), 4, n_max, 2)
    return ci, cj, zones, reach_all


def _pair_key(road: Road, lane_i: int, lane_j: int, classes: tuple) -> bytes:
    """Both lanes' vertices in lane i's frame (origin at its start, x along its start),
    rounded to a millimetre, with the classes: equal keys, equal zones."""
    a, b = road.lane_start[lane_i], road.lane_start[lane_i + 1]
    c, d = road.lane_start[lane_j], road.lane_start[lane_j + 1]
    x0, y0, h0 = road.px[a], road.py[a], road.seg_heading[a]
    co, si = math.cos(h0), math.sin(h0)
    pts = []
    for lo, hi in ((a, b), (c, d)):
        dx, dy = road.px[lo:hi] - x0, road.py[lo:hi] - y0
        pts.append(np.round(np.stack([dx * co + dy * si, dy * co - dx * si]), 3) + 0.0)
    head = np.array([b - a, d - c, *np.ravel(classes)], float)
    return head.tobytes() + pts[0].tobytes() + pts[1].tobytes()


def _pair_zones(samples, boxes, i: int, j: int, n_max: int):
    """Zones and reach tables of connectors i < j for every size-class combination."""
    zone = np.full((4, 4), np.nan)
    reach_ij = np.full((4, n_max, 2), np.nan)  # i's range per j sample
    reach_ji = np.full((4, n_max, 2), np.nan)
    n_cls = len(samples)
    for ca in range(n_cls):
        for cb in range(n_cls):
            si, xi, yi, hi = samples[ca][i]
            sj, xj, yj, hj = samples[cb][j]
            (la, wa), (lb, wb) = boxes[ca], boxes[cb]
            reach = 0.5 * (math.hypot(la, wa) + math.hypot(lb, wb))
            d2 = (xi[:, None] - xj[None, :]) ** 2 + (yi[:, None] - yj[None, :]) ** 2
            pi, pj = np.nonzero(d2 < reach * reach)
            if len(pi) == 0:
                continue
            hit = np.zeros(len(pi), bool)
            for ha in hi:
                for hb in hj:
                    todo = ~hit
                    hit[todo] = collision.boxes_overlap(
                        xi[pi[todo]], yi[pi[todo]], ha[pi[todo]], la, wa,
                        xj[pj[todo]], yj[pj[todo]], hb[pj[todo]], lb, wb)
            if not hit.any():
                continue
            pi, pj = pi[hit], pj[hit]
            zi, zj = si[pi], sj[pj]
            c = 2 * ca + cb
            zone[c] = (zi.min(), zi.max(), zj.min(), zj.max())
            reach_ij[c, :, 0] = _group(pj, zi, n_max, np.minimum, np.inf)
            reach_ij[c, :, 1] = _group(pj, zi, n_max, np.maximum, -np.inf)
            c_swap = 2 * cb + ca
            reach_ji[c_swap, :, 0] = _group(pi, zj, n_max, np.minimum, np.inf)
            reach_ji[c_swap, :, 1] = _group(pi, zj, n_max, np.maximum, -np.inf)
    if np.isnan(zone).all():
        return None, None, None
    return zone, reach_ij, reach_ji


def _group(idx: np.ndarray, values: np.ndarray, n: int, ufunc, empty: float) -> np.ndarray:
    """(n,) ufunc-reduction of values by idx; NaN where idx has no entry."""
    out = np.full(n, empty)
    ufunc.at(out, idx, values)
    return np.where(np.isfinite(out), out, np.nan)


# ---- the per-step control -----------------------------------------------------------------


@dataclass(frozen=True)
class JunctionControl:
    """One step's junction commands. IDM constraints (rows, bumper gap m, leader speed m/s),
    speed caps (rows, acceleration limit m/s^2), and what red-light accounting needs."""

    rows: np.ndarray
    gap_m: np.ndarray
    lead_speed_mps: np.ndarray
    cap_rows: np.ndarray
    cap_accel_mps2: np.ndarray
    red_rows: np.ndarray  # rows whose front is before a stop line showing red
    wait_rows: np.ndarray  # rows told to stop at their line this step
    wait_reason: np.ndarray  # int8 WAIT_* of each
    wait_for: np.ndarray  # row of a foe each one yields to (WAIT_YIELD), else -1
    yields: np.ndarray  # (Y, 2) rows: (vehicle, foe) it yields to this step, at its line or
    # before a conflict zone


def arrival_time_s(d_m, v_mps, a_mps2, v_max_mps) -> np.ndarray:
    """(N,) time to cover d_m >= 0 from speed v accelerating at a (> 0) up to v_max; a vehicle
    already faster than v_max holds its speed."""
    a = np.maximum(a_mps2, 1e-3)
    v = np.maximum(v_mps, 0.0)
    top = np.maximum(np.maximum(v_max_mps, v), 0.1)
    d = np.maximum(d_m, 0.0)
    d_acc = (top * top - v * v) / (2.0 * a)
    t_acc = (np.sqrt(v * v + 2.0 * a * d) - v) / a
    t_run = (top - v) / a + (d - d_acc) / top
    return np.where(d <= d_acc, t_acc, t_run)


def clear_time_s(d_m, v_mps, a_mps2, v_max_mps) -> np.ndarray:
    """(N,) conservative time for a foe to cover d_m: at its current acceleration when that
    is positive, else at its current speed; inf for a foe standing still."""
    accel = a_mps2 > 0.05
    t_acc = arrival_time_s(d_m, v_mps, np.where(accel, a_mps2, 1.0), v_max_mps)
    with np.errstate(divide="ignore"):
        t_const = np.where(v_mps > 0.1, np.maximum(d_m, 0.0) / np.maximum(v_mps, 0.1), np.inf)
    return np.where(accel, t_acc, t_const)


def control(st, junction: Junction, index) -> JunctionControl:
    """The junction's commands for this step (see the module docstring for the rules)."""
    j, road, spec = junction, junction.road, junction.spec
    lane_c = np.maximum(st.lane, 0)
    active = st.active & (st.lane >= 0)
    # participants: vehicles approaching (within LOOK_M), on a connector, or just past one
    app = active & j.is_approach[lane_c]
    app &= st.s - road.length_m[lane_c] > -LOOK_M
    on_conn = active & (j.conn_of_lane[lane_c] >= 0)
    turn_c = np.maximum(st.turn, 0)
    on_exit = active & j.is_exit[lane_c] & (st.s < j.size_classes[-1][0] + 5.0)
    on_exit &= j.feeder[lane_c, turn_c] >= 0
    rows = np.flatnonzero(app | on_conn | on_exit)
    empty = np.empty(0, np.int64)
    if len(rows) == 0:
        z = np.empty(0)
        return JunctionControl(empty, z, z, empty, z, empty, empty, np.empty(0, np.int8), empty,
                               np.empty((0, 2), np.int64))
    lane = lane_c[rows]
    conn = np.where(app[rows], j.conn_of_lane[road.next_lane(lane, st.turn[rows])],
                    np.where(on_conn[rows], j.conn_of_lane[lane], j.feeder[lane, turn_c[rows]]))
    keep = conn >= 0
    rows, lane, conn = rows[keep], lane[keep], conn[keep]
    is_app = app[rows]
    p = np.where(is_app, st.s[rows] - road.length_m[lane],
                 np.where(on_conn[rows], st.s[rows], j.conn_len[conn] + st.s[rows]))
    v, length = st.speed[rows], st.length[rows]
    front = p + 0.5 * length
    line_gap = -front  # front bumper to the stop line, m (negative: past it)
    v_cap = np.minimum(st.v0_mps[rows], j.conn_speed_mps[conn])
    committed = (front >= 0.0) | (line_gap < v * v / (2.0 * spec.amber_decel_mps2))
    state, rank_m = j.movement_states(st.t_s)
    move = j.conn_move[conn]
    sig = state[move]
    rank = rank_m[move].astype(np.int64)
    go = sig == SIG_GREEN  # uncommitted vehicles that may go, subject to conflicts and room
    # red, or amber with room to stop comfortably; and red whenever braking hard still stops
    # the vehicle before the line (it only runs a red it physically cannot stop for)
    red_stop = (sig == SIG_RED) & (front < 0.0) & (
        line_gap >= v * v / (2.0 * RED_STOP_DECEL_MPS2))
    stop = (~committed & ~go) | red_stop
    reason = np.where(stop, WAIT_SIGNAL, 0).astype(np.int8)
    wait_for = np.full(len(rows), -1, np.int64)
    cls = j.size_class(length, st.width[rows])
    pad = np.maximum(0.0, 0.5 * (length - j.size_classes[-1][0]))  # longer than any class
    lead = index.leader[rows]  # on the approach lane: nobody ahead, or a committed vehicle
    lead_front = st.s[np.maximum(lead, 0)] + 0.5 * st.length[np.maximum(lead, 0)]
    lead_committed = (lead_front >= road.length_m[lane]) | (
        road.length_m[lane] - lead_front
        < st.speed[np.maximum(lead, 0)] ** 2 / (2.0 * spec.amber_decel_mps2))
    head = ~is_app | (lead < 0) | lead_committed

    c_rows, c_gap, c_lead = [], [], []
    yields = [np.empty((0, 2), np.int64)]

    # ---- conflicts: every participant pair on conflicting connectors -------------------
    # only the heads of the queues and the committed take part: a driver further back cannot
    # reach a conflict before the one ahead of it (this keeps long queues cheap)
    live = np.flatnonzero(head | committed)
    A, B, q = _pairs(conn[live], j.cf_i, j.cf_j)
    A, B = live[A], live[B]
    if len(A):
        combo = 2 * cls[A] + cls[B]
        zone = j.cf_zone[q, combo]  # (M, 4)
        a_i, b_i = zone[:, 0] - pad[A], zone[:, 1] + pad[A]
        a_j, b_j = zone[:, 2] - pad[B], zone[:, 3] + pad[B]
        kind = j.cf_type[q]
        rel = (p[B] <= b_j) & (p[A] <= b_i)  # neither has left the zone (False for NaN)
        A, B, q, combo, a_i, b_i, a_j, b_j, kind = (
            x[rel] for x in (A, B, q, combo, a_i, b_i, a_j, b_j, kind))
        ra, rb = rows[A], rows[B]
        t_in_a = arrival_time_s(a_i - p[A], v[A], st.max_accel_mps2[ra], v_cap[A])
        t_out_a = arrival_time_s(b_i - p[A], v[A], st.max_accel_mps2[ra], v_cap[A])
        t_in_b = arrival_time_s(a_j - p[B], v[B], st.max_accel_mps2[rb], v_cap[B])
        t_out_b = clear_time_s(b_j - p[B], v[B], st.accel[rb], v_cap[B])
        before = p[A] < a_i  # A has not entered the zone yet
        b_first = (t_in_b < t_in_a) | ((t_in_b == t_in_a) & (rb < ra))
        margin = spec.gap_margin_s
        left_a = j.conn_len[conn[A]] - p[A]  # distance to the merge point
        left_b = j.conn_len[conn[B]] - p[B]
        b_ahead = left_b < left_a - 0.5 * (length[A] + length[B]) - st.min_gap_m[ra]
        clash = np.where(
            kind == CONFLICT_MERGE,
            ~((t_in_a + margin < t_in_b) | b_ahead),
            ~((t_out_a + margin < t_in_b) | (t_out_b + FOLLOW_MARGIN_S < t_in_a)))
        # a (nearly) standing foe is also an obstacle where it stands: the stretch of A's
        # path whose boxes overlap B's box there (long vehicles sweep over the spots where
        # others wait at their lines)
        cls_len = np.array([c[0] for c in j.size_classes])
        cls_ds = np.array(ZONE_DS_M[:len(j.size_classes)])
        k_b = np.round((p[B] + cls_len[cls[B]]) / cls_ds[cls[B]]).astype(np.int64)
        inside = (k_b >= 0) & (k_b < j.cf_reach.shape[2])
        span = j.cf_reach[q, combo, np.clip(k_b, 0, j.cf_reach.shape[2] - 1)]  # (M, 2)
        lo, hi = span[:, 0] - pad[A], span[:, 1] + pad[A]
        blocked = ((kind == CONFLICT_CROSS) & (v[B] < STOPPED_MPS) & inside
                   & (hi > p[A] + 0.25))
        if blocked.any():  # the size classes only shortlist: check the real bodies
            k = np.flatnonzero(blocked)
            lo_k = first_overlap(j, st, ra[k], conn[A[k]], p[A[k]], np.minimum(hi[k], b_i[k]),
                                 rb[k])
            blocked[k] = np.isfinite(lo_k)
            lo[k] = lo_k
        # an uncommitted foe counts only at the head of its queue (the ones behind it cannot
        # arrive before it; yielding to them could deadlock)
        prior = go[B] & head[B] & ((rank[B] < rank[A]) | ((rank[B] == rank[A]) & b_first))
        hard = kind != CONFLICT_DIVERGE
        may_wait = hard & before & ~committed[A] & clash
        # an uncommitted vehicle waits at its line; a foe that itself waits at its line this
        # step (found in a first pass) does not count, so chains of waiting vehicles cannot
        # close into a circle
        held = stop.copy()
        held[A[(may_wait & (committed[B] | prior)) | (blocked & ~committed[A])]] = True
        wait = (may_wait & (committed[B] | (prior & ~held[B]))) | (blocked & ~committed[A])
        waiting, first = np.unique(A[wait], return_index=True)
        new = ~stop[waiting]
        reason[waiting[new]] = WAIT_YIELD
        wait_for[waiting[new]] = rb[wait][first[new]]
        stop[waiting] = True
        yields.append(np.stack([ra[wait], rb[wait]], axis=1))
        # a committed vehicle yields to a committed foe that gets to a crossing zone first
        # (stopping before the zone), and stops short of a standing foe's box
        zone_stop = ((kind == CONFLICT_CROSS) & before & committed[A] & committed[B] & clash
                     & b_first)
        k = np.flatnonzero(zone_stop)
        k2 = np.flatnonzero(blocked & committed[A])
        if len(k) or len(k2):
            yields.append(np.stack([ra[k], rb[k]], axis=1))
            yields.append(np.stack([ra[k2], rb[k2]], axis=1))
            c_rows.append(np.concatenate([ra[k], ra[k2]]))
            target = np.concatenate([a_i[k], lo[k2]])
            at = np.concatenate([A[k], A[k2]])
            c_gap.append(target - p[at] + st.min_gap_m[rows[at]] - 0.3)
            c_lead.append(np.zeros(len(at)))
        # merges and diverges: follow the committed foe ahead as if in one lane
        div = (kind == CONFLICT_DIVERGE) & committed[B] & (p[B] > p[A])
        mer = (kind == CONFLICT_MERGE) & committed[B] & (left_b < left_a)
        follow = div | mer
        if follow.any():
            k = np.flatnonzero(follow)
            ahead = np.where(div[k], p[B[k]] - p[A[k]], left_a[k] - left_b[k])
            c_rows.append(ra[k])
            c_gap.append(ahead - 0.5 * (length[A[k]] + length[B[k]]))
            c_lead.append(v[B[k]])

    # ---- room on the exit lane: nobody enters the box unless it can clear it -----------
    cand = np.flatnonzero(~committed & ~stop)
    if len(cand):
        exit_lane = j.conn_to[conn]
        first, _ = index.neighbours(exit_lane[cand], np.full(len(cand), FIRST_STATION_M))
        rear = np.where(first >= 0, st.s[np.maximum(first, 0)]
                        - 0.5 * st.length[np.maximum(first, 0)], np.inf)
        inside = committed & (p < j.conn_len[conn])  # still to arrive on the exit lane
        need = np.zeros(road.n_lanes)
        np.add.at(need, exit_lane[inside], length[inside] + st.min_gap_m[rows[inside]])
        room = rear - need[exit_lane[cand]]
        full = room < length[cand] + st.min_gap_m[rows[cand]]
        stop[cand[full]] = True
        reason[cand[full]] = WAIT_BLOCKED

    # ---- stop lines --------------------------------------------------------------------
    cap_rows, cap_acc = [], []
    k = k_stop = np.flatnonzero(stop)
    if len(k):
        c_rows.append(rows[k])
        c_gap.append(line_gap[k] - STOP_MARGIN_M + st.min_gap_m[rows[k]])
        c_lead.append(np.zeros(len(k)))
        # IDM alone may roll over the line when its maximum acceleration is small (trucks):
        # also brake at least as hard as stopping at the line takes
        cap_rows.append(rows[k])
        r = rows[k]
        cap_acc.append(approach_accel(v[k], 0.0, line_gap[k] - 0.5 * STOP_MARGIN_M,
                                      st.max_accel_mps2[r], st.comf_decel_mps2[r]))

    # ---- speed caps: turns, and yield lines under priority control ---------------------
    curve = np.isfinite(j.conn_speed_mps[conn])
    k = np.flatnonzero(curve & ~is_app & (p < j.conn_len[conn]))
    if len(k):  # on the turn: IDM's free-road term with the curve speed as desired speed
        r = rows[k]
        ratio = v[k] / j.conn_speed_mps[conn[k]]
        cap_rows.append(r)
        cap_acc.append(st.max_accel_mps2[r] * (1.0 - ratio ** 4))
    target = np.where(curve & is_app, j.conn_speed_mps[conn], np.inf)
    dist = np.maximum(-p, 0.1)
    if not junction.signals:
        yielding = is_app & (rank >= _YIELD_RANK)
        target = np.where(yielding, np.minimum(target, spec.yield_speed_mps), target)
        dist = np.where(yielding, np.maximum(line_gap, 0.1), dist)
    k = np.flatnonzero(is_app & (v > target))
    if len(k):  # before it: brake to arrive at the target speed, gently when far away
        cap_rows.append(rows[k])
        r = rows[k]
        cap_acc.append(approach_accel(v[k], target[k], dist[k], st.max_accel_mps2[r],
                                      st.comf_decel_mps2[r]))

    red = np.flatnonzero(is_app & (sig == SIG_RED) & (front < 0.0))
    def cat(xs, dtype):
        return np.concatenate(xs) if xs else np.empty(0, dtype)

    return JunctionControl(cat(c_rows, np.int64), cat(c_gap, float), cat(c_lead, float),
                           cat(cap_rows, np.int64), cat(cap_acc, float), rows[red],
                           rows[k_stop], reason[k_stop], wait_for[k_stop],
                           np.concatenate(yields))


def approach_accel(v_mps, target_mps, dist_m, max_accel_mps2, comf_decel_mps2) -> np.ndarray:
    """(N,) acceleration limit for reaching the target speed dist_m ahead, in the spirit of
    IDM's interaction term: a (1 - (b / (b_comf / 2))^2) with b = (v^2 - target^2) / (2 d) the
    constant deceleration that would just do it. Far away it does not limit (a); braking
    sets in smoothly and settles where the limit equals -b, so the target is met at the
    point (with a deceleration near b_comf for typical drivers)."""
    d = np.maximum(dist_m, 0.01)
    b_req = np.maximum(v_mps * v_mps - target_mps * target_mps, 0.0) / (2.0 * d)
    ratio = b_req / (0.5 * comf_decel_mps2)
    return max_accel_mps2 * (1.0 - ratio * ratio)


def path_pose(junction: Junction, conn: np.ndarray, p_m: np.ndarray):
    """Pose on the route through connectors conn at positions p_m (m from each connector's
    start; negative on the approach lane, past its length on the exit lane). Returns x_m,
    y_m, heading_rad, curvature_1pm, each (N,)."""
    road = junction.road
    length = junction.conn_len[conn]
    lane = np.where(p_m < 0.0, junction.conn_from[conn],
                    np.where(p_m > length, junction.conn_to[conn], junction.conn_lane[conn]))
    s = np.where(p_m < 0.0, road.length_m[junction.conn_from[conn]] + p_m,
                 np.where(p_m > length, p_m - length, p_m))
    x, y, h, kappa, _ = road.pose_at(lane, s)
    return x, y, h, kappa


def first_overlap(junction: Junction, st, rows_a: np.ndarray, conn_a: np.ndarray,
                  p_a: np.ndarray, p_end: np.ndarray, rows_b: np.ndarray,
                  step_m: float = 0.5, clearance_m: float = 0.15) -> np.ndarray:
    """(K,) the first position on each vehicle a's path, from p_a to p_end, where its body
    (its own size, turned by its slip angle on curves, plus clearance_m all round) would
    overlap vehicle b's body where b stands now; NaN where none does (K pairs)."""
    span = np.maximum(p_end - p_a, 0.0)
    n = np.minimum(np.ceil(span / step_m).astype(np.int64) + 1, 200)
    pair = np.repeat(np.arange(len(rows_a)), n)
    k = np.arange(len(pair)) - np.repeat(np.cumsum(n) - n, n)
    pos = np.minimum(p_a[pair] + step_m * k, p_end[pair])
    ra, rb = rows_a[pair], rows_b[pair]
    x, y, h, kappa = path_pose(junction, conn_a[pair], pos)
    length = st.length[ra]
    h = h - np.arcsin(np.clip(SLIP_LEVER * length * kappa, -0.9, 0.9))
    c2 = 2.0 * clearance_m
    hit = collision.boxes_overlap(x, y, h, length + c2, st.width[ra] + c2,
                                  st.x[rb], st.y[rb], st.heading[rb], st.length[rb] + c2,
                                  st.width[rb] + c2)
    first = np.full(len(rows_a), np.inf)
    np.minimum.at(first, pair[hit], pos[hit])
    return np.where(np.isfinite(first), first, np.nan)


def _pairs(conn: np.ndarray, cf_i: np.ndarray, cf_j: np.ndarray):
    """All (a, b) participant pairs with a on connector cf_i[q] and b on cf_j[q]. Returns
    a, b (M,) participant indices and q (M,) conflict indices."""
    n_conn = int(max(conn.max(initial=-1), cf_i.max(initial=-1), cf_j.max(initial=-1))) + 1
    order = np.argsort(conn, kind="stable")
    count = np.bincount(conn, minlength=n_conn)
    start = np.concatenate([[0], np.cumsum(count)])
    n_pairs = count[cf_i] * count[cf_j]
    total = int(n_pairs.sum())
    if total == 0:
        e = np.empty(0, np.int64)
        return e, e, e
    q = np.repeat(np.arange(len(cf_i)), n_pairs)
    k = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    nb = count[cf_j][q]
    a = order[start[cf_i[q]] + k // nb]
    b = order[start[cf_j[q]] + k % nb]
    return a, b, q


def apply(accel: np.ndarray, jc: JunctionControl, max_decel_mps2: float) -> np.ndarray:
    """Accelerations limited by the control's speed caps (the IDM constraints go into the
    car-following call itself)."""
    if len(jc.cap_rows) == 0:
        return accel
    accel = accel.copy()
    np.minimum.at(accel, jc.cap_rows, np.maximum(jc.cap_accel_mps2, -max_decel_mps2))
    return accel


def red_light_runs(junction: Junction, jc: JunctionControl, old_lane: np.ndarray,
                   new_lane: np.ndarray, new_s: np.ndarray, length: np.ndarray) -> int:
    """Vehicles whose front crossed a stop line showing red during the step (jc from the
    start of the step; lane and s arrays (C,) after it)."""
    r = jc.red_rows
    if len(r) == 0:
        return 0
    onto = junction.conn_of_lane[np.maximum(new_lane[r], 0)] >= 0
    same = new_lane[r] == old_lane[r]
    past = same & (new_s[r] + 0.5 * length[r] >= junction.road.length_m[old_lane[r]])
    return int(np.count_nonzero((onto & (new_lane[r] >= 0)) | past))


