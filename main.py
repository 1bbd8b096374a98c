"""drivecast command line (shared/specs/cli.md): parse, resolve names, call down, print.

Exit codes: 0 success, 2 bad input (one line on stderr naming what and where), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path


class InputError(Exception):
    """Bad user input: printed as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage + message)
        raise InputError(f"{self.prog}: {message}")


# ---- shared helpers ------------------------------------------------------------------------


def write_json(path: str, obj) -> None:
    """Write obj as JSON to path ('-' for stdout), atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    write_text_atomic(Path(path), text)


def write_results(args, result: dict, plot=None) -> None:
    """A benchmark's outputs: the figure (plot(result, path)) with --plot, the JSON with
    --json."""
    if plot is not None and args.plot:
        plot(result, args.plot)
        say(args, f"plot: {args.plot}")
    if args.json:
        write_json(args.json, result)


def write_text_atomic(path: Path, text: str) -> None:
    from sim.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


OUTPUT_FLAGS = (("--record", "record", False), ("--json", "json", False),
                ("--plot", "plot", False), ("--gif", "gif", False), ("--out", "out", False),
                ("--frames-dir", "frames_dir", True))


def check_outputs(args) -> None:
    """Refuse output paths that cannot be written before any work starts (a long run must not
    end in an unwritable path)."""
    from sim.files import output_problem

    for flag, dest, folder in OUTPUT_FLAGS:
        value = getattr(args, dest, None)
        if isinstance(value, str) and value != "-":
            why = output_problem(value, folder)
            if why:
                raise InputError(f"{flag} {value}: {why}")
    track_out = args.record if getattr(args, "record", None) else (
        args.out if getattr(args, "command", None) == "import" else None)
    if track_out and not track_out.lower().endswith(".npz"):
        raise InputError(f"{track_out}: a track file is a .npz archive: give the name "
                         "a .npz ending")
    for src in [getattr(args, "file", None), getattr(args, "scenario", None),
                *(getattr(args, "data", None) or [])]:
        if (src and track_out and Path(src).exists()
                and Path(src).resolve() == Path(track_out).resolve()):
            raise InputError(f"{track_out}: the output would overwrite the input")


def _shown(value, missing: str):
    """A summary value for humans: `missing` for None."""
    return missing if value is None else value


def say(args, text: str) -> None:
    """Human-readable output, unless the JSON goes to standard output."""
    if getattr(args, "json", None) != "-":
        print(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def number_in(zero_ok: bool = False, top: float = math.inf, unit: str = ""):
    """An argparse type: a finite number > 0 (zero_ok: >= 0), at most top (in unit)."""
    low = "a number >= 0" if zero_ok else "a positive number"
    high = f", at most {top:g}{unit}" if math.isfinite(top) else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value >= 0.0 if zero_ok else value > 0.0)
                and value <= top):
            raise argparse.ArgumentTypeError(f"expected {low}{high}, got {text!r}")
        return value
    return parse


positive_float = number_in()
nonneg_float = number_in(zero_ok=True)


def seconds_up_to(top_s: float, zero_ok: bool = False):
    """An argparse type: a positive (zero_ok: or zero) number of seconds, at most top_s."""
    return number_in(zero_ok, top_s, " s")


MAX_HORIZON_S = 30.0  # forecast, history and planning horizons: longer ones exhaust memory


class _ProgressBar:
    """A tqdm bar on stderr (or a no-op), drawn from the first update on (an error found
    before the work starts stays the only line on stderr). update(n) advances it;
    to(done, total) suits `progress(done, total)` callbacks (total None: known then)."""

    def __init__(self, total: int | None, desc: str, enabled: bool, unit: str = "step"):
        self.total, self.desc, self.enabled, self.unit = total, desc, enabled, unit
        self._bar = None
        self.done = 0

    def update(self, n: int = 1) -> None:
        self.to(self.done + n, self.total)

    def to(self, done: int, total: int | None) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit,
                             disable=not self.enabled, leave=False, dynamic_ncols=True)
        self._bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---- run -----------------------------------------------------------------------------------

ROAD_CHOICES = {"highway": "straight_highway", "curved": "curved_highway",
                "on_ramp": "on_ramp_highway"}


def default_spec(road: str = "on_ramp", seed: int = 0, duration_s: float = 60.0,
                 flow_vph: float = 1800.0):
    """The default scenario: dense three-lane highway traffic with an on-ramp and an ego."""
    from sim.spec import EgoSpec, RoadSpec, TrafficSpec, WorldSpec

    kind = ROAD_CHOICES[road]
    params = {"n_lanes": 3}
    return WorldSpec(road=RoadSpec(kind, params), traffic=TrafficSpec(flow_vph_per_lane=flow_vph),
                     ego=EgoSpec(lane=1, station_m=150.0, speed_mps=27.0,
                                 desired_speed_mps=31.0),
                     duration_s=duration_s, seed=seed, name=f"default_{road}")


def run_spec(args):
    """The WorldSpec `run` asks for: --scenario NAME|FILE.toml [--case N], else the default
    highway (--road, --flow); --seed and --duration replace the scenario's own."""
    if args.scenario is None:
        if args.case is not None:
            raise InputError("run --case: needs --scenario (a scenario with a sweep)")
        try:
            return default_spec(args.road or "on_ramp", args.seed or 0, args.duration or 60.0,
                                args.flow or 1800.0)
        except ValueError as exc:
            raise InputError(f"run: {exc}") from None
    if args.road is not None or args.flow is not None:
        raise InputError("run --road/--flow: only for the default scenario (a scenario file "
                         "sets its road and traffic)")
    from scenarios.loader import ScenarioError
    from scenarios.suite import load_scenario

    try:
        sc = load_scenario(args.scenario)
        spec = sc.spec(args.case or 0, seed=args.seed, duration_s=args.duration)
    except ScenarioError as exc:
        raise InputError(f"run --scenario: {exc}" if str(exc).startswith("unknown")
                         else str(exc)) from None
    if sc.has_sweep:
        say(args, f"{sc.name}: case {spec.case} of {sc.n_cases} ("
                  + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in spec.case_params)
                  + ("; choose one with --case N" if args.case is None else "") + ")")
    return spec


def scenario_summary(args, world, state) -> dict:
    """Case and event timeline of a scripted run, for run's summary (printed and JSON)."""
    from sim.events import event_log

    spec, out = world.spec, {}
    if spec.case is not None:
        out.update(case=spec.case, case_params=dict(spec.case_params))
    log = event_log(world.script, state.script)
    if log:
        out["events"] = log
        for e in log:
            when = ("not triggered" if e["trigger_s"] is None else
                    f"{e['phase']}: triggered {e['trigger_s']:g} s"
                    + (f", started {e['start_s']:g} s" if e["start_s"] is not None else "")
                    + (f", ended {e['end_s']:g} s" if e["end_s"] is not None else "")
                    + (f", gap to the ego at the start {e['start_gap_m']:.1f} m"
                       if e["start_gap_m"] is not None else ""))
            say(args, f"  event {e['label']}: {when}")
    return out


def cmd_run(args) -> int:
    from sim.tracks import write_tracks
    from sim.world import make_world, run

    if args.predictor and args.headless and not (args.frames_dir or args.gif or args.profile):
        raise InputError("run --predictor: the forecasts are only drawn (in the window, or "
                         "headless with --frames-dir, --gif or --profile)")
    if args.scenario is not None and is_recording(args.scenario):
        return cmd_run_replay(args)  # log replay (docs/replay.md)
    if replay_flags_given(args):
        raise InputError(f"run {replay_flags_given(args)[0]}: only for a log replay "
                         "(--scenario FILE.npz)")
    spec = run_spec(args)
    try:
        world = make_world(spec)
    except ValueError as exc:
        raise InputError(f"run: {exc}") from None
    layer = safety_layer(args, world)  # the ego's avoidance (--avoidance), or None
    annotate = plan_annotation(layer) if layer is not None else None
    if not (args.headless or args.frames_dir or args.gif):
        return run_window_mode(args, world, layer, annotate)
    frames = frame_hook(args, world, inner=layer, annotate=annotate)
    n_steps = int(round(spec.duration_s / spec.dt_s))
    bar = _ProgressBar(n_steps, "simulating", not args.quiet)
    t0 = time.perf_counter()
    result = run(world, record_every=args.record_every if args.record else None,
                 progress=lambda i, n: bar.update(1),
                 hook=frames.hook if frames else layer)
    wall = time.perf_counter() - t0
    bar.close()
    if args.record:
        write_tracks(args.record, result.tracks)
    c = result.counters
    summary = {
        "scenario": spec.name, "seed": spec.seed, "duration_s": spec.duration_s,
        "dt_s": spec.dt_s, "steps": result.steps, "vehicles_seen": result.state.next_id,
        "vehicles_now": result.state.n_active, "entered": c.entered, "exited": c.exited,
        "lane_changes": c.lane_changes, "merges": c.merges, "collisions": c.collisions,
        "min_speed_mps": round(result.min_speed_mps, 4),
        "mean_speed_mps": round(result.mean_speed_mps, 3),
        "demand_vph": round(float(world.inflow_vph().sum())),
        "entered_vph": round(c.entered * 3600.0 / spec.duration_s),
        "inflow_delay_s": result.inflow_delay_s(world),
        "vehicle_steps_per_s": round(result.vehicle_steps / wall),
        "wall_s": round(wall, 3), "record": args.record,
    }
    say(args, f"{spec.name}: {spec.duration_s:g} s simulated in {wall:.1f} s "
          f"({summary['vehicle_steps_per_s']:,} vehicle-steps/s)")
    say(args, f"  vehicles seen {summary['vehicles_seen']}, on the road at the end "
          f"{summary['vehicles_now']}, lane changes {c.lane_changes}, merges {c.merges}, "
          f"collisions {c.collisions}, speed min {result.min_speed_mps:.2f} / mean "
          f"{result.mean_speed_mps:.1f} m/s")
    say(args, f"  inflow: demand {summary['demand_vph']} veh/h, entered "
              f"{summary['entered_vph']} veh/h; arrivals queued upstream per entry lane "
              f"(s): {summary['inflow_delay_s']}")
    if world.junction is not None:
        summary["junction"] = {"entries_straight_left_right": list(c.movements),
                               "red_light_runs": c.red_light_runs}
        say(args, f"  junction: {sum(c.movements)} vehicles in (straight / left / right "
                  f"{' / '.join(map(str, c.movements))}), red-light runs {c.red_light_runs}")
    summary.update(scenario_summary(args, world, result.state))
    if layer is not None:
        summary["avoidance"] = avoidance_summary(args, layer, result.state)
    if args.record:
        say(args, f"  track file: {args.record}")
    if frames:
        finish_frames(args, frames, result.state, summary)
    if args.json:
        write_json(args.json, summary)
    return 0


