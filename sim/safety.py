"""The closed-loop safety benchmark: episodes x avoidance modes, in worker processes.

Each (episode, mode) job simulates one WorldSpec with the ego's SafetyLayer in that mode and
measures the ego (docs/safety.md defines every metric):

- collision: the ego's footprint overlaps another vehicle's (sim/collision.py); the episode
  ends at the ego's first collision, with its impact speed, the partner and who is at fault;
- hard brake: the ego's applied deceleration reaches hard_brake_mps2 (an onset counts once);
- false alarm: a hard brake the safety layer commanded, after which the same episode re-run
  deterministically from the moment of the command with the layer switched off (the nominal
  driver through the same actuator, the same random stream) has no conflict (the ego's
  footprint, inflated by conflict_margin_m, overlapping another's) within
  false_alarm_horizon_s;
- time to collision and gap to the vehicle ahead in the ego's path, speed, jerk, distance.

Jobs run in worker processes (`workers`, default all cores); each job depends only on its
spec, mode and settings, so results are the same whatever the worker count. Forecasters are
built in the workers by a picklable factory (e.g. functools.partial of
predictor.registry.make_predictor): sim/ never imports predictor/.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from sim import collision, events
from sim.avoidance import BUILTIN_MODES, EGO, AvoidanceParams, SafetyLayer, in_path_target
from sim.files import atomic_path
from sim.spec import WorldSpec
from sim.state import ROLE_ACTOR, TrafficState
from sim.world import Counters, World, init_state, make_world, step

PredictorFactory = Callable[[str], object]  # mode name -> sim.forecast.Predictor


@dataclass(frozen=True)
class SafetySettings:
    """How episodes are run and measured."""

    hard_brake_mps2: float = 4.0  # a hard brake: applied deceleration at least this
    false_alarm_horizon_s: float = 5.0  # the counterfactual re-run looks this far ahead
    conflict_margin_m: float = 0.5  # a conflict: the ego's footprint grown by this overlaps
    test_track_end: bool = True  # end test-track episodes as Euro NCAP does (docs)
    path_lat_margin_m: float = 0.0  # in-path test of the TTC / gap metrics

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"SafetySettings.{f.name} must be a finite number >= 0")
        if not self.hard_brake_mps2 > 0 or not self.false_alarm_horizon_s > 0:
            raise ValueError("hard_brake_mps2 and false_alarm_horizon_s must be positive")


@dataclass(frozen=True)
class Job:
    """One episode in one mode; `index` orders the results."""

    index: int
    spec: WorldSpec | ReplayEpisode
    mode: str


# ---- one episode --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Snapshot:
    """What re-running an episode from a step needs: the state and the random stream before
    it, the counters and the ego's actuator before the layer's command."""

    step: int
    state: TrafficState
    rng_state: dict
    counters: Counters
    actuator: object


def _ego_overlaps(st: TrafficState, grow_m: float = 0.0) -> np.ndarray:
    """Rows (active, not the ego) whose footprint overlaps the ego's (grown by grow_m on every
    side)."""
    rows = np.flatnonzero(st.active)
    rows = rows[rows != EGO]
    if len(rows) == 0:
        return rows
    near = np.hypot(st.x[rows] - st.x[EGO], st.y[rows] - st.y[EGO]) < (
        0.5 * (np.hypot(st.length[rows], st.width[rows]) + math.hypot(st.length[EGO],
                                                                       st.width[EGO])) + 2 * grow_m)
    rows = rows[near]
    if len(rows) == 0:
        return rows
    n = len(rows)
    hit = collision.boxes_overlap(
        np.full(n, st.x[EGO]), np.full(n, st.y[EGO]), np.full(n, st.heading[EGO]),
        np.full(n, st.length[EGO] + 2 * grow_m), np.full(n, st.width[EGO] + 2 * grow_m),
        st.x[rows], st.y[rows], st.heading[rows], st.length[rows], st.width[rows])
    return rows[hit]


def at_fault(before: TrafficState, row: int) -> tuple[bool, str]:
    """Whether the ego is at fault for its collision with `row`, judged on the state just
    before the contact, and the kind of collision:

    - the other vehicle was changing lanes (into the ego's path) and the ego was not: not
      at fault ("cut in");
    - the ego was changing lanes and the other was not: at fault ("ego lane change");
    - otherwise the one behind hits the one ahead: the ego is at fault when the other's
      centre is ahead of the ego's along the ego's heading ("ego rear-ends"), not when it
      is behind ("rear-ended")."""
    ego_lc = bool(before.lane_from[EGO] >= 0)
    other_lc = bool(before.lane_from[row] >= 0)
    if other_lc and not ego_lc:
        return False, "cut in"
    if ego_lc and not other_lc:
        return True, "ego lane change"
    h = before.heading[EGO]
    ahead = ((before.x[row] - before.x[EGO]) * math.cos(h)
             + (before.y[row] - before.y[EGO]) * math.sin(h)) > 0.0
    return (True, "ego rear-ends") if ahead else (False, "rear-ended")


def test_track(world: World, st: TrafficState) -> bool:
    """A test-track episode: no traffic flows in and every other vehicle is a scripted actor
    (the Euro NCAP scenarios)."""
    others = st.active.copy()
    others[EGO] = False
    return (float(world.inflow_vph().sum()) == 0.0 and world.script is not None
            and bool(np.all(st.role[others] == ROLE_ACTOR)))


def _resolved(st: TrafficState, lead: int, v_lead_mps: float) -> bool:
    """The Euro NCAP end of a test: every scripted event is over, and the ego stands still or
    no longer closes in on the vehicle ahead in its path (lead, -1: none is left there)."""
    ss = st.script
    if ss is not None and len(ss.phase) and np.any(ss.phase < events.DONE):
        return False
    return bool(st.speed[EGO] < 0.05 or lead < 0 or st.speed[EGO] <= v_lead_mps + 0.05)


def counterfactual_conflict(world: World, snap: _Snapshot, params: AvoidanceParams,
                            settings: SafetySettings) -> float | None:
    """Re-run from a snapshot with the safety layer off (the nominal driver through the
    ego's actuator as it was) for false_alarm_horizon_s: the time (s after the snapshot) of
    the first conflict, None if none."""
    rng = np.random.default_rng()
    rng.bit_generator.state = snap.rng_state
    layer = SafetyLayer("none", params, None, world.dt_s, actuator=snap.actuator)
    st, counters = snap.state, snap.counters
    n = int(round(settings.false_alarm_horizon_s / world.dt_s))
    for i in range(n):
        st, counters = step(st, world, rng, counters, layer)
        if not (st.active[EGO] and st.ids[EGO] == 0):
            return None
        if len(_ego_overlaps(st, settings.conflict_margin_m)):
            return (i + 1) * world.dt_s
    return None


def run_episode(spec: WorldSpec, mode: str, predictor=None,
                params: AvoidanceParams | None = None,
                settings: SafetySettings | None = None) -> dict:
    """Simulate one episode with the ego's safety layer in `mode` (predictor: the forecaster
    of a predictor mode) and measure it. Returns a JSON-ready dict (docs/safety.md)."""
    params = params or AvoidanceParams()
    settings = settings or SafetySettings()
    world = make_world(spec)
    dt = spec.dt_s
    rng = np.random.default_rng(spec.seed)
    st = init_state(world, rng)
    if spec.ego is None:
        raise ValueError(f"{spec.name}: the safety benchmark needs an ego")
    counters = Counters()
    layer = SafetyLayer(mode, params, predictor if mode not in BUILTIN_MODES else None, dt,
                        seed=spec.seed, keep_plans=2, draw_plans=False)
    track_end = settings.test_track_end and test_track(world, st)
    n_steps = int(round(spec.duration_s / dt))
    hard = -settings.hard_brake_mps2
    speed, applied, command, intervening = [], [], [], []
    min_ttc, min_gap = math.inf, math.inf
    snaps: dict[int, _Snapshot] = {}
    prev_command = 0.0
    out = {"scenario": spec.name, "case": spec.case, "case_params": dict(spec.case_params),
           "seed": spec.seed, "mode": mode, "collided": False}
    ended = "time"
    for k in range(n_steps):
        before, rng_state, counters_before = st, rng.bit_generator.state, counters
        st, counters = step(st, world, rng, counters, layer)
        plan = layer.last_plan
        if not (st.active[EGO] and st.ids[EGO] == 0):
            ended = "ego left the road"
            break
        speed.append(float(st.speed[EGO]))
        applied.append(float(st.accel[EGO]))
        cmd = plan.command_mps2 if plan is not None else float(st.accel[EGO])
        command.append(cmd)
        intervening.append(bool(plan is not None and plan.intervening))
        if (cmd <= hard < prev_command and intervening[-1]
                and plan.nominal_mps2 > hard):  # the layer, not the driver, brakes hard
            snaps[k] = _Snapshot(k, before, rng_state, counters_before, layer.actuator_before)
        prev_command = cmd
        rows = np.flatnonzero(st.active)
        rows = rows[rows != EGO]
        i, gap, v_lead, _, _ = in_path_target(st, world.road, rows, st.x[rows], st.y[rows],
                                              st.vx[rows], st.vy[rows],
                                              settings.path_lat_margin_m)
        if i >= 0:
            min_gap = min(min_gap, max(gap, 0.0))
            closing = st.speed[EGO] - v_lead
            if closing > 1e-9:
                min_ttc = min(min_ttc, max(gap, 0.0) / closing)
        hit = _ego_overlaps(st) if st.collided[EGO] else np.empty(0, np.int64)
        if len(hit):
            row = int(hit[np.argmin(np.hypot(st.x[hit] - st.x[EGO], st.y[hit] - st.y[EGO]))])
            fault, kind = at_fault(before, row)
            rel = math.hypot(st.vx[EGO] - st.vx[row], st.vy[EGO] - st.vy[row])
            out.update(collided=True, collision_t_s=round(float(st.t_s), 4),
                       impact_speed_mps=round(float(before.speed[EGO]), 4),
                       impact_rel_speed_mps=round(float(math.hypot(
                           before.vx[EGO] - before.vx[row], before.vy[EGO] - before.vy[row])),
                           4),
                       rel_speed_after_mps=round(rel, 4),
                       partner_id=int(st.ids[row]), at_fault=fault, collision_kind=kind)
            min_ttc, min_gap = 0.0, 0.0
            ended = "collision"
            break
        if track_end and _resolved(st, i, v_lead):
            ended = "resolved"
            break
    onsets = hard_brake_onsets(np.asarray(applied), settings.hard_brake_mps2)
    out.update(ended=ended)
    out.update(_ego_metrics(speed, applied, onsets, intervening, dt, min_ttc, min_gap))
    # a hard brake starts at most the actuation delay plus the brake build-up after the
    # command that caused it
    lag = (params.steps(params.actuation_delay_s, dt)
           + int(math.ceil(settings.hard_brake_mps2 / (params.jerk_limit_mps3 * dt))) + 1)
    false_alarms, fa_times, justified = 0, [], 0
    for j in onsets:
        crossings = [k for k in snaps if j - lag <= k <= j]
        if not crossings:
            continue  # the nominal driver's own hard brake, not the layer's
        decided = max(crossings)
        conflict = counterfactual_conflict(world, snaps[decided], params, settings)
        if conflict is None:
            false_alarms += 1
            fa_times.append(round((decided + 1) * dt, 4))
        else:
            justified += 1
    out.update(layer_hard_brakes=int(false_alarms + justified), false_alarms=false_alarms,
               false_alarm_t_s=fa_times)
    return out


def _ego_metrics(speed: list[float], applied: list[float], onsets: np.ndarray,
                 intervening: list[bool], dt: float, min_ttc: float, min_gap: float) -> dict:
    """An episode's per-step ego trace (speed m/s, applied acceleration m/s^2, its hard
    brake onsets, whether the layer intervened) -> steps, duration, TTC and gap minima, hard
    brakes, speed, distance, deceleration, jerk and intervention time (docs/safety.md)."""
    speed_a = np.asarray(speed)
    acc = np.asarray(applied)
    jerk = np.diff(np.concatenate([[acc[0] if len(acc) else 0.0], acc])) / dt
    n = len(speed_a)
    distance_m = float(np.sum(speed_a) * dt)
    return dict(
        steps=n, duration_s=round(n * dt, 4),
        min_ttc_s=_r(min_ttc), min_gap_m=_r(min_gap),
        hard_brakes=int(len(onsets)),
        mean_speed_mps=round(float(speed_a.mean()) if n else 0.0, 4),
        distance_m=round(distance_m, 3),
        max_decel_mps2=round(float(max(-acc.min(), 0.0)) if n else 0.0, 4),
        jerk_rms_mps3=round(float(np.sqrt(np.mean(jerk ** 2))) if n else 0.0, 4),
        intervention_s=round(float(np.sum(intervening)) * dt, 4))


# ---- log-replay episodes --------------------------------------------------------------------

REPLAY_MODES = ("oracle",)  # modes only a log replay has: the recorded future


@dataclass(frozen=True)
class ReplayEpisode:
    """One log-replay episode: in recording `name`, the ego replaces recorded agent
    `ego_agent` from `from_s` until `to_s` (s from the recording's first time stamp) and
    drives with IDM and its safety layer (sim/replay.py)."""

    name: str
    case: int
    ego_agent: int
    from_s: float
    to_s: float
    reactive: bool = False


def replay_episodes(tracks, name: str, n_egos: int, warmup_s: float = 2.0,
                    min_drive_s: float = 10.0, reactive: bool = False) -> list[ReplayEpisode]:
    """Up to n_egos episodes of a recording, one per agent recorded without a gap for at
    least warmup_s + min_drive_s: the ego takes over warmup_s after the agent appears (its
    recorded past feeds the forecasters) and drives to the agent's last frame. The agents are
    spread evenly over the eligible ones in order of appearance (deterministic)."""
    pres = tracks.present
    n_t = pres.shape[1]
    first = np.argmax(pres, axis=1)
    last = n_t - 1 - np.argmax(pres[:, ::-1], axis=1)
    dt = tracks.dt_s
    warm = int(round(warmup_s / dt))
    ok = (pres.any(axis=1) & (pres.sum(axis=1) == last - first + 1)
          & (last - first >= warm + int(round(min_drive_s / dt))))
    rows = np.flatnonzero(ok)
    rows = rows[np.argsort(first[rows], kind="stable")]
    if n_egos < len(rows):
        rows = rows[np.round(np.linspace(0, len(rows) - 1, n_egos)).astype(np.int64)]
    return [ReplayEpisode(name, i, int(tracks.ids[r]), round(float((first[r] + warm) * dt), 6),
                          round(float(last[r] * dt), 6), reactive)
            for i, r in enumerate(rows)]


class _ReplayProbe:
    """The replay's control hook in the benchmark: the safety layer, plus what the metrics
    need at every step it commands the ego (time, speed, applied acceleration, whether it
    intervened, gap to and closing speed on the vehicle ahead in its path)."""

    def __init__(self, layer: SafetyLayer, lat_margin_m: float):
        self.layer, self.lat_margin_m = layer, lat_margin_m
        self.t_s, self.speed, self.applied, self.intervening = [], [], [], []
        self.gap, self.closing = [], []

    def observe(self, st, world) -> None:
        self.layer.observe(st, world)

    def __call__(self, st, world, index, accel):
        ov = self.layer(st, world, index, accel)
        if ov is None:
            return None
        e, plan = int(world.ego_row), self.layer.last_plan
        rows = np.flatnonzero(st.active)
        rows = rows[rows != e]
        i, gap, v_lead, _, _ = in_path_target(st, world.road, rows, st.x[rows], st.y[rows],
                                              st.vx[rows], st.vy[rows], self.lat_margin_m,
                                              ego=e)
        self.t_s.append(float(st.t_s))
        self.speed.append(float(st.speed[e]))
        self.applied.append(float(plan.applied_mps2))
        self.intervening.append(bool(plan.intervening))
        self.gap.append(max(gap, 0.0) if i >= 0 else math.inf)
        self.closing.append(float(st.speed[e]) - v_lead if i >= 0 else 0.0)
        return ov


def run_replay_episode(ep: ReplayEpisode, tracks, mode: str, predictor=None,
                       params: AvoidanceParams | None = None,
                       settings: SafetySettings | None = None, road=None) -> dict:
    """One log-replay episode with the ego's safety layer in `mode` (`oracle`: the recorded
    future), measured like run_episode up to the ego's first collision. The ego keeps its
    lane in a replay, so the layer's lane changes are off. A collision is the ego's fault
    when it ran into the vehicle ahead (sim/replay.py `_ran_into`); recorded vehicles do not
    see the ego, so being hit from behind or at the side is theirs. No false alarms: a replay
    cannot be re-run from the middle (they are None). road: the recording's road (default:
    its own, else fitted to the whole recording, as `run` does)."""
    from sim.replay import RecordedFuture, ReplaySpec, replay, road_of, substep_s
    from sim.tracks import time_window

    params = replace(params or AvoidanceParams(), lane_changes=False)
    settings = settings or SafetySettings()
    if road is None:
        road = road_of(tracks)
    # only the frames of the episode (from the agent's first one, and the recorded future
    # an oracle looks into past its end): the rest of the recording plays no part
    row = int(np.flatnonzero(tracks.ids == ep.ego_agent)[0])
    dt_rec = tracks.dt_s
    first = int(np.argmax(tracks.present[row]))
    ahead = int(math.ceil((params.horizon_s + params.latency_s) / dt_rec)) + 2
    k_end = int(round(ep.to_s / dt_rec))
    part = time_window(tracks, min(first, int(round(ep.from_s / dt_rec))), k_end + ahead)
    t_off = float(part.t[0] - tracks.t[0])
    dt = substep_s(tracks)
    if mode == "oracle":
        predictor = RecordedFuture(part, dt)
    layer = SafetyLayer(mode, params, predictor if mode not in BUILTIN_MODES else None, dt,
                        seed=ep.case, keep_plans=2, draw_plans=False)
    probe = _ReplayProbe(layer, settings.path_lat_margin_m)
    res = replay(part, ReplaySpec(ego_agent=ep.ego_agent, ego_from_s=round(ep.from_s - t_off, 6),
                                  duration_s=round(ep.to_s - t_off, 6), reactive=ep.reactive),
                 road=road, hook=probe)
    out = {"scenario": ep.name, "case": ep.case,
           "case_params": {"ego_agent": ep.ego_agent, "from_s": ep.from_s}, "seed": None,
           "mode": mode, "collided": False}
    t = np.asarray(probe.t_s)
    n, ended = len(t), "time"
    if res.ego_contacts:
        c = res.ego_contacts[0]
        n = int(np.searchsorted(t, c["t_s"] - 1e-6))  # the steps before the contact
        out.update(collided=True, collision_t_s=round(c["t_s"] + t_off, 4),
                   impact_speed_mps=round(c["ego_speed_mps"], 4),
                   impact_rel_speed_mps=round(c["rel_speed_mps"], 4),
                   partner_id=c["partner_id"], at_fault=c["ran_into"],
                   collision_kind="ego rear-ends" if c["ran_into"] else "hit by a recorded "
                                                                        "vehicle")
        ended = "collision"
    gap, closing = np.asarray(probe.gap[:n]), np.asarray(probe.closing[:n])
    with np.errstate(divide="ignore", invalid="ignore"):
        ttc = np.where(closing > 1e-9, gap / closing, math.inf)
    min_ttc = float(ttc.min()) if n else math.inf
    min_gap = float(gap.min()) if n else math.inf
    if out["collided"]:
        min_ttc = min_gap = 0.0
    out["ended"] = ended
    onsets = hard_brake_onsets(np.asarray(probe.applied[:n]), settings.hard_brake_mps2)
    out.update(_ego_metrics(probe.speed[:n], probe.applied[:n], onsets, probe.intervening[:n],
                            dt, min_ttc, min_gap))
    out.update(layer_hard_brakes=None, false_alarms=None, false_alarm_t_s=[])
    return out


def hard_brake_onsets(accel_mps2: np.ndarray, hard_brake_mps2: float) -> np.ndarray:
    """Steps (indices into accel (T,), m/s^2) where a hard brake starts: the deceleration
    reaches hard_brake_mps2 after being below it (or from the first step)."""
    a = np.asarray(accel_mps2, float)
    hard = a <= -hard_brake_mps2 + 1e-9
    return np.flatnonzero(hard & ~np.concatenate([[False], hard[:-1]]))


def _r(v: float, nd: int = 4):
    """Rounded for JSON; inf becomes None."""
    return None if not math.isfinite(v) else round(float(v), nd)


# ---- many episodes, in worker processes -------------------------------------------------------

_WORKER: dict = {}


def _init_worker(factory, params, settings, recordings=None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER.update(factory=factory, params=params, settings=settings, predictors={},
                   recordings=recordings or {}, roads={})


def _predictor_for(mode: str):
    if mode in BUILTIN_MODES or mode in REPLAY_MODES:
        return None
    cache = _WORKER["predictors"]
    if mode not in cache:
        cache[mode] = _WORKER["factory"](mode)
    return cache[mode]


def _run_job(job: Job) -> tuple[int, dict, float]:
    """(job index, episode result, CPU seconds the episode took in this process)."""
    predictor, params, settings = _predictor_for(job.mode), _WORKER["params"], _WORKER["settings"]
    replaying = isinstance(job.spec, ReplayEpisode)
    if replaying:
        name = job.spec.name
        tracks, roads = _WORKER["recordings"][name], _WORKER["roads"]
        if name not in roads:  # fitted once per recording and worker
            from sim.replay import road_of

            roads[name] = road_of(tracks)
    t0 = time.process_time()
    res = (run_replay_episode(job.spec, tracks, job.mode, predictor, params, settings,
                              roads[name]) if replaying
           else run_episode(job.spec, job.mode, predictor, params, settings))
    return job.index, res, time.process_time() - t0


def run_jobs(jobs: list[Job], factory: PredictorFactory | None,
             params: AvoidanceParams | None = None, settings: SafetySettings | None = None,
             workers: int | None = None,
             progress: Callable[[int, int], None] | None = None,
             start_method: str | None = None,
             recordings: dict | None = None) -> tuple[list[dict], list[float]]:
    """Run every job (in `workers` processes; 1: in this process) and return the episode
    results and the CPU seconds each took, in job order. recordings: {name: Tracks} the
    ReplayEpisode jobs replay.
    progress(done, total) after each. start_method: how worker
    processes start; default fork on Linux (fast, and the factory need not be importable),
    spawn elsewhere. Pass "spawn" once this process may have run torch on more than one
    thread (anything but RnnPredictor.load, which sets one thread first): a child forked
    from a process whose OpenMP pool exists can hang in its first forward pass."""
    params = params or AvoidanceParams()
    settings = settings or SafetySettings()
    workers = workers or os.cpu_count() or 1
    out: list[dict | None] = [None] * len(jobs)
    cpu = [0.0] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        _init_worker(factory, params, settings, recordings)
        for done, job in enumerate(jobs, 1):
            i, out[i], cpu[i] = _run_job(job)
            if progress:
                progress(done, len(jobs))
        return out, cpu
    import multiprocessing as mp

    method = start_method or ("fork" if sys.platform.startswith("linux") else "spawn")
    ctx = mp.get_context(method)
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                             initializer=_init_worker,
                             initargs=(factory, params, settings, recordings)) as pool:
        futures = [pool.submit(_run_job, job) for job in jobs]
        for done, fut in enumerate(as_completed(futures), 1):
            i, out[i], cpu[i] = fut.result()
            if progress:
                progress(done, len(jobs))
    return out, cpu


def make_jobs(specs: list[WorldSpec], modes: list[str]) -> list[Job]:
    """Episode-major, modes interleaved (so the slow modes spread over the workers)."""
    return [Job(i * len(modes) + m, spec, mode) for i, spec in enumerate(specs)
            for m, mode in enumerate(modes)]


# ---- aggregation ------------------------------------------------------------------------------


def summarize(episodes: list[dict]) -> dict:
    """Metrics of a group of episode results (one mode, or one case in one mode)."""
    n = len(episodes)
    coll = [e for e in episodes if e["collided"]]
    ttc = [0.0 if e["min_ttc_s"] is None and e["collided"] else
           (math.inf if e["min_ttc_s"] is None else e["min_ttc_s"]) for e in episodes]
    gaps = [math.inf if e["min_gap_m"] is None else e["min_gap_m"] for e in episodes]
    dist_km = sum(e["distance_m"] for e in episodes) / 1000.0
    time_s = sum(e["duration_s"] for e in episodes)
    steps = sum(e["steps"] for e in episodes)
    hard = sum(e["hard_brakes"] for e in episodes)
    # log-replay episodes have no false alarms (None): the count is unknown, not 0
    fa = (None if any(e["false_alarms"] is None for e in episodes)
          else sum(e["false_alarms"] for e in episodes))

    def per_100km(count: int | None):
        return round(100.0 * count / dist_km, 3) if dist_km > 0 and count is not None \
            else None

    def mean(values):
        return round(float(np.mean(values)), 4) if values else None

    jerk_sq = sum(e["jerk_rms_mps3"] ** 2 * e["steps"] for e in episodes)
    return {
        "episodes": n,
        "collisions": len(coll),
        "collision_rate": round(len(coll) / n, 4) if n else None,
        "at_fault_collisions": sum(1 for e in coll if e["at_fault"]),
        "impact_speed_mps": mean([e["impact_speed_mps"] for e in coll]),
        "impact_speed_max_mps": max((e["impact_speed_mps"] for e in coll), default=None),
        "impact_rel_speed_mps": mean([e["impact_rel_speed_mps"] for e in coll]),
        "min_ttc_s_p5": _r(_p5(ttc)) if n else None,
        "min_gap_m_p5": _r(_p5(gaps)) if n else None,
        "min_gap_m_min": _r(float(min(gaps))) if n else None,
        "hard_brakes": hard,
        "hard_brakes_per_100km": per_100km(hard),
        "false_alarms": fa,
        "false_alarms_per_100km": per_100km(fa),
        "mean_speed_mps": round(1000.0 * dist_km / time_s, 4) if time_s > 0 else None,
        "jerk_rms_mps3": round(math.sqrt(jerk_sq / steps), 4) if steps else None,
        "distance_km": round(dist_km, 4),
        "simulated_s": round(time_s, 3),
        "intervention_share": round(sum(e["intervention_s"] for e in episodes) / time_s, 4)
        if time_s > 0 else None,
    }


def _p5(values: list[float]) -> float:
    """5th percentile as a value of the data (inverted CDF; inf for 'never' is fine)."""
    return float(np.percentile(np.asarray(values, float), 5, method="inverted_cdf"))


def case_label(e: dict) -> str:
    """'stationary_target #12 (ego.speed_kph=50, actors.target.overlap_pct=100)'."""
    if e["case"] is None:
        return e["scenario"]
    params = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in e["case_params"].items())
    return f"{e['scenario']} #{e['case']} ({params})"


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def aggregate(episodes: list[dict], modes: list[str], by_case: bool) -> dict:
    """{"results": {MODE: summary}, "by_case": [{scenario, case, case_params, label,
    modes: {MODE: summary}}]} (by_case only when asked)."""
    out = {"results": {m: summarize([e for e in episodes if e["mode"] == m]) for m in modes}}
    if by_case:
        keys = []
        for e in episodes:
            k = (e["scenario"], e["case"])
            if k not in keys:
                keys.append(k)
        rows = []
        for scen, case in keys:
            group = [e for e in episodes if e["scenario"] == scen and e["case"] == case]
            rows.append({"scenario": scen, "case": case, "case_params": group[0]["case_params"],
                         "label": case_label(group[0]),
                         "modes": {m: summarize([e for e in group if e["mode"] == m])
                                   for m in modes}})
        out["by_case"] = rows
    return out


# ---- the whole benchmark ------------------------------------------------------------------------


def benchmark(specs: list[WorldSpec], modes: list[str], factory: PredictorFactory | None,
              params: AvoidanceParams | None = None, settings: SafetySettings | None = None,
              workers: int | None = None, by_case: bool = False,
              progress: Callable[[int, int], None] | None = None,
              start_method: str | None = None, recordings: dict | None = None) -> dict:
    """Run every spec (a WorldSpec, or a ReplayEpisode of one of `recordings`) in every
    mode and aggregate: {"results", "by_case"?, "episodes", "params", "settings", "workers",
    "wall_s", "cpu"}; cpu per mode: the CPU seconds its episodes took in the workers and per
    simulated step, ms (what the machine's speed sets; the results do not depend on it).
    start_method: see run_jobs."""
    params = params or AvoidanceParams()
    settings = settings or SafetySettings()
    replaying = all(isinstance(s, ReplayEpisode) for s in specs)
    for m in modes:
        if m in REPLAY_MODES and not replaying:
            raise ValueError(f"avoidance mode {m!r} is for log-replay episodes only")
        if m not in BUILTIN_MODES + REPLAY_MODES and factory is None:
            raise ValueError(f"avoidance mode {m!r} needs a forecaster factory")
    workers = workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    episodes, cpu_s = run_jobs(make_jobs(specs, modes), factory, params, settings, workers,
                               progress, start_method, recordings)
    wall = time.perf_counter() - t0
    out = aggregate(episodes, modes, by_case)
    cpu_by_mode, steps_by_mode = dict.fromkeys(modes, 0.0), dict.fromkeys(modes, 0)
    for e, c in zip(episodes, cpu_s):
        cpu_by_mode[e["mode"]] += c
        steps_by_mode[e["mode"]] += e["steps"]
    cpu = {m: {"cpu_s": round(cpu_by_mode[m], 2),
               "ms_per_step": round(1000.0 * cpu_by_mode[m] / steps_by_mode[m], 3)
               if steps_by_mode[m] else None} for m in modes}
    out.update(episodes=episodes, params=_plain(asdict(params)),
               settings=_plain(asdict(settings)), workers=workers, wall_s=round(wall, 2),
               cpu=cpu)
    return out


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ---- reporting -----------------------------------------------------------------------------------

COLUMNS = (("episodes", "episodes", "{:d}"), ("collisions", "collisions", "{:d}"),
           ("collision_rate", "rate", "{:.1%}"), ("at_fault_collisions", "at fault", "{:d}"),
           ("impact_speed_mps", "impact km/h", "kmh"), ("min_ttc_s_p5", "min TTC p5 s", "{:.2f}"),
           ("min_gap_m_p5", "min gap p5 m", "{:.2f}"), ("hard_brakes", "hard brakes", "{:d}"),
           ("hard_brakes_per_100km", "HB/100 km", "{:.1f}"),
           ("false_alarms", "false alarms", "{:d}"),
           ("false_alarms_per_100km", "FA/100 km", "{:.2f}"),
           ("mean_speed_mps", "mean speed m/s", "{:.2f}"),
           ("jerk_rms_mps3", "jerk rms m/s3", "{:.2f}"),
           ("intervention_share", "intervening", "{:.0%}"))


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "kmh":
        return f"{3.6 * value:.1f}"
    return fmt.format(value)


def format_table(result: dict) -> str:
    """One row per mode (and with by_case, a case x mode matrix of collisions and impact
    speeds, as in an NCAP report)."""
    modes = list(result["results"])
    header = ["mode"] + [c[1] for c in COLUMNS]
    rows = [[m] + [_cell(result["results"][m][k], f) for k, _, f in COLUMNS] for m in modes]
    lines = _grid(header, rows)
    if "by_case" in result:
        lines.append("")
        lines.append("per case: collisions / episodes (mean impact speed km/h); ok = none")
        head = ["case"] + modes
        body = []
        for row in result["by_case"]:
            cells = []
            for m in modes:
                s = row["modes"][m]
                kmh = 3.6 * (s["impact_speed_mps"] or 0.0)
                cells.append("ok" if s["collisions"] == 0 else
                             f"{s['collisions']}/{s['episodes']} ({kmh:.0f})")
            body.append([row["label"]] + cells)
        lines += _grid(head, body)
    return "\n".join(lines)


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = "  ".join(("{:<%d}" if i == 0 else "{:>%d}") % w for i, w in enumerate(widths))
    return [fmt.format(*header)] + [fmt.format(*r) for r in rows]


def plot_cases(result: dict, path: str) -> None:
    """Collision rate and mean impact speed per case and mode (matplotlib, Agg), written
    atomically. Every mode has a marker in every case (a collision-free case sits on 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.get("by_case") or []
    modes = list(result["results"])
    labels = [r["label"] for r in rows] or ["all episodes"]
    x = np.arange(len(labels))
    fig, axes = plt.subplots(2, 1, figsize=(min(max(8.0, 0.12 * len(labels) + 4), 40), 7.5),
                             sharex=True)
    width = 0.6 / max(len(modes), 1)
    markers = "os^vDP*Xh"
    for j, m in enumerate(modes):
        stats = [r["modes"][m] for r in rows] if rows else [result["results"][m]]
        rate = [s["collision_rate"] or 0.0 for s in stats]
        speed = [3.6 * s["impact_speed_mps"] if s["impact_speed_mps"] is not None else np.nan
                 for s in stats]
        off = (j - (len(modes) - 1) / 2) * width
        tot = result["results"][m]
        label = f"{m} ({tot['collisions']}/{tot['episodes']})"
        axes[0].plot(x + off, rate, markers[j % len(markers)], ms=4, label=label)
        axes[1].plot(x + off, speed, markers[j % len(markers)], ms=4, label=label)
    axes[0].set_ylabel("collision rate")
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].set_ylabel("ego impact speed (km/h)")
    axes[1].set_ylim(bottom=0)
    axes[0].legend(ncol=len(modes), fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                   title=f"safety benchmark {result.get('suite', '')}: collisions / episodes",
                   title_fontsize=9, frameon=False)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(labels, rotation=90, fontsize=6 if len(labels) > 40 else 8)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