def add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run a scenario live in a window (or --headless: record "
                                   "a track file, write frames)")
    p.add_argument("--headless", action="store_true",
                   help="no window: simulate as fast as possible (frames with --frames-dir)")
    p.add_argument("--scenario", metavar="NAME|FILE.toml|FILE.npz",
                   help="a scenario of the suite (`scenarios list`), a scenario file "
                        "(docs/scenarios.md), or a recording to replay as background traffic "
                        "(a track file or NGSIM CSV; docs/replay.md); default: a dense highway "
                        "with an on-ramp")
    p.add_argument("--case", type=nonneg_int, metavar="N",
                   help="case N of a scenario with a sweep (default 0)")
    p.add_argument("--road", choices=sorted(ROAD_CHOICES),
                   help="road of the default scenario (default: on_ramp)")
    p.add_argument("--flow", type=positive_float,
                   help="default scenario: inflow per main lane, veh/h/lane (default 1800)")
    p.add_argument("--seed", type=nonneg_int,
                   help="replaces the scenario's seed (default: the scenario's; 0)")
    p.add_argument("--duration", type=positive_float,
                   help="seconds (default: the scenario's; 60)")
    p.add_argument("--record", metavar="FILE", help="write the run as a track file (.npz)")
    p.add_argument("--record-every", type=positive_int, default=1, metavar="N",
                   help="record every N-th step (default 1)")
    p.add_argument("--json", metavar="PATH", help="write a summary as JSON ('-' for stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_replay_run_args(p)
    add_avoidance_args(p)
    add_view_args(p, "write PNG frames here (implies --headless)")
    p.set_defaults(func=cmd_run)


# ---- run --scenario FILE.npz: log replay (docs/replay.md) ------------------------------------

REPLAY_FLAGS = ("ego_agent", "ego_from", "ego_lane", "ego_station", "ego_speed",
                "ego_desired_speed", "ego_turn", "reactive")


def is_recording(text: str) -> bool:
    """A --scenario naming a recording to replay (track file or NGSIM file), not a scenario."""
    return str(text).lower().endswith((".npz", ".csv", ".csv.gz", ".txt", ".txt.gz"))


def replay_flags_given(args) -> list[str]:
    return ["--" + f.replace("_", "-") for f in REPLAY_FLAGS
            if getattr(args, f, None) not in (None, False)]


def add_replay_run_args(p) -> None:
    g = p.add_argument_group("log replay: run --scenario FILE.npz (docs/replay.md)")
    g.add_argument("--ego-agent", type=int, metavar="ID",
                   help="the ego replaces this recorded agent from --ego-from (default: the "
                        "agent's first appearance)")
    g.add_argument("--ego-from", type=nonneg_float, metavar="S",
                   help="when the ego takes over or appears, s from the recording's start")
    g.add_argument("--ego-lane", type=nonneg_int, metavar="K",
                   help="or a new ego on this lane of the road (0 the rightmost) ...")
    g.add_argument("--ego-station", type=float, metavar="M", help="... at this station, m")
    g.add_argument("--ego-speed", type=nonneg_float, metavar="MPS",
                   help="a new ego's start speed, m/s (default: the recorded traffic's "
                        "around it)")
    g.add_argument("--ego-desired-speed", type=positive_float, metavar="MPS",
                   help="the ego's IDM desired speed, m/s (default: the 95th percentile of "
                        "the recorded speeds)")
    g.add_argument("--ego-turn", choices=("left", "straight", "right"),
                   help="junction recordings: the ego's movement (default: the replaced "
                        "agent's, else straight)")
    g.add_argument("--reactive", action="store_true",
                   help="recorded agents that would run into the ego switch to IDM (default: "
                        "they follow their tracks and a collision is counted)")


def load_recording(path: str, what: str, progress: bool):
    """A track file, or an NGSIM file imported on the fly."""
    from scenarios.ngsim import looks_like_ngsim, read_ngsim
    from sim.tracks import read_tracks

    if os.path.isfile(path) and looks_like_ngsim(path):
        return read_ngsim(path, progress=progress)
    if not path.lower().endswith(".npz") and not os.path.exists(path):
        raise InputError(f"{what}: no such file")
    return read_tracks(path)


def cmd_run_replay(args) -> int:
    """`run --scenario FILE.npz`: the recording as background traffic, with the ego."""
    from sim.replay import ReplayError, ReplaySpec, replay
    from sim.tracks import write_tracks

    path = args.scenario
    what = f"run --scenario {path}"
    for flag, value in (("--case", args.case), ("--road", args.road), ("--flow", args.flow),
                        ("--seed", args.seed)):
        if value is not None:
            raise InputError(f"run {flag}: not for a log replay (the recording fixes it)")
    window = not (args.headless or args.frames_dir or args.gif)
    if window:
        _open_window("run")
    tracks = load_recording(path, what, progress=not args.quiet)
    try:
        spec = ReplaySpec(ego_agent=args.ego_agent, ego_from_s=args.ego_from,
                          ego_lane=args.ego_lane, ego_station_m=args.ego_station,
                          ego_speed_mps=args.ego_speed,
                          ego_desired_speed_mps=args.ego_desired_speed,
                          ego_turn=args.ego_turn, reactive=args.reactive,
                          duration_s=args.duration)
    except ReplayError as exc:
        raise InputError(f"{what}: {exc}") from None
    dt = tracks.dt_s
    n_steps = tracks.n_steps - 1
    if args.duration is not None:
        n_steps = min(n_steps, int(round(args.duration / dt)))
    layer = replay_safety_layer(args, tracks, spec)
    bar = _ProgressBar(n_steps, "replaying", not args.quiet)
    t0 = time.perf_counter()
    try:
        res = replay(tracks, spec, hook=layer, progress=lambda i, n: bar.update(1))
    except ReplayError as exc:
        raise InputError(f"{what}: {exc}") from None
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    out = res.tracks
    if args.record:
        write_tracks(args.record, out)
    road = out.road
    summary = {
        "scenario": path, "replay": True, "source": tracks.meta.get("source"),
        "agents": tracks.n_agents, "steps": res.steps, "dt_s": dt,
        "duration_s": round(res.steps * dt, 3),
        "road": (f"fitted to the data: {road.n_lanes} straight lanes "
                 f"{road.params.get('lane_width_m', 0):g} m wide" if res.road_fitted
                 else f"recorded {road.kind}, {road.n_lanes} lanes"),
        "ego_id": res.ego_id, "ego_replaces": args.ego_agent, "ego_from_s": res.ego_from_s,
        "reactive": args.reactive, "switched_agents": res.switched,
        "ego_collisions": res.ego_collisions, "sim_collisions": res.sim_collisions,
        "data_collisions": res.data_collisions,
        "ego_distance_m": round(res.ego_distance_m, 2),
        "ego_mean_speed_mps": None if res.ego_mean_speed_mps != res.ego_mean_speed_mps
        else round(res.ego_mean_speed_mps, 3),
        "ego_min_gap_m": None if res.ego_min_gap_m == float("inf")
        else round(res.ego_min_gap_m, 3),
        "wall_s": round(wall, 3), "record": args.record,
    }
    say(args, f"{path}: replayed {summary['duration_s']:g} s of {tracks.n_agents} recorded "
              f"agents in {wall:.1f} s, road {summary['road']}")
    if res.ego_id is not None:
        how = (f"replacing agent {args.ego_agent}" if args.ego_agent is not None
               else f"new on lane {args.ego_lane}")
        say(args, f"  ego {res.ego_id} ({how}) from {res.ego_from_s:g} s: "
                  f"{res.ego_distance_m:.0f} m at {summary['ego_mean_speed_mps']} m/s mean, "
                  + ("no leader" if summary["ego_min_gap_m"] is None else
                     f"closest gap to its leader {summary['ego_min_gap_m']} m") + ", collisions "
                  f"{res.ego_collisions}" + ("" if args.reactive else " (non-reactive: "
                                              "recorded agents ignore the ego)"))
    say(args, f"  reactive agents switched to IDM: {len(res.switched)}; overlaps between "
              f"recorded agents (data): {res.data_collisions}")
    if res.ego_collisions:
        say(args, f"  ego collisions: {res.ego_front_collisions} into a vehicle ahead, "
                  f"{res.ego_collisions - res.ego_front_collisions} hit from behind or the "
                  f"side")
    summary["ego_front_collisions"] = res.ego_front_collisions
    if layer is not None:
        summary["avoidance"] = replay_avoidance_summary(args, layer)
    if args.record:
        say(args, f"  track file: {args.record}")
    if window or args.frames_dir or args.gif:
        summary.update(_show_replay(args, out, window))
    if args.json:
        write_json(args.json, summary)
    return 0


def replay_safety_layer(args, tracks, spec):
    """The replay ego's SafetyLayer (--avoidance, `oracle` included), or None. Its ego keeps
    its lane in a replay, so the layer's evasive lane changes are off."""
    if args.avoidance is None:
        return None
    if not spec.has_ego:
        raise InputError("run --avoidance: a log replay needs an ego (--ego-agent or "
                         "--ego-lane with --ego-station)")
    from sim.replay import substep_s

    return build_layer(args, args.avoidance, substep_s(tracks), replay_of=tracks,
                       keep_plans=10**7, draw_plans=False)


def replay_avoidance_summary(args, layer) -> dict:
    """What the replay ego's safety layer did: interventions, its hardest command, hard
    brakes (applied deceleration reaching 4 m/s^2, as benchmark safety counts them)."""
    import numpy as np

    from sim.safety import SafetySettings, hard_brake_onsets

    plans = list(layer.plans.values())
    applied = np.array([p.applied_mps2 for p in plans])
    limit = SafetySettings().hard_brake_mps2
    out = {**_plan_stats(layer), "steps": len(plans),
           "hard_brakes": int(len(hard_brake_onsets(applied, limit)))}
    say(args, f"  avoidance {layer.mode}: intervened in {out['intervention_steps']} of "
              f"{out['steps']} steps, hardest command {out['min_command_mps2']:.1f} m/s2, hard "
              f"brakes {out['hard_brakes']}")
    return out


def _show_replay(args, tracks, window: bool) -> dict:
    """The replayed episode in the window, or as frames (--frames-dir, --gif)."""
    from sim.viewer import ReplaySource, run_window, write_frames

    what = f"run --scenario {args.scenario}"
    try:
        source = ReplaySource(tracks, title=Path(args.scenario).name + " (replay)")
    except ValueError as exc:
        raise InputError(f"{what}: {exc}") from None
    viewer = _viewer(args, source, headless=not window, what=what)
    if window:
        run_window(viewer)
        return {}
    gif = _gif_writer(args, source.dt_s * args.frame_every)
    n = source.head - source.cursor
    bar = _ProgressBar(n, "drawing", not args.quiet)
    drawn = write_frames(viewer, n, args.frames_dir, args.frame_every, gif,
                         progress=bar.update)
    bar.close()
    if gif is not None:
        gif.close()
    return {"frames": drawn, "frames_dir": args.frames_dir, "gif": args.gif}


# ---- viewer: run's window and frames, replay, benchmark render -----------------------------


def window_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (e.g. 1280x720), got "
                                         f"{text!r}") from None
    if not (160 <= w <= 7680 and 120 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"size must be within 160x120 .. 7680x4320, got "
                                         f"{text!r}")
    return w, h


def add_view_args(p, frames_help: str) -> None:
    """Flags of the viewer shared by run and replay (docs/viewer.md)."""
    g = p.add_argument_group("viewer (docs/viewer.md)")
    g.add_argument("--predictor", metavar="NAME",
                   help="draw this predictor's forecasts (a name from the registry, e.g. cv, "
                        "kalman, cv_multi)")
    g.add_argument("--checkpoint", metavar="NAME|FILE", help="checkpoint of a learned predictor")
    g.add_argument("--k", type=positive_int, default=6,
                   help="modes of a multimodal predictor (default 6)")
    g.add_argument("--horizon", type=seconds_up_to(MAX_HORIZON_S), default=3.0, metavar="S",
                   help="forecast horizon, s (default 3)")
    g.add_argument("--history", type=seconds_up_to(MAX_HORIZON_S), default=2.0, metavar="S",
                   help="past the predictor sees, s (default 2)")
    g.add_argument("--frames-dir", metavar="DIR", help=frames_help)
    g.add_argument("--frame-every", type=positive_int, default=1, metavar="N",
                   help="write every N-th step as a frame (default 1)")
    g.add_argument("--gif", metavar="FILE.gif",
                   help="write an animated GIF (implies --headless; needs pillow: "
                        "pip install 'drivecast[gif]')")
    g.add_argument("--gif-width", type=positive_int, default=640, metavar="PX",
                   help="GIF frames are scaled down to this width (default 640)")
    g.add_argument("--size", type=window_size, default=(1280, 720), metavar="WxH",
                   help="window / frame size in pixels (default 1280x720)")
    g.add_argument("--zoom", type=positive_float, default=9.0, metavar="PX_PER_M",
                   help="initial zoom, pixels per metre (default 9)")
    g.add_argument("--speed", type=positive_float, default=1.0,
                   help="initial playback speed in the window (default 1)")
    g.add_argument("--screenshot-dir", default=".", metavar="DIR",
                   help="where S saves screenshots (default: the current folder)")
    g.add_argument("--profile", action="store_true",
                   help="print the time per frame: scene + drawing, and forecast inference")


def _viewer(args, source, headless: bool, what: str):
    """A sim.viewer.Viewer for a source with the flags' predictor and view."""
    from sim.render import View
    from sim.viewer import Viewer

    predictor = None
    if args.predictor:
        from predictor.registry import make_predictor
        from sim.avoidance import max_horizon_steps

        try:
            predictor = make_predictor(args.predictor, checkpoint=args.checkpoint, k=args.k)
        except ValueError as exc:
            raise InputError(f"{what}: --predictor {args.predictor}: {exc}") from None
        steps = max_horizon_steps(predictor)
        if steps is not None and args.horizon > steps * predictor.dt_s + 1e-9:
            raise InputError(f"{what}: --horizon {args.horizon:g}: {args.predictor} predicts "
                             f"at most {steps * predictor.dt_s:g} s (its checkpoint)")
    try:
        view = View(width_px=args.size[0], height_px=args.size[1], px_per_m=args.zoom)
        return Viewer(source, predictor, view=view, horizon_s=args.horizon,
                      history_s=args.history, speed=args.speed,
                      screenshot_dir=args.screenshot_dir, headless=headless)
    except ValueError as exc:
        raise InputError(f"{what}: {exc}") from None


def _gif_writer(args, frame_s: float):
    if not args.gif:
        return None
    if not args.gif.lower().endswith(".gif"):
        raise InputError(f"--gif {args.gif}: the file name must end in .gif")
    from sim.viewer import GifWriter

    try:
        return GifWriter(args.gif, frame_s, width_px=args.gif_width)
    except ImportError:
        raise InputError(f"--gif {args.gif}: needs pillow, the optional extra: "
                         f"pip install 'drivecast[gif]'") from None


def _open_window(what: str) -> None:
    from sim.viewer import NoDisplayError, check_display

    try:
        check_display()
    except NoDisplayError as exc:
        raise InputError(f"{what}: {exc}") from None


def _say_profile(args, viewer) -> dict:
    prof = viewer.profile()
    f, p = prof["frame_ms"], prof["predict_ms"]
    if f:
        say(args, f"  frame time (scene + drawing, {viewer.view.width_px}x"
                  f"{viewer.view.height_px}): median {f['median']:.1f} ms, p95 {f['p95']:.1f} "
                  f"ms over {f['frames']} frames (CPU time median "
                  f"{prof['frame_cpu_ms']['median']:.1f} ms)")
    if p:
        both = prof["frame_with_predict_ms"]
        say(args, f"  forecast inference ({viewer.predictor.name}): median {p['median']:.1f} "
                  f"ms, p95 {p['p95']:.1f} ms; frame with inference: median "
                  f"{both['median']:.1f} ms, p95 {both['p95']:.1f} ms (CPU time median "
                  f"{prof['frame_with_predict_cpu_ms']['median']:.1f} ms)")
    return prof


def run_window_mode(args, world, layer=None, annotate=None) -> int:
    """`run` without --headless: the live window (the ego's avoidance `layer` as the hook,
    its plans drawn through `annotate`)."""
    from sim.tracks import write_tracks
    from sim.viewer import LiveSource, run_window

    _open_window("run")
    source = LiveSource(world, hook=layer, annotate=annotate,
                        record_every=args.record_every if args.record else None)
    viewer = _viewer(args, source, headless=False, what="run")
    run_window(viewer)
    summary = {"scenario": world.spec.name, "seed": world.spec.seed,
               "t_s": round(source.t_s, 3), "steps": int(source.head),
               "collisions": source.counters.collisions, "record": args.record}
    if args.record:
        write_tracks(args.record, source.tracks())
    say(args, f"{world.spec.name}: simulated up to t = {source.t_s:.1f} s, collisions "
              f"{source.counters.collisions}" + (f", track file {args.record}"
                                                 if args.record else ""))
    if args.profile:
        summary["profile"] = _say_profile(args, viewer)
    if args.json:
        write_json(args.json, summary)
    return 0


def frame_hook(args, world, inner=None, annotate=None):
    """`run --headless` with --frames-dir, --gif or --profile: a hook that draws the run's
    states (sim.viewer.FrameHook), else None. `inner`: a control hook (the avoidance) that
    runs first and whose decisions `annotate(state)` describes for drawing."""
    if not (args.frames_dir or args.gif or args.profile):
        return None
    from sim.viewer import FrameHook, LiveSource

    gif = _gif_writer(args, world.dt_s * args.frame_every)
    source = LiveSource(world, annotate=annotate, max_history=64)
    viewer = _viewer(args, source, headless=True, what="run")
    return FrameHook(viewer, args.frames_dir, args.frame_every, gif, inner=inner)


def finish_frames(args, frames, state, summary: dict) -> None:
    frames.finish(state)
    summary["frames"] = frames.drawn
    if args.frames_dir or args.gif:
        where = ", ".join(x for x in (args.frames_dir, args.gif) if x)
        say(args, f"  {frames.drawn} frames drawn: {where}")
    if args.profile:
        summary["profile"] = _say_profile(args, frames.viewer)


def _load_replay(args):
    from sim.tracks import read_tracks

    path = args.file
    if not os.path.isdir(path) and os.path.exists(path):
        from scenarios.ngsim import looks_like_ngsim, read_ngsim

        if looks_like_ngsim(path):
            return read_ngsim(path, args.location, progress=not args.quiet)
    return read_tracks(path)


def cmd_replay(args) -> int:
    from sim.viewer import ReplaySource, run_window, write_frames

    headless = bool(args.headless or args.frames_dir or args.gif)
    if headless and not (args.frames_dir or args.gif or args.profile):
        raise InputError("replay --headless: give --frames-dir DIR and/or --gif FILE.gif "
                         "(or --profile)")
    if not headless:
        _open_window("replay")
    tracks = _load_replay(args)
    try:
        source = ReplaySource(tracks, title=Path(args.file).name)
    except ValueError as exc:
        raise InputError(f"replay {args.file}: {exc}") from None
    t0, t1 = float(tracks.t[0]), float(tracks.t[-1])
    if args.start is not None:
        if not 0 <= args.start <= t1 - t0:
            raise InputError(f"replay --start {args.start:g}: the file covers 0 .. "
                             f"{t1 - t0:g} s")
        source.seek_time(t0 + args.start)
    viewer = _viewer(args, source, headless=headless, what=f"replay {args.file}")
    summary = {"file": args.file, "agents": tracks.n_agents, "steps": tracks.n_steps,
               "dt_s": source.dt_s}
    if not headless:
        run_window(viewer)
    else:
        start = source.cursor
        n = source.head - start
        if args.duration is not None:
            n = min(n, int(round(args.duration / source.dt_s)))
        gif = _gif_writer(args, source.dt_s * args.frame_every)
        bar = _ProgressBar(n, "drawing", not args.quiet)
        drawn = write_frames(viewer, n, args.frames_dir, args.frame_every, gif,
                             progress=bar.update)
        bar.close()
        if gif is not None:
            gif.close()
        summary.update(frames=drawn, t_from_s=round(float(tracks.t[start]) - t0, 3),
                       t_to_s=round(source.t_s - t0, 3), frames_dir=args.frames_dir,
                       gif=args.gif)
        where = ", ".join(x for x in (args.frames_dir, args.gif) if x) or "(not saved)"
        say(args, f"{args.file}: {drawn} frames from t = {summary['t_from_s']:g} to "
                  f"{summary['t_to_s']:g} s: {where}")
    if args.profile:
        summary["profile"] = _say_profile(args, viewer)
    if args.json:
        write_json(args.json, summary)
    return 0


def add_replay_parser(sub) -> None:
    p = sub.add_parser("replay", help="play a track file or an NGSIM file in the window (or "
                                      "write frames headless), forecasts beside the truth")
    p.add_argument("file", metavar="FILE", help="track file (.npz) or NGSIM CSV (.csv, .csv.gz)")
    p.add_argument("--headless", action="store_true",
                   help="no window: write frames (--frames-dir, --gif)")
    p.add_argument("--start", type=float, metavar="S",
                   help="start this many seconds into the file (default 0)")
    p.add_argument("--duration", type=positive_float, metavar="S",
                   help="headless: seconds to draw (default: to the end of the file)")
    p.add_argument("--location", help="NGSIM files holding several locations: which one")
    add_view_args(p, "write PNG frames here (implies --headless)")
    p.add_argument("--json", metavar="PATH", help="write a summary as JSON ('-' for stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)


def cmd_benchmark_render(args) -> int:
    from sim.viewer import benchmark_render

    predictor = None
    if args.predictor:
        from predictor.registry import make_predictor

        try:
            predictor = make_predictor(args.predictor, checkpoint=args.checkpoint, k=args.k)
        except ValueError as exc:
            raise InputError(f"benchmark render: --predictor {args.predictor}: {exc}") from None
    try:
        res = benchmark_render(args.vehicles, args.frames, predictor, *args.size,
                               seed=args.seed)
    except ValueError as exc:
        raise InputError(f"benchmark render --vehicles {args.vehicles}: {exc}") from None
    f, p, both = res["frame_ms"], res["predict_ms"], res["frame_with_predict_ms"]
    say(args, f"benchmark render: {res['width_px']}x{res['height_px']}, "
              f"{res['vehicles_in_view_min']}+ vehicles in view ({res['px_per_m']:g} px/m), "
              f"{res['frames']} frames, trails, TTC tags and HUD"
              + (f", {res['predictor']} forecasts ({res['modes']} modes"
                 f"{', uncertainty ellipses' if res['uncertainty'] else ''}) for every vehicle "
                 f"in view" if p else ", no forecasts"))
    cf, cp, cb = (res["frame_cpu_ms"], res["predict_cpu_ms"], res["frame_with_predict_cpu_ms"])
    say(args, f"  frame (scene + drawing): median {f['median']:.2f} ms, p95 {f['p95']:.2f} ms; "
              f"CPU time median {cf['median']:.2f} ms, p95 {cf['p95']:.2f} ms")
    if p:
        say(args, f"  inference: median {p['median']:.2f} ms, p95 {p['p95']:.2f} ms; CPU time "
                  f"median {cp['median']:.2f} ms")
        say(args, f"  frame with inference: median {both['median']:.2f} ms, p95 "
                  f"{both['p95']:.2f} ms; CPU time median {cb['median']:.2f} ms, p95 "
                  f"{cb['p95']:.2f} ms")
    if args.json:
        write_json(args.json, res)
    return 0


def add_benchmark_render_parser(bsub) -> None:
    s = bsub.add_parser("render", help="headless frame time of the viewer (docs/viewer.md)")
    s.add_argument("--vehicles", type=positive_int, default=100,
                   help="zoom out until this many vehicles are in view (default 100)")
    s.add_argument("--frames", type=positive_int, default=200)
    s.add_argument("--predictor", metavar="NAME", help="draw (and time) its forecasts")
    s.add_argument("--checkpoint", metavar="NAME|FILE")
    s.add_argument("--k", type=positive_int, default=6)
    s.add_argument("--size", type=window_size, default=(1280, 720), metavar="WxH")
    s.add_argument("--seed", type=nonneg_int, default=0)
    s.add_argument("--json", metavar="PATH", help="write results as JSON ('-' for stdout)")
    s.set_defaults(func=cmd_benchmark_render)


# ---- scenarios -----------------------------------------------------------------------------


def cmd_scenarios_list(args) -> int:
    from scenarios import suite
    from scenarios.loader import ScenarioError

    rows = []
    for name in suite.shipped():
        try:
            sc = suite.load_scenario(name)
        except ScenarioError as exc:  # a broken shipped file: say so, list the rest
            rows.append({"name": name, "cases": None, "description": f"BROKEN: {exc}"})
            continue
        rows.append({"name": name, "cases": sc.n_cases, "description": sc.description,
                     "sweep": sc.describe_axes() if sc.has_sweep else None,
                     "duration_s": sc.specs[0].duration_s})
    groups = {g: {"scenarios": list(names), "description": suite.GROUP_DESCRIPTIONS.get(g, ""),
                  "cases": sum(r["cases"] or 0 for r in rows if r["name"] in names)}
              for g, names in suite.groups().items()}
    width = max(len(r["name"]) for r in rows) if rows else 10
    say(args, f"{'scenario':<{width}}  cases  description")
    for r in rows:
        cases = "?" if r["cases"] is None else str(r["cases"])
        say(args, f"{r['name']:<{width}}  {cases:>5}  {r['description']}")
    say(args, "groups (for benchmark safety --suite):")
    for g, info in groups.items():
        say(args, f"  {g}: {', '.join(info['scenarios'])} ({info['cases']} cases) - "
                  f"{info['description']}")
    if args.json:
        write_json(args.json, {"scenarios": rows, "groups": groups})
    return 0


def cmd_scenarios_show(args) -> int:
    from scenarios.loader import ScenarioError, format_value, settings, unit_of
    from scenarios.suite import load_scenario

    try:
        sc = load_scenario(args.name)
        spec = sc.spec(args.case or 0)
    except ScenarioError as exc:
        raise InputError(f"scenarios show: {exc}" if str(exc).startswith("unknown")
                         else str(exc)) from None
    rows = settings(spec)
    say(args, f"{sc.name}: {sc.description}")
    say(args, f"  file: {sc.where}")
    if sc.has_sweep:
        say(args, f"  sweep: {sc.n_cases} cases = {sc.describe_axes()}; showing case "
                  f"{spec.case}: " + ", ".join(f"{k}={v}" for k, v in spec.case_params)
                  + " (choose with --case N)")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        say(args, f"  {key:<{width}}  {format_value(key, value)}")
    if args.json:
        write_json(args.json, {
            "name": sc.name, "description": sc.description, "file": sc.where,
            "cases": sc.n_cases, "case": spec.case,
            "sweep": [{"key": k, "values": list(v)} for k, v in sc.axes],
            "case_params": dict(spec.case_params),
            "settings": {k: {"value": _json_number(v), "unit": unit_of(k.split(".")[-1])}
                         for k, v in rows}})
    return 0


def _json_number(value):
    """Strict JSON has no infinity: an unbounded setting (e.g. a stall for good) is "inf"."""
    if isinstance(value, float) and value != value * 0:  # inf or nan
        return str(value)
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_number(v) for v in value]
    return value


def add_scenarios_parser(sub) -> None:
    p = sub.add_parser("scenarios", help="the scenario suite: list it, show one scenario")
    ssub = p.add_subparsers(dest="what", metavar="{list,show}", parser_class=_Parser)
    ssub.required = True
    s = ssub.add_parser("list", help="the shipped scenarios with descriptions and case counts")
    s.add_argument("--json", metavar="PATH", help="write the list as JSON ('-' for stdout)")
    s.set_defaults(func=cmd_scenarios_list)
    s = ssub.add_parser("show", help="every setting of a scenario, with its unit")
    s.add_argument("name", metavar="NAME|FILE.toml")
    s.add_argument("--case", type=nonneg_int, metavar="N", help="sweep case to show (default 0)")
    s.add_argument("--json", metavar="PATH", help="write the settings as JSON ('-' for stdout)")
    s.set_defaults(func=cmd_scenarios_show)


# ---- benchmark sim -------------------------------------------------------------------------


def cmd_benchmark_sim(args) -> int:
    from sim.world import benchmark_throughput

    road = ROAD_CHOICES[args.road]
    try:
        res = benchmark_throughput(args.vehicles, args.steps, road, seed=args.seed,
                                   repeats=args.repeats)
    except ValueError as exc:
        raise InputError(f"benchmark sim --vehicles {args.vehicles}: {exc}") from None
    say(args, f"benchmark sim: {args.vehicles} vehicles requested ({res['mean_active']:.0f} on "
          f"the road on average), {args.steps} steps of {res['dt']} s on {road}, "
          f"IDM + MOBIL + bicycle + collisions")
    say(args, f"  vehicle-steps/s: {res['vehicle_steps_per_s']:,.0f} "
          f"(best of {args.repeats}; median {res['vehicle_steps_per_s_median']:,.0f})")
    say(args, f"  wall per repeat: {res['wall_s']:.3f} s, steps/s: {res['steps_per_s']:,.0f}, "
          f"collisions: {res['collisions']}, lane changes: {res['lane_changes']}")
    if args.json:
        write_json(args.json, res)
    return 0


def add_benchmark_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="measure speed and accuracy")
    bsub = p.add_subparsers(dest="what", metavar="{sim,predict,render,safety}",
                            parser_class=_Parser)
    bsub.required = True
    s = bsub.add_parser("sim", help="raw simulator throughput, all behaviour on, no rendering")
    s.add_argument("--vehicles", type=positive_int, default=1000)
    s.add_argument("--steps", type=positive_int, default=1000)
    s.add_argument("--road", choices=sorted(ROAD_CHOICES), default="highway")
    s.add_argument("--repeats", type=positive_int, default=3,
                   help="timed repeats of --steps steps; the best is reported (default 3)")
    s.add_argument("--seed", type=nonneg_int, default=0)
    s.add_argument("--json", metavar="PATH", help="write results as JSON ('-' for stdout)")
    s.set_defaults(func=cmd_benchmark_sim)
    add_benchmark_render_parser(bsub)
    add_benchmark_predict_parser(bsub)
    add_benchmark_safety_parser(bsub)


# ---- benchmark predict ---------------------------------------------------------------------


def cmd_benchmark_predict(args) -> int:
    from predictor.benchmark import (
        BenchmarkInputError,
        BenchmarkSpec,
        format_table,
        plot_curves,
        run_benchmark,
    )
    from predictor.episodes import load_sources
    from predictor.registry import make_predictor, parse_predictor_list

    try:
        spec = BenchmarkSpec(history_s=args.history, horizon_s=args.horizon,
                             stride_s=args.stride, k=args.k, split=args.split,
                             split_seed=args.split_seed, by=args.by, fit=not args.no_fit,
                             ngsim_inputs=args.ngsim_inputs, batch=args.batch)
        predictors = [make_predictor(n, args.checkpoint, args.k)
                      for n in parse_predictor_list(args.predictors)]
    except ValueError as exc:
        raise InputError(f"benchmark predict: {exc}") from None
    for p in predictors:  # learned predictors know the horizon they were trained for
        max_s = getattr(p, "max_horizon_s", None)
        if max_s is not None and args.horizon > max_s + 1e-9:
            raise InputError(f"benchmark predict: --horizon {args.horizon:g} s is longer than "
                             f"the {max_s:g} s predictor '{p.name}' was trained for (use a "
                             f"checkpoint trained for it, e.g. --checkpoint ngsim for 5 s)")
    show = not args.quiet
    bar = _ProgressBar(None, "predicting", show, unit="sample")
    t0 = time.perf_counter()
    try:
        episodes = load_sources(args.data, spec.ngsim_inputs, sim_seeds=args.sim_seeds,
                                sim_duration_s=args.sim_duration, workers=args.workers,
                                file_progress=show)
        t_load = time.perf_counter() - t0
        result = run_benchmark(episodes, predictors, spec, bar.to)
    except BenchmarkInputError as exc:
        raise InputError(str(exc)) from None
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    result["protocol"]["wall_s"] = {"load": round(t_load, 2), "total": round(wall, 2)}
    say(args, format_table(result))
    say(args, f"loading {t_load:.1f} s, total {wall:.1f} s")
    write_results(args, result, plot_curves)
    return 0


def add_benchmark_predict_parser(bsub) -> None:
    from predictor.registry import predictor_names

    s = bsub.add_parser("predict", help="forecast accuracy on track files and NGSIM files "
                                        "(docs/forecast_benchmark.md)")
    s.add_argument("--data", nargs="+", required=True, metavar="SRC",
                   help="track files (.npz), NGSIM CSV files (.csv, .csv.gz), or 'sim': "
                        "the scenario suite's episodes, simulated now")
    s.add_argument("--predictors", default="cv,ca,ctrv,kalman,cv_multi",
                   help=f"comma-separated names (available: {', '.join(predictor_names())}; "
                        f"default cv,ca,ctrv,kalman,cv_multi)")
    s.add_argument("--checkpoint", metavar="NAME|FILE",
                   help="checkpoint for learned predictors (baselines ignore it)")
    s.add_argument("--history", type=seconds_up_to(MAX_HORIZON_S, zero_ok=True), default=2.0,
                   metavar="S",
                   help="seconds of past before the prediction time (default 2.0)")
    s.add_argument("--horizon", type=seconds_up_to(MAX_HORIZON_S), default=3.0, metavar="S",
                   help="seconds predicted (default 3.0)")
    s.add_argument("--stride", type=positive_float, default=1.0, metavar="S",
                   help="seconds between prediction times (default 1.0)")
    s.add_argument("--k", type=positive_int, default=6, help="modes counted by min-of-K and "
                                                             "the miss rate (default 6)")
    s.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                   help="which split to evaluate (default test; by vehicle for NGSIM, by "
                        "episode otherwise)")
    s.add_argument("--split-seed", type=nonneg_int, default=0, help="split seed (default 0)")
    s.add_argument("--by", choices=("file", "maneuver"),
                   help="also break results down per input file or per manoeuvre")
    s.add_argument("--no-fit", action="store_true",
                   help="use the Kalman / multimodal defaults instead of fitting them on the "
                        "train split")
    s.add_argument("--ngsim-inputs", choices=("causal", "smoothed"), default="causal",
                   help="what predictors see of NGSIM CSVs: causally smoothed positions "
                        "(default) or the centred smoothing used as ground truth")
    s.add_argument("--batch", type=positive_int, default=20_000,
                   help="samples per predict call (default 20000)")
    add_sim_source_args(s)
    s.add_argument("--plot", metavar="PNG", help="error against horizon per predictor")
    s.add_argument("--json", metavar="PATH", help="write results as JSON ('-' for stdout)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_benchmark_predict)


def add_sim_source_args(p) -> None:
    """Flags of the `sim` data source (the scenario suite's training/test episodes)."""
    p.add_argument("--sim-seeds", type=positive_int, default=8,
                   help="with --data sim: episodes per scenario of the suite (default 8)")
    p.add_argument("--sim-duration", type=positive_float, default=120.0,
                   help="with --data sim: longest episode, s (default 120)")
    p.add_argument("--workers", type=positive_int, default=2,
                   help="with --data sim: simulating processes (default 2)")


# ---- the ego's avoidance: run --avoidance, benchmark safety (docs/safety.md) ---------------


def avoidance_modes() -> list[str]:
    """none, reactive and one mode per registered predictor."""
    from predictor.registry import predictor_names
    from sim.avoidance import BUILTIN_MODES

    return list(BUILTIN_MODES) + predictor_names()


def parse_modes(text: str, what: str, replay: bool = False) -> list[str]:
    """'none,reactive,cv' -> names; InputError for unknown, repeated or empty names. `oracle`
    (the recorded future) only in a log replay."""
    valid = avoidance_modes() + (["oracle"] if replay else [])
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise InputError(f"{what}: expected comma-separated modes, got {text!r} (valid: "
                         f"{', '.join(valid)})")
    for n in names:
        if n == "oracle" and not replay:
            raise InputError(f"{what}: mode 'oracle' (the recorded future) is for a log "
                             f"replay: run --scenario FILE.npz, benchmark safety --suite "
                             f"FILE.npz (valid here: {', '.join(valid)})")
        if n not in valid:
            raise InputError(f"{what}: unknown avoidance mode {n!r} (valid: {', '.join(valid)})")
    if len(set(names)) != len(names):
        raise InputError(f"{what}: a mode is listed twice in {text!r}")
    return names


def avoidance_params(args, what: str):
    """sim.avoidance.AvoidanceParams from the flags (sensor noise, latency, horizon)."""
    from sim.avoidance import AvoidanceParams

    try:
        return AvoidanceParams(sensor_noise_pos_m=args.sensor_noise,
                               sensor_noise_vel_mps=args.sensor_noise_vel,
                               latency_s=args.latency, horizon_s=args.plan_horizon)
    except ValueError as exc:
        raise InputError(f"{what}: {exc}") from None


def _check_predictors(modes: list[str], checkpoint, k: int, what: str,
                      dt_s: float | None = None) -> None:
    """Build each predictor mode's forecaster once here, so a bad checkpoint (or one made
    for another time step than a replay's dt_s, when given) is one line. `oracle` is built
    per episode."""
    from predictor.registry import make_predictor
    from sim.avoidance import BUILTIN_MODES
    from sim.safety import REPLAY_MODES

    for m in modes:
        if m not in BUILTIN_MODES + REPLAY_MODES:
            try:
                p = make_predictor(m, checkpoint=checkpoint, k=k)
            except ValueError as exc:
                raise InputError(f"{what}: avoidance mode {m}: {exc}") from None
            p_dt = getattr(p, "dt_s", None)
            if dt_s is not None and p_dt is not None and abs(p_dt - dt_s) > 1e-9:
                raise InputError(f"{what}: avoidance mode {m}: the forecaster works at steps "
                                 f"of {p_dt:g} s, the replay at {dt_s:g} s")


def safety_layer(args, world):
    """The ego's SafetyLayer for `run`: --avoidance, else the scenario's ego.avoidance (None
    when that is 'none' and no flag asks for it, or there is no ego)."""
    mode = args.avoidance
    spec = world.spec
    if mode is None:
        mode = spec.ego.avoidance if spec.ego is not None else "none"
        if mode == "none":
            return None
    if spec.ego is None:
        raise InputError("run --avoidance: the scenario has no ego")
    return build_layer(args, mode, spec.dt_s, seed=spec.seed)


def build_layer(args, text: str, dt_s: float, replay_of=None, **layer_kw):
    """The SafetyLayer of one --avoidance mode at steps of dt_s (InputError, one line, for a
    bad mode, checkpoint or time step). replay_of: the recording of a log replay, which
    allows `oracle` (its recorded future) and turns the layer's lane changes off (the replay
    ego keeps its lane)."""
    import dataclasses

    from predictor.registry import make_predictor
    from sim.avoidance import BUILTIN_MODES, SafetyLayer

    what = "run --avoidance"
    modes = parse_modes(text, what, replay=replay_of is not None)
    if len(modes) != 1:
        raise InputError(f"{what}: one mode")
    mode = modes[0]
    params = avoidance_params(args, "run")
    predictor = None
    if replay_of is not None:
        from sim.replay import RecordedFuture

        params = dataclasses.replace(params, lane_changes=False)
        if mode == "oracle":
            predictor = RecordedFuture(replay_of, dt_s)
    if mode not in BUILTIN_MODES and predictor is None:
        try:
            predictor = make_predictor(mode, checkpoint=args.checkpoint, k=args.k)
        except ValueError as exc:
            raise InputError(f"{what} {mode}: {exc}") from None
    try:
        return SafetyLayer(mode, params, predictor, dt_s, **layer_kw)
    except ValueError as exc:
        raise InputError(f"{what} {mode}: {exc}") from None


def plan_annotation(layer):
    """What the viewer draws of the layer's decision for a state (sim.viewer.Annotation)."""

    def annotate(state):
        from sim.viewer import Annotation

        plan = layer.plan_for(state)
        if plan is None:
            return None
        return Annotation(plan_xy=plan.plan_xy, reacts_to_id=plan.reacts_to_id,
                          threat_ids=plan.threat_ids, action=f"{layer.mode}: {plan.action}")

    return annotate


def _plan_stats(layer) -> dict:
    """The layer's mode, how many of its kept plans intervened, its hardest command."""
    plans = layer.plans.values()
    return {"mode": layer.mode,
            "intervention_steps": sum(1 for p in plans if p.intervening),
            "min_command_mps2": round(min((p.command_mps2 for p in plans), default=0.0), 3)}


def avoidance_summary(args, layer, state) -> dict:
    plans = layer.plans
    out = {**_plan_stats(layer), "ego_collided": bool(state.active[0] and state.collided[0])}
    say(args, f"  avoidance {layer.mode}: intervened in {out['intervention_steps']} steps, "
              f"hardest command {out['min_command_mps2']:.1f} m/s2"
              + (" (last plans only)" if len(plans) >= layer.keep_plans else ""))
    return out


def add_avoidance_args(p, modes_help: str | None = None) -> None:
    g = p.add_argument_group("avoidance (docs/safety.md)")
    g.add_argument("--avoidance", metavar="MODE" if modes_help is None else "MODES",
                   help=modes_help or "the ego's safety layer: none, reactive (AEB on current "
                   "states), a predictor name (cv, ca, ctrv, kalman, cv_multi, rnn, ...) "
                   "whose forecasts it acts on, or in a log replay oracle (the recorded "
                   "future); default: the scenario's ego.avoidance")
    g.add_argument("--sensor-noise", type=float, default=0.0, metavar="M",
                   help="std of the agents' perceived positions, m (default 0)")
    g.add_argument("--sensor-noise-vel", type=float, default=0.0, metavar="MPS",
                   help="std of the agents' perceived velocities, m/s (default 0)")
    g.add_argument("--latency", type=float, default=0.0, metavar="S",
                   help="the layer sees the agents this much late, s (default 0)")
    g.add_argument("--plan-horizon", type=seconds_up_to(MAX_HORIZON_S), default=3.0,
                   metavar="S",
                   help="the layer's planning horizon, s (default 3)")


def cmd_benchmark_safety(args) -> int:
    import functools

    from predictor.registry import make_predictor
    from scenarios.loader import ScenarioError
    from scenarios.suite import episodes
    from sim import safety

    what = "benchmark safety"
    recordings = None
    if is_recording(args.suite):
        specs, recordings = replay_suite(args, what)
    elif args.egos is not None or args.reactive:
        raise InputError(f"{what} --egos/--reactive: for a recording (--suite FILE.npz or an "
                         f"NGSIM file)")
    modes = parse_modes(args.avoidance, f"{what} --avoidance", replay=recordings is not None)
    params = avoidance_params(args, what)
    try:
        settings = safety.SafetySettings(test_track_end=not args.full_episodes)
        if recordings is None:
            specs = episodes(args.suite, repeats=args.seeds, duration_s=args.duration)
    except ScenarioError as exc:
        raise InputError(f"{what} --suite: {exc}" if str(exc).startswith("unknown")
                         else str(exc)) from None
    except ValueError as exc:
        raise InputError(f"{what}: {exc}") from None
    no_ego = sorted({s.name for s in specs if getattr(s, "ego", True) is None})
    if no_ego:
        raise InputError(f"{what} --suite {args.suite}: scenarios without an ego: "
                         f"{', '.join(no_ego)}")
    dt_s = None
    if recordings:
        from sim.replay import substep_s

        dt_s = substep_s(next(iter(recordings.values())))
    _check_predictors(modes, args.checkpoint, args.k, what, dt_s)
    workers = args.workers or os.cpu_count() or 1
    factory = functools.partial(make_predictor, checkpoint=args.checkpoint, k=args.k)
    n_jobs = len(specs) * len(modes)
    say(args, f"{what}: suite {args.suite}, {len(specs)} episodes x {len(modes)} modes "
              f"({', '.join(modes)}) = {n_jobs} runs on {min(workers, n_jobs)} worker(s)")
    bar = _ProgressBar(n_jobs, "episodes", not args.quiet, unit="run")
    try:
        # the workers are forked (seconds sooner than spawned): checking the checkpoints
        # above ran torch here only through RnnPredictor.load, which sets one thread before
        # the first torch operation, so no OpenMP pool exists to hang a forked child
        result = safety.benchmark(specs, modes, factory, params, settings, workers,
                                  by_case=args.by == "case",
                                  progress=bar.to,
                                  recordings=recordings)
    finally:
        bar.close()
    result = {"suite": args.suite, "modes": modes,
              "seeds": None if recordings else args.seeds, **result}
    say(args, safety.format_table(result))
    say(args, f"{n_jobs} runs, {sum(e['duration_s'] for e in result['episodes']):.0f} s "
              f"simulated, wall {result['wall_s']:.1f} s with {result['workers']} worker(s)")
    say(args, "CPU per mode: " + ", ".join(
        f"{m} {c['cpu_s']:.1f} s ({c['ms_per_step']:.2f} ms/step)"
        for m, c in result["cpu"].items() if c["ms_per_step"] is not None))
    write_results(args, result, safety.plot_cases)
    return 0


def replay_suite(args, what: str):
    """--suite FILE.npz|NGSIM: (ReplayEpisode list, {name: Tracks}) of --egos agents."""
    from sim import safety

    if args.seeds != 1 or args.duration is not None or args.full_episodes:
        raise InputError(f"{what} --seeds/--duration/--full-episodes: not for a recording "
                         f"(--egos picks its episodes)")
    tracks = load_recording(args.suite, f"{what} --suite {args.suite}",
                            progress=not args.quiet)
    name = Path(args.suite).name
    specs = safety.replay_episodes(tracks, name, args.egos or 50, reactive=args.reactive)
    if not specs:
        raise InputError(f"{what} --suite {args.suite}: no agent is recorded for the 12 s "
                         f"an episode needs")
    return specs, {name: tracks}


def add_benchmark_safety_parser(bsub) -> None:
    s = bsub.add_parser("safety", help="closed-loop collision avoidance over a scenario suite "
                                       "(docs/safety.md)")
    s.add_argument("--suite", default="ncap", metavar="NAME|FILE",
                   help="a group (ncap, highway, all), a shipped scenario, a scenario file, or "
                        "a recording to replay (a track file or an NGSIM file; modes may "
                        "include oracle, the recorded future) (default ncap)")
    add_avoidance_args(s, "comma-separated modes: none, reactive, predictor names and, "
                          "for a recording, oracle (default none,reactive,cv,kalman)")
    s.set_defaults(avoidance="none,reactive,cv,kalman")
    s.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                   help="episodes per case, each with its own derived seed (default 1)")
    s.add_argument("--duration", type=positive_float, metavar="S",
                   help="replaces each scenario's duration, s")
    s.add_argument("--by", choices=("case",), help="also one row per sweep case")
    s.add_argument("--workers", type=positive_int, metavar="N",
                   help="worker processes (default: all cores); results do not depend on it")
    s.add_argument("--checkpoint", metavar="NAME|FILE",
                   help="checkpoint for learned predictors (e.g. rnn: sim, ngsim or a file)")
    s.add_argument("--k", type=positive_int, default=6,
                   help="modes of a multimodal predictor (default 6)")
    s.add_argument("--egos", type=positive_int, metavar="N",
                   help="a recording (--suite FILE.npz or an NGSIM file): replay it with the "
                        "ego replacing N recorded agents, one episode each (default 50)")
    s.add_argument("--reactive", action="store_true",
                   help="a recording: recorded agents that would run into the ego switch to "
                        "IDM (default: they follow their tracks)")
    s.add_argument("--full-episodes", action="store_true",
                   help="run test-track episodes to their end instead of ending them as Euro "
                        "NCAP does (at a standstill or once no longer closing in)")
    s.add_argument("--plot", metavar="PNG", help="collisions and impact speed per case and mode")
    s.add_argument("--json", metavar="PATH", help="write results as JSON ('-' for stdout)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_benchmark_safety)


# ---- import ngsim -------------------------------------------------------------------------


def cmd_import_ngsim(args) -> int:
    from scenarios.ngsim import ImportSettings, describe, read_ngsim
    from sim.tracks import write_tracks

    try:
        settings = ImportSettings(window_s=args.window, polyorder=args.polyorder,
                                  default_length_m=args.default_length, causal=args.causal)
    except ValueError as exc:
        raise InputError(f"import ngsim: {exc}") from None
    t0 = time.perf_counter()
    tracks = read_ngsim(args.file, args.location, settings, progress=not args.quiet)
    write_tracks(args.out, tracks)
    info = describe(tracks)
    info.update(file=args.file, out=args.out, wall_s=round(time.perf_counter() - t0, 2))
    say(args, f"{args.file} -> {args.out}: {info['agents']} vehicles, {info['steps']} steps of "
              f"0.1 s ({info['duration_s']:g} s, {info['periods']} period(s), location "
              f"{tracks.meta['location']}), duplicates dropped {info['duplicates_dropped']}, "
              f"speed median {info['speed_mps_p50']} / max {info['speed_mps_max']} m/s, "
              f"{info['wall_s']} s")
    acc = info["kinematics"]["accel_mps2"]
    if acc:
        say(args, f"  acceleration (m/s^2): p0.1 {acc['p0.1']}, p1 {acc['p1']}, median "
                  f"{acc['p50']}, p99 {acc['p99']}, p99.9 {acc['p99.9']}, min {acc['min']}, "
                  f"max {acc['max']}")
    if args.json:
        write_json(args.json, info)
    return 0


def add_import_parser(sub) -> None:
    from scenarios.ngsim import DEFAULT_LENGTH_M, DEFAULT_POLYORDER, DEFAULT_WINDOW_S

    p = sub.add_parser("import", help="convert external trajectory data to a track file")
    isub = p.add_subparsers(dest="what", metavar="{ngsim}", parser_class=_Parser)
    isub.required = True
    n = isub.add_parser("ngsim", help="NGSIM CSV (official 25-column layout or the US-101 "
                                      "subset; .csv or .csv.gz) to a track file (docs/ngsim.md)")
    n.add_argument("file", metavar="FILE")
    n.add_argument("-o", "--out", required=True, metavar="OUT.npz", help="track file to write")
    n.add_argument("--location", help="which Location to import when the file holds several")
    n.add_argument("--window", type=float, default=DEFAULT_WINDOW_S, metavar="S",
                   help=f"Savitzky-Golay window, s (default {DEFAULT_WINDOW_S}; 0: no "
                        f"smoothing)")
    n.add_argument("--polyorder", type=int, default=DEFAULT_POLYORDER,
                   help=f"Savitzky-Golay polynomial order (default {DEFAULT_POLYORDER})")
    n.add_argument("--causal", action="store_true",
                   help="smooth each frame from past frames only (no look-ahead)")
    n.add_argument("--default-length", type=positive_float, default=DEFAULT_LENGTH_M,
                   metavar="M", help=f"vehicle length where the file has none (default "
                                     f"{DEFAULT_LENGTH_M} m)")
    n.add_argument("--json", metavar="PATH", help="write a summary as JSON ('-' for stdout)")
    n.add_argument("--quiet", action="store_true", help="no progress bar")
    n.set_defaults(func=cmd_import_ngsim)


# ---- train ---------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from predictor.benchmark import BenchmarkInputError
    from predictor.episodes import load_sources, split_masks
    from predictor.rnn import CheckpointError
    from predictor.train import TrainConfig, build_samples, protocol_config, train_model
    from sim.tracks import TrackFileError

    try:
        model_cfg = protocol_config(args.history, args.horizon, cell=args.cell,
                                    hidden=args.hidden, layers=args.layers,
                                    n_modes=args.modes, n_neighbors=args.neighbors,
                                    encoder_stride=args.encoder_stride,
                                    social_hidden=args.social_hidden, knots=args.knots)
        train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                patience=args.patience, stride_s=args.stride, seed=args.seed,
                                threads=args.threads, hard_weight=args.hard_weight)
    except ValueError as exc:
        raise InputError(f"train: {exc}") from None
    out = Path(args.out)
    if out.suffix != ".pt":
        raise InputError(f"train: --out {out}: expected a .pt file")
    quiet = args.quiet
    t_start = time.perf_counter()
    bar = _ProgressBar(None, "simulating the suite", not quiet)
    try:
        data = load_sources(args.data, sim_seeds=args.sim_seeds,
                            sim_duration_s=args.sim_duration, workers=args.workers,
                            progress=bar.to, file_progress=not quiet)
    except (TrackFileError, BenchmarkInputError) as exc:
        raise InputError(f"train: {exc}") from None
    finally:
        bar.close()
    samples = {}
    for split, stride, most in (("train", train_cfg.stride_s, train_cfg.max_train_samples),
                                ("val", train_cfg.val_stride_s, train_cfg.max_val_samples)):
        try:
            samples[split] = build_samples(data, model_cfg, stride, max_samples=most,
                                           seed=args.seed,
                                           masks=split_masks(data, split, args.split_seed))
        except ValueError as exc:
            raise InputError(f"train: {split} split: {exc}") from None
    train_s, val_s = samples["train"], samples["val"]
    say(args, f"train: {len(train_s):,} training and {len(val_s):,} validation samples from "
              f"{len(data)} file(s) ({time.perf_counter() - t_start:.0f} s); cell {args.cell}, "
              f"history {args.history:g} s, horizon {args.horizon:g} s")
    from tqdm import tqdm

    epochs = tqdm(total=train_cfg.epochs, desc="epochs", unit="epoch", disable=quiet,
                  dynamic_ncols=True)
    batches = tqdm(total=0, desc="batches", unit="batch", disable=quiet, leave=False,
                   dynamic_ncols=True)

    def on_batch(i, n, loss):
        if batches.total != n:
            batches.reset(total=n)
        batches.update(1)
        if i % 20 == 0:
            batches.set_postfix(loss=f"{loss:.3f}")

    log_rows = []

    def on_epoch(log):
        v = log.val
        epochs.update(1)
        epochs.set_postfix(loss=f"{log.train_loss:.3f}", ade=f"{v['ade']:.2f}",
                           fde=f"{v['fde']:.2f}", minfde=f"{v['min_fde_k']:.2f}",
                           lr=f"{log.lr:.1e}", grad=f"{log.grad_norm:.2f}",
                           first_last=f"{log.grad_first_last:.1e}")
        log_rows.append(log)
        if not quiet:
            epochs.write(f"epoch {log.epoch:3d}  loss {log.train_loss:7.3f}  val ADE "
                         f"{v['ade']:.3f}  FDE {v['fde']:.3f}  minADE {v['min_ade_k']:.3f}  "
                         f"minFDE {v['min_fde_k']:.3f}  miss {v['miss_rate']:.3f}  lr "
                         f"{log.lr:.2e}  grad {log.grad_norm:.2f}  dL/dx first/last "
                         f"{log.grad_first_last:.2e}  ({log.seconds:.0f} s)")

    meta = {"data": list(args.data), "inputs": sorted({ep.inputs_kind for ep in data}),
            "sim_seeds": args.sim_seeds, "sim_duration_s": args.sim_duration,
            "split_seed": args.split_seed, "samples": {"train": len(train_s),
                                                       "val": len(val_s)},
            "command": "python main.py train " + " ".join(sys.argv[2:])}
    try:
        logs = train_model(train_s, val_s, model_cfg, train_cfg, str(out), meta=meta,
                           resume=args.resume, on_epoch=on_epoch, on_batch=on_batch)
    except CheckpointError as exc:
        raise InputError(f"train --resume: {exc}") from None
    except ValueError as exc:
        raise InputError(f"train: {exc}") from None
    finally:
        batches.close()
        epochs.close()
    wall = time.perf_counter() - t_start
    best = min(logs, key=lambda e: e.val["fde"] + e.val["min_fde_k"]) if logs else None
    summary = {"out": str(out), "epochs_run": len(logs), "wall_s": round(wall, 1),
               "best_epoch": best.epoch if best else None,
               "best_val": best.val if best else None,
               "epochs": [{"epoch": e.epoch, "train_loss": e.train_loss, "lr": e.lr,
                           "grad_norm": e.grad_norm, "grad_first_last": e.grad_first_last,
                           "val": e.val, "seconds": e.seconds} for e in logs]}
    if best:
        say(args, f"train: best epoch {best.epoch}: val FDE {best.val['fde']:.3f} m, "
                  f"minFDE_{model_cfg.n_modes} {best.val['min_fde_k']:.3f} m; wrote {out} "
                  f"in {wall / 60:.1f} min")
    if args.json:
        write_json(args.json, summary)
    return 0


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train the RNN forecaster to a checkpoint")
    p.add_argument("--data", nargs="+", required=True, metavar="SRC",
                   help="'sim' (generate from the scenario suite), track files (.npz), NGSIM "
                        "files (.csv/.csv.gz)")
    p.add_argument("--out", required=True, metavar="FILE.pt")
    p.add_argument("--cell", choices=("rnn", "gru", "lstm"), default="gru")
    p.add_argument("--history", type=seconds_up_to(MAX_HORIZON_S), default=2.0,
                   help="s (default 2.0)")
    p.add_argument("--horizon", type=seconds_up_to(MAX_HORIZON_S), default=3.0,
                   help="s (default 3.0)")
    p.add_argument("--hidden", type=positive_int, default=64)
    p.add_argument("--layers", type=positive_int, default=1)
    p.add_argument("--encoder-stride", type=positive_int, default=4, metavar="N",
                   help="the encoder reads every N-th history step, ending now (default 4)")
    p.add_argument("--modes", type=positive_int, default=6, help="K (default 6)")
    p.add_argument("--neighbors", type=nonneg_int, default=8, help="M nearest (default 8)")
    p.add_argument("--social-hidden", type=positive_int, default=64, metavar="N",
                   help="width of the neighbour encoding (default 64)")
    p.add_argument("--knots", type=nonneg_int, default=0, metavar="N",
                   help="the heads predict N points per mode and axis, linearly interpolated "
                        "to every horizon step (default 0: one per step; the shipped sim "
                        "model: 8)")
    p.add_argument("--epochs", type=positive_int, default=15)
    p.add_argument("--patience", type=positive_int, default=6,
                   help="early stopping: epochs without improvement (default 6)")
    p.add_argument("--batch-size", type=positive_int, default=512)
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--stride", type=positive_float, default=0.5,
                   help="spacing of training samples along a track, s (default 0.5)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--hard-weight", type=nonneg_float, default=0.0, metavar="W",
                   help="a sample's regression loss weighs 1 + W x constant velocity's error "
                        "at the horizon (m), so brakes and lane changes count more (default 0; "
                        "the shipped sim model: 0.5)")
    p.add_argument("--split-seed", type=nonneg_int, default=0,
                   help="seed of the shared train/val/test split (default 0)")
    add_sim_source_args(p)
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads for training (default 1: faster than 2 here, where "
                        "a second OpenMP thread competes with the data pipeline)")
    p.add_argument("--resume", action="store_true",
                   help="continue from FILE.pt.resume (same settings)")
    p.add_argument("--json", metavar="PATH", help="write the training log as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


# ---- info ----------------------------------------------------------------------------------


def cmd_info(args) -> int:
    import numpy as np

    from sim.tracks import KINDS, read_tracks

    out = []
    for path in args.files:
        tr = read_tracks(path)
        present = tr.present
        speed = np.hypot(tr.vx, tr.vy)[present]
        kinds = ({KINDS[int(k)]: int(n) for k, n in zip(*np.unique(tr.kind, return_counts=True))}
                 if tr.kind is not None else {})
        info = {
            "file": str(path), "source": tr.meta.get("source"), "agents": tr.n_agents,
            "steps": tr.n_steps, "dt_s": tr.dt_s,
            "duration_s": round(float(tr.t[-1] - tr.t[0]), 3),
            "agent_steps": int(present.sum()), "kinds": kinds,
            "ego_id": int(tr.ids[tr.ego]) if tr.ego >= 0 else None,
            "road": tr.road.kind if tr.road is not None else None,
            "collided_agents": int(tr.collided.any(axis=1).sum())
            if tr.collided is not None else None,
            "speed_mps": {"mean": round(float(speed.mean()), 3) if speed.size else None,
                          "max": round(float(speed.max()), 3) if speed.size else None},
        }
        out.append(info)
        say(args, f"{path}: {info['agents']} agents x {info['steps']} steps of {info['dt_s']:g} s "
              f"({info['duration_s']:g} s), source {info['source']}, "
              f"road {_shown(info['road'], 'not recorded')}, "
              f"ego id {_shown(info['ego_id'], 'none')}, kinds {kinds or 'not recorded'}, "
              f"mean speed {_shown(info['speed_mps']['mean'], 'n/a')} m/s, "
              f"agents in a collision {_shown(info['collided_agents'], 'not recorded')}")
    if args.json:
        write_json(args.json, out if len(out) > 1 else out[0])
    return 0


def add_info_parser(sub) -> None:
    p = sub.add_parser("info", help="check track files against the spec and summarise them")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON ('-' for stdout)")
    p.set_defaults(func=cmd_info)


# ---- entry point ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="drivecast",
                     description="Trajectory-prediction traffic simulator (shared/specs/cli.md)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    add_run_parser(sub)
    add_scenarios_parser(sub)
    add_replay_parser(sub)
    add_info_parser(sub)
    add_import_parser(sub)
    add_train_parser(sub)
    add_benchmark_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sim.tracks import TrackFileError

    try:
        args = build_parser().parse_args(argv)
        check_outputs(args)
        return int(args.func(args) or 0)
    except (InputError, TrackFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a file the system refused (full disk, permissions): name it
        if exc.filename is None:
            raise
        print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
