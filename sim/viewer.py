"""The viewer: sources of frames (a live simulation, a track file), the controller that turns
input into view changes and steps, the interactive window loop, and headless frame writing.

Next to sim/render.py this is the only module that imports pygame. The simulation advances in
fixed steps of dt_s against a real-time clock: a slow frame means more steps the next frame
(up to a cap), never a different step. States are immutable, so the live source keeps
references to a bounded history of them for stepping back.

A predictor (anything with the sim.forecast.Predictor protocol) is injected by the caller:
sim/ never imports predictor/.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402

from sim import render as R  # noqa: E402
from sim.forecast import HistoryBuffer, history_from_tracks  # noqa: E402
from sim.state import ROLE_EGO, TrafficState  # noqa: E402
from sim.timing import summary_ms  # noqa: E402
from sim.tracks import TrackFileError, Tracks  # noqa: E402
from sim.world import Counters, Recorder, init_state, step  # noqa: E402

SPEEDS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
TRAIL_S = 3.0  # trails show the last TRAIL_S seconds, a point every TRAIL_STEP_S
TRAIL_STEP_S = 0.2
FOLLOW_LEAD = 0.18  # the followed vehicle sits this share of the width behind the centre
MAX_CATCH_UP_S = 0.25  # at most this much real time is caught up in one frame


@dataclass(frozen=True)
class Annotation:
    """What a control layer wants drawn for a state: the ego's chosen plan (F, 2) m, the id of
    the agent it reacts to, ids it considers threats, its action (the avoidance), and the
    signal of each lane (a junction's controller)."""

    plan_xy: np.ndarray | None = None
    reacts_to_id: int = -1
    threat_ids: tuple[int, ...] = ()
    action: str = ""
    lane_signal: np.ndarray | None = None  # (L,) per lane: -1 none, 0 red, 1 amber, 2 green


Annotate = Callable[[TrafficState], Annotation | None]


@dataclass(frozen=True, eq=False)
class Frame:
    """One moment of a source, ready to draw: vehicles (N rows), their trails (N, T, 2),
    the true future (N, F, 2) when known, and HUD facts."""

    t_s: float
    index: int
    vehicles: R.Vehicles
    trails: np.ndarray
    truth: np.ndarray | None
    collided_so_far: int
    ego_min_ttc_s: float = math.nan  # the ego's least TTC up to this step (NaN: no ego)
    action: str = ""
    plan_xy: np.ndarray | None = None
    reacts_to_id: int = -1
    lane_signal: np.ndarray | None = None


# ---- sources -------------------------------------------------------------------------------


class LiveSource:
    """A running simulation, stepped one fixed step at a time, with a bounded history of
    (immutable) states so the viewer can step back and forward again without re-simulating.

    `observe(state)` appends a state simulated elsewhere (e.g. by sim.world.run through a
    hook) instead of stepping here.
    """

    kind = "live"

    def __init__(self, world, hook=None, annotate: Annotate | None = None,
                 max_history: int = 1200, record_every: int | None = None):
        if max_history < 2:
            raise ValueError("max_history must be >= 2")
        self.world = world
        self.record_every = record_every
        self.hook = hook
        self.annotate = annotate
        self.max_history = max_history
        self.title = world.spec.name
        self.dt_s = world.dt_s
        self.road = world.road
        self.duration_s = world.spec.duration_s
        self.restart()

    # stepping
    def restart(self) -> None:
        self.version = getattr(self, "version", -1) + 1
        self._rng = np.random.default_rng(self.world.spec.seed)
        self._counters = Counters()
        self._states: list[TrafficState] = []
        self._min_ttc: list[float] = []  # the ego's least TTC up to each kept state
        self._base = 0  # absolute index of _states[0]
        self._collided_ids: set[int] = set()
        self._hb: HistoryBuffer | None = None
        self._hb_index = -1
        self.recorder = Recorder(self.record_every) if self.record_every else None
        self.observe(init_state(self.world, self._rng))
        self.cursor = 0

    def observe(self, state: TrafficState) -> None:
        """Append the newest state (and move the cursor to it). A state whose step is not
        after the head's replaces the states from that step on."""
        if self._states and state.step <= self._states[-1].step:
            keep = max(0, state.step - self._states[0].step)
            del self._states[keep:]
            del self._min_ttc[keep:]
            if not self._states:
                self._base = state.step
            self.version += 1
            self._hb_index = -1
        self._states.append(state)
        prev = self._min_ttc[-1] if self._min_ttc and len(self._states) > 1 else math.inf
        self._min_ttc.append(min(prev, ego_ttc_s(state)))
        if self.recorder is not None:
            self.recorder.append(state)
        hit = state.ids[state.active & state.collided]
        self._collided_ids.update(int(i) for i in hit)
        if len(self._states) > self.max_history + self.max_history // 8:
            drop = len(self._states) - self.max_history
            del self._states[:drop]
            del self._min_ttc[:drop]
            self._base += drop
        self.cursor = self.head

    @property
    def head(self) -> int:
        return self._base + len(self._states) - 1

    @property
    def counters(self) -> Counters:
        """Event counts of the simulation up to the newest state stepped here."""
        return self._counters

    def tracks(self) -> Tracks | None:
        """What was simulated since the last restart (when recording), as sim.world.run
        records it."""
        if self.recorder is None:
            return None
        spec = self.world.spec
        meta = {"source": "drivecast", "scenario": spec.name, "seed": spec.seed,
                "dt": spec.dt_s * self.recorder.every}
        return self.recorder.tracks(self.road, meta, 0 if spec.ego is not None else None)

    @property
    def first(self) -> int:
        return self._base

    @property
    def state(self) -> TrafficState:
        return self._states[self.cursor - self._base]

    @property
    def t_s(self) -> float:
        return float(self.state.t_s)

    @property
    def at_end(self) -> bool:
        return self.cursor == self.head and self.state.t_s >= self.duration_s - 1e-9

    def step_forward(self) -> bool:
        if self.cursor < self.head:
            self.cursor += 1
            return True
        if self.at_end:
            return False
        new, self._counters = step(self.state, self.world, self._rng, self._counters,
                                   self.hook)
        self.observe(new)
        return True

    def step_back(self) -> bool:
        if self.cursor > self.first:
            self.cursor -= 1
            return True
        return False

    def seek_index(self, index: int) -> None:
        self.cursor = int(np.clip(index, self.first, self.head))

    @property
    def timeline(self) -> R.Timeline | None:
        return None

    # drawing data
    def frame(self) -> Frame:
        st = self.state
        rows = np.flatnonzero(st.active)
        vehicles = R.Vehicles.from_state(st, rows)
        # trails: a point every TRAIL_STEP_S over the last TRAIL_S, from the kept states
        stride = max(1, int(round(TRAIL_STEP_S / self.dt_s)))
        n_trail = int(round(TRAIL_S / self.dt_s))
        idx = np.arange(self.cursor, max(self.first, self.cursor - n_trail) - 1, -stride)[::-1]
        trails = np.full((len(rows), len(idx), 2), np.nan)
        ids_now = st.ids[rows]
        top = int(rows.max()) + 1 if len(rows) else 0
        for j, a in enumerate(idx.tolist()):
            p = self._states[a - self._base]
            if p.capacity >= top:
                same = p.ids[rows] == ids_now
            else:
                ok = rows < p.capacity
                same = np.zeros(len(rows), bool)
                same[ok] = p.ids[rows[ok]] == ids_now[ok]
            if p.capacity >= top:
                trails[:, j, 0] = np.where(same, p.x[rows], np.nan)
                trails[:, j, 1] = np.where(same, p.y[rows], np.nan)
            else:
                r = rows[same]
                trails[same, j, 0] = p.x[r]
                trails[same, j, 1] = p.y[r]
        ann = self.annotate(st) if self.annotate is not None else None
        signals = None if ann is None else ann.lane_signal
        junction = getattr(self.world, "junction", None)
        if signals is None and junction is not None and getattr(junction, "signals", False):
            signals = junction.lane_signals(float(st.t_s))
        action = ann.action if ann is not None and ann.action else describe_ego(st)
        if ann is not None and ann.threat_ids:
            vehicles = replace(vehicles, threat=np.isin(vehicles.ids, ann.threat_ids))
        collided = len(self._collided_ids)
        return Frame(t_s=float(st.t_s), index=self.cursor, vehicles=vehicles, trails=trails,
                     truth=None, collided_so_far=collided, action=action,
                     ego_min_ttc_s=(self._min_ttc[self.cursor - self._base]
                                    if self.world.spec.ego is not None else math.nan),
                     plan_xy=None if ann is None else ann.plan_xy,
                     reacts_to_id=-1 if ann is None else ann.reacts_to_id,
                     lane_signal=signals)

    def history(self, history_steps: int, n_neighbors: int, select: np.ndarray | None = None):
        """sim.forecast.History at the cursor of the frame's vehicles `select` (indices into
        frame().vehicles; default all)."""
        if self._hb is None or self._hb.history_steps != history_steps:
            self._hb = HistoryBuffer(history_steps, self.dt_s)
            self._hb_index = -1
        if self._hb_index == self.cursor - 1 and self._hb_index >= self.first:
            self._hb.push(self.state)
        elif self._hb_index != self.cursor:
            self._hb.clear()
            lo = max(self.first, self.cursor - history_steps)
            for p in self._states[lo - self._base: self.cursor - self._base + 1]:
                self._hb.push(p)
        self._hb_index = self.cursor
        rows = np.flatnonzero(self.state.active)
        return self._hb.history(self.state, rows if select is None else rows[select],
                                n_neighbors)


def ego_ttc_s(state: TrafficState) -> float:
    """The ego's time to collision with the vehicle ahead in its corridor, s (inf: none)."""
    ego = np.flatnonzero(state.active & (state.role == ROLE_EGO))
    if len(ego) == 0:
        return math.inf
    rows = np.flatnonzero(state.active)
    v = R.Vehicles.from_state(state, rows)
    i = int(np.searchsorted(rows, ego[0]))
    return float(R.ttc_ahead(v, np.array([i]))[0][i])


def describe_ego(state: TrafficState) -> str:
    """A short description of what the ego does now (when no control layer says)."""
    ego = np.flatnonzero(state.active & (state.role == ROLE_EGO))
    if len(ego) == 0:
        return ""
    e = int(ego[0])
    if state.lane_from[e] >= 0:
        side = "left" if state.lane[e] > state.lane_from[e] else "right"
        return f"lane change {side}"
    a = float(state.accel[e])
    if a < R.BRAKING_MPS2:
        return f"hard brake {a:+.1f} m/s²"
    if a < -0.5:
        return f"brake {a:+.1f} m/s²"
    if a > 0.3:
        return f"accelerate {a:+.1f} m/s²"
    return "keep lane"


class ReplaySource:
    """A track file played back: any time index can be shown, the true future is known."""

    kind = "replay"
    version = 0

    def __init__(self, tracks: Tracks, title: str = ""):
        if tracks.n_steps < 1:
            raise ValueError("the track file has no time steps")
        self.tracks = tracks
        self.title = title or str(tracks.meta.get("source", "replay"))
        self.dt_s = float(tracks.dt_s) if tracks.n_steps > 1 else 0.1
        self.road = tracks.road if tracks.road is not None else _fitted_road(tracks)
        self.cursor = 0
        present = tracks.present
        self._present = present
        coll = tracks.collided if tracks.collided is not None else np.zeros_like(present)
        hit = coll.any(axis=1)
        self._first_collided = np.where(hit, np.argmax(coll, axis=1), np.iinfo(np.int64).max)
        self.duration_s = float(tracks.t[-1] - tracks.t[0])
        self.truth_steps = 30
        self._min_ttc = None  # the ego's running least TTC per step, computed when first asked
        self.junction = junction_of(tracks)

    @property
    def first(self) -> int:
        return 0

    @property
    def head(self) -> int:
        return self.tracks.n_steps - 1

    @property
    def t_s(self) -> float:
        return float(self.tracks.t[self.cursor])

    @property
    def at_end(self) -> bool:
        return self.cursor >= self.head

    def restart(self) -> None:
        self.cursor = 0

    def step_forward(self) -> bool:
        if self.cursor < self.head:
            self.cursor += 1
            return True
        return False

    def step_back(self) -> bool:
        if self.cursor > 0:
            self.cursor -= 1
            return True
        return False

    def seek_index(self, index: int) -> None:
        self.cursor = int(np.clip(index, 0, self.head))

    def seek_time(self, t_s: float) -> None:
        self.seek_index(int(round((t_s - float(self.tracks.t[0])) / self.dt_s)))

    @property
    def timeline(self) -> R.Timeline:
        t = self.tracks.t
        return R.Timeline(float(t[0]), float(t[-1]), float(t[self.cursor]))

    def rows(self) -> np.ndarray:
        return np.flatnonzero(self._present[:, self.cursor])

    def _at(self, name: str, rows: np.ndarray, cols) -> np.ndarray:
        """Array `name` of the file at rows x cols (an index or a slice), float64."""
        return np.asarray(getattr(self.tracks, name)[rows, cols], np.float64)

    def vehicles_at(self, i: int) -> tuple[np.ndarray, R.Vehicles]:
        """The agents present at step i: their rows in the file and their Vehicles.
        Acceleration: the speed change over the last 0.3 s (NaN at the first step)."""
        tr = self.tracks
        rows = np.flatnonzero(self._present[:, i])
        x, y, vx, vy, heading = (self._at(k, rows, i) for k in ("x", "y", "vx", "vy", "heading"))
        back = min(i, max(1, int(round(0.3 / self.dt_s))))
        if back:
            v_then = np.hypot(self._at("vx", rows, i - back), self._at("vy", rows, i - back))
            accel = (np.hypot(vx, vy) - v_then) / (back * self.dt_s)
        else:
            accel = np.full(len(rows), np.nan)
        kind = (tr.kind[rows] if tr.kind is not None else np.full(len(rows), -1, np.int8))
        collided = (tr.collided[rows, i] if tr.collided is not None
                    else np.zeros(len(rows), bool))
        return rows, R.Vehicles(
            ids=tr.ids[rows], x=x, y=y, heading=heading, length=tr.length[rows].astype(float),
            width=tr.width[rows].astype(float), vx=vx, vy=vy, accel=accel, kind=kind,
            ego=rows == tr.ego, collided=collided, threat=np.zeros(len(rows), bool))

    def frame(self) -> Frame:
        tr, i = self.tracks, self.cursor
        rows, vehicles = self.vehicles_at(i)
        lo = max(0, i - int(round(TRAIL_S / self.dt_s)))
        trails = np.stack([self._at("x", rows, slice(lo, i + 1)),
                           self._at("y", rows, slice(lo, i + 1))], axis=-1)
        f = self.truth_steps
        truth = np.full((len(rows), f, 2), np.nan)
        hi = min(self.head, i + f)
        if hi > i:
            truth[:, : hi - i, 0] = self._at("x", rows, slice(i + 1, hi + 1))
            truth[:, : hi - i, 1] = self._at("y", rows, slice(i + 1, hi + 1))
        signals = None
        if self.junction is not None and self.junction.signals:
            signals = self.junction.lane_signals(float(tr.t[i]))
        return Frame(t_s=float(tr.t[i]), index=i, vehicles=vehicles, trails=trails,
                     truth=truth, collided_so_far=int((self._first_collided <= i).sum()),
                     ego_min_ttc_s=float(self.ego_min_ttc()[i]) if tr.ego >= 0 else math.nan,
                     lane_signal=signals)

    def ego_min_ttc(self) -> np.ndarray:
        """(T,) the ego's least TTC from the file's start up to each step, s (computed once,
        when first asked)."""
        if self._min_ttc is None:
            tr = self.tracks
            ttc = np.full(tr.n_steps, np.inf)
            for i in np.flatnonzero(self._present[tr.ego]).tolist():
                rows, v = self.vehicles_at(i)
                e = int(np.searchsorted(rows, tr.ego))
                ttc[i] = R.ttc_ahead(v, np.array([e]))[0][e]
            self._min_ttc = np.minimum.accumulate(ttc)
        return self._min_ttc

    def history(self, history_steps: int, n_neighbors: int, select: np.ndarray | None = None):
        rows = self.rows() if select is None else self.rows()[select]
        return history_from_tracks(self.tracks, rows, np.full(len(rows), self.cursor),
                                   history_steps, n_neighbors)


def _fitted_road(tracks: Tracks):
    """Straight lanes fitted to a recording without a road (NGSIM; sim.replay.fit_road), or
    None when the data do not look like traffic on parallel lanes (a grid is drawn then)."""
    from sim.replay import ReplayError, fit_road

    try:
        return fit_road(tracks)
    except ReplayError:
        return None


def junction_of(tracks: Tracks):
    """The junction control of a recorded run (its meta 'junction', written by the recorder
    of a road with a junction), to show its signals in a replay; None without one."""
    desc = tracks.meta.get("junction")
    if desc is None or tracks.road is None:
        return None
    from sim.intersection import junction_from_description

    try:
        return junction_from_description(tracks.road, desc)
    except (KeyError, TypeError, ValueError) as exc:
        raise TrackFileError(f"{tracks.meta.get('source', 'track file')}: meta 'junction': "
                             f"{exc}") from None


def check_predictor_step(predictor, dt_s: float, what: str) -> None:
    """ValueError when a predictor built for one step is asked to run at another."""
    p_dt = getattr(predictor, "dt_s", None)
    if p_dt is not None and abs(float(p_dt) - dt_s) > 1e-6:
        raise ValueError(f"predictor {predictor.name!r} works at steps of {p_dt:g} s but "
                         f"{what} has steps of {dt_s:g} s")


# ---- the controller ------------------------------------------------------------------------


class Viewer:
    """Input, timing and what to draw, independent of any window (so tests can drive it).

    handle(event) interprets one pygame event; advance(real_dt_s) steps the source in fixed
    steps against real time; draw(surface) renders the current frame into a surface.
    """

    def __init__(self, source, predictor=None, view: R.View | None = None,
                 horizon_s: float = 3.0, history_s: float = 2.0, speed: float = 1.0,
                 screenshot_dir: str | os.PathLike = ".", headless: bool = False):
        self.source = source
        self.predictor = predictor
        if predictor is not None:
            check_predictor_step(predictor, source.dt_s, f"'{source.title}'")
        self.horizon_steps = max(1, int(round(horizon_s / source.dt_s)))
        self.history_steps = max(0, int(round(history_s / source.dt_s)))
        if hasattr(source, "truth_steps"):
            source.truth_steps = self.horizon_steps
        self.view = view or R.View()
        self.speed = min(SPEEDS, key=lambda s: abs(s - speed))
        self.paused = False
        self.follow = True
        self.selected_id = -1
        self._auto_selected = False  # the selection is the viewer's stand-in for a missing ego
        self.quit = False
        self.headless = headless
        self.screenshot_dir = Path(screenshot_dir)
        self.want_screenshot = False
        self.fps: float | None = None
        self._acc_s = 0.0
        self._achieved = self.speed  # playback speed really achieved (the sim may lag)
        self._toast = ("", 0.0)
        self._drag: tuple | None = None
        self._seeking = False
        self._fc_key = None
        self._fc: R.Forecasts | None = None
        self._fc_ms = math.nan
        self.render_ms: list[float] = []
        self.predict_ms: list[float] = []
        self.scene_ms: list[float] = []
        self.predict_cpu_ms: list[float] = []
        self.draw_predict_ms: list[float] = []  # inference done within each draw (0: cached)
        self.draw_predict_cpu_ms: list[float] = []
        self.draw_cpu_ms: list[float] = []  # CPU time (all threads) of each draw, inference in
        self._frame: Frame | None = None
        self._frame_key = None
        if not np.any(self.frame().vehicles.ego):
            self.selected_id = self._default_selection()
            self._auto_selected = True

    # -- state of the view
    def _default_selection(self) -> int:
        """Without an ego: the vehicle present now that stays longest (replays)."""
        v = self.frame().vehicles
        if v.n == 0:
            return -1
        src = self.source
        if isinstance(src, ReplaySource):
            rows = src.rows()
            pres = src._present[rows, src.cursor:]
            stay = np.where(pres.all(axis=1), pres.shape[1], np.argmin(pres, axis=1))
            return int(v.ids[int(np.argmax(stay))])
        return int(v.ids[0])

    def frame(self) -> Frame:
        key = (id(self.source), self.source.version, self.source.cursor)
        if key != self._frame_key:
            self._frame = self.source.frame()
            self._frame_key = key
        return self._frame

    def _target_row(self, v: R.Vehicles) -> int:
        if self.selected_id >= 0:
            hit = np.flatnonzero(v.ids == self.selected_id)
            if len(hit):
                return int(hit[0])
        ego = np.flatnonzero(v.ego)
        return int(ego[0]) if len(ego) else -1

    def _apply_follow(self, fr: Frame) -> None:
        if not self.follow:
            return
        if self._auto_selected and fr.vehicles.ego.any():
            # an ego appears later in the recording (a replay ego taking over): follow it
            self.selected_id, self._auto_selected = -1, False
        row = self._target_row(fr.vehicles)
        if row < 0 and fr.vehicles.n and not fr.vehicles.ego.any():
            # the followed vehicle has left (replays without an ego): follow another
            self.selected_id = self._default_selection()
            self._auto_selected = True
            row = self._target_row(fr.vehicles)
        if row < 0:
            return
        v = fr.vehicles
        tr = fr.trails[row]
        ok = np.flatnonzero(np.isfinite(tr[:, 0]))
        d = tr[ok[-1]] - tr[ok[0]] if len(ok) >= 2 else np.zeros(2)
        norm = float(np.hypot(*d))
        if norm < 1.0:  # barely moving: look along the heading
            d = np.array([math.cos(v.heading[row]), math.sin(v.heading[row])])
            norm = 1.0
        lead_x = FOLLOW_LEAD * self.view.width_px / self.view.px_per_m
        lead_y = FOLLOW_LEAD * self.view.height_px / self.view.px_per_m
        cx = float(v.x[row] + d[0] / norm * lead_x)
        cy = float(v.y[row] + d[1] / norm * lead_y)
        self.view = replace(self.view, center_x_m=cx, center_y_m=cy)

    def toast(self, text: str, seconds: float = 2.5) -> None:
        self._toast = (text, time.monotonic() + seconds)

    # -- input
    def handle(self, e) -> None:
        t = e.type
        if t == pygame.QUIT:
            self.quit = True
        elif t == pygame.KEYDOWN:
            self._key(e)
        elif t == pygame.MOUSEWHEEL:
            about = pygame.mouse.get_pos() if pygame.display.get_init() and \
                pygame.display.get_surface() is not None else None
            self.zoom(1.15 ** e.y, about if not self.follow else None)
        elif t == pygame.MOUSEBUTTONDOWN and e.button == 1:
            if self._in_timeline(e.pos):
                self._seeking = True
                self._seek_px(e.pos[0])
            else:
                self._drag = (e.pos, self.view.center_x_m, self.view.center_y_m, False)
        elif t == pygame.MOUSEMOTION:
            if self._seeking:
                self._seek_px(e.pos[0])
            elif self._drag is not None:
                (x0, y0), cx, cy, moved = self._drag
                dx, dy = e.pos[0] - x0, e.pos[1] - y0
                if moved or abs(dx) + abs(dy) > 3:
                    self.follow = False
                    s = self.view.px_per_m
                    self.view = replace(self.view, center_x_m=cx - dx / s, center_y_m=cy + dy / s)
                    self._drag = ((x0, y0), cx, cy, True)
        elif t == pygame.MOUSEBUTTONUP and e.button == 1:
            if self._seeking:
                self._seeking = False
            elif self._drag is not None:
                if not self._drag[3]:
                    self.select_at(e.pos)
                self._drag = None
        elif t in (pygame.VIDEORESIZE, getattr(pygame, "WINDOWSIZECHANGED", -1)):
            w, h = (e.w, e.h) if t == pygame.VIDEORESIZE else (e.x, e.y)
            self.resize(w, h)

    def _key(self, e) -> None:
        k = e.key
        if k == pygame.K_ESCAPE:
            self.quit = True
        elif k == pygame.K_SPACE:
            if self.source.at_end and self.paused:
                self.toast("end of the run: R restarts" if self.source.kind == "live"
                           else "end of the file: Home goes back to the start")
            else:
                self.paused = not self.paused
        elif k == pygame.K_RIGHT:
            self.paused = True
            self.source.step_forward()
        elif k == pygame.K_LEFT:
            self.paused = True
            if not self.source.step_back():
                self.toast("no earlier state kept")
        elif k in (pygame.K_PLUS, pygame.K_EQUALS, pygame.K_KP_PLUS):
            self.set_speed(+1)
        elif k in (pygame.K_MINUS, pygame.K_KP_MINUS, pygame.K_UNDERSCORE):
            self.set_speed(-1)
        elif k == pygame.K_f:
            self.follow = not self.follow
            self.toast("following " + ("on" if self.follow else "off"), 1.2)
        elif k == pygame.K_p:
            self.view = replace(self.view, forecasts=not self.view.forecasts)
            if self.predictor is None and self.view.forecasts:
                self.toast("no predictor: start with --predictor NAME (e.g. cv)")
        elif k == pygame.K_g:
            self.view = replace(self.view, truth=not self.view.truth)
            if self.view.truth and self.source.kind == "live":
                self.toast("the true future is only known in a replay")
        elif k == pygame.K_t:
            self.view = replace(self.view, trails=not self.view.trails)
        elif k == pygame.K_i:
            self.view = replace(self.view, ids=not self.view.ids)
        elif k == pygame.K_h:
            self.view = replace(self.view, help=not self.view.help)
        elif k == pygame.K_r:
            self.source.restart()
            self._acc_s = 0.0
            self.paused = False
            self.toast("restarted", 1.2)
        elif k == pygame.K_s:
            self.want_screenshot = True
        elif k == pygame.K_TAB:
            self.select_next()
        elif k == pygame.K_HOME:
            self.source.seek_index(self.source.first)
        elif k == pygame.K_END:
            self.source.seek_index(self.source.head)

    def set_speed(self, direction: int) -> None:
        i = SPEEDS.index(self.speed) + direction
        self.speed = SPEEDS[int(np.clip(i, 0, len(SPEEDS) - 1))]
        self._achieved = self.speed
        self.toast(f"speed x{self.speed:g}", 1.0)

    def zoom(self, factor: float, about_px=None) -> None:
        self.view = self.view.zoomed(factor, about_px)

    def resize(self, w: int, h: int) -> None:
        self.view = replace(self.view, width_px=max(16, int(w)), height_px=max(16, int(h)))

    def _in_timeline(self, pos) -> bool:
        if self.source.timeline is None:
            return False
        x, y, w, h = R.timeline_rect(self.view)
        return x - 8 <= pos[0] <= x + w + 8 and y - 10 <= pos[1] <= y + h + 10

    def _seek_px(self, px: float) -> None:
        x, _, w, _ = R.timeline_rect(self.view)
        frac = float(np.clip((px - x) / w, 0.0, 1.0))
        self.source.seek_index(int(round(frac * self.source.head)))

    def select_at(self, pos) -> None:
        """Select the vehicle under a screen point (or clear the selection)."""
        v = self.frame().vehicles
        self._auto_selected = False
        if v.n == 0:
            self.selected_id = -1
            return
        wx, wy = self.view.to_world(*pos)
        c, s = np.cos(v.heading), np.sin(v.heading)
        dx, dy = wx - v.x, wy - v.y
        along, across = np.abs(dx * c + dy * s), np.abs(-dx * s + dy * c)
        pad = 4.0 / self.view.px_per_m
        inside = (along <= 0.5 * v.length + pad) & (across <= 0.5 * v.width + pad)
        if inside.any():
            d = np.where(inside, np.hypot(dx, dy), np.inf)
            self.selected_id = int(v.ids[int(np.argmin(d))])
            self.toast(f"selected vehicle {self.selected_id} (F follows it)", 1.5)
        else:
            self.selected_id = -1

    def select_next(self) -> None:
        v = self.frame().vehicles
        if v.n == 0:
            return
        order = np.sort(v.ids)
        later = order[order > self.selected_id]
        self.selected_id = int(later[0] if len(later) else order[0])
        self._auto_selected = False
        self.follow = True

    # -- time
    def advance(self, real_dt_s: float, budget_s: float | None = None) -> int:
        """Step the source by as many fixed steps as real time (times the speed) allows: at
        most MAX_CATCH_UP_S of real time's worth per call and, with budget_s, no more
        stepping than that many seconds of wall time (the window stays responsive); a
        backlog beyond either is dropped, the step never changes. Returns steps taken."""
        if self.paused:
            self._acc_s = 0.0
            return 0
        dt = self.source.dt_s
        self._acc_s += max(0.0, real_dt_s) * self.speed
        n = int(self._acc_s / dt + 1e-9)
        cap = max(1, int(MAX_CATCH_UP_S * self.speed / dt) + 1)
        dropped = n > cap
        if dropped:
            n = cap
            self._acc_s = 0.0
        else:
            self._acc_s -= n * dt
        taken = 0
        t0 = time.perf_counter()
        for _ in range(n):
            if not self.source.step_forward():
                self.paused = True
                break
            taken += 1
            if budget_s is not None and time.perf_counter() - t0 > budget_s and taken < n:
                self._acc_s = 0.0
                dropped = True
                break
        # the speed really achieved, smoothed over ~10 frames; shown when the simulation
        # cannot keep up
        if real_dt_s > 0:
            rate = taken * dt / real_dt_s if dropped else self.speed
            self._achieved = 0.9 * self._achieved + 0.1 * min(rate, self.speed)
        return taken

    # -- drawing
    def _forecast_rows(self, v: R.Vehicles) -> tuple[np.ndarray, tuple]:
        """Vehicles to forecast: those within the view widened by a tenth of its size on
        every side, and a key that changes when the view has moved a twentieth of its size
        or zoomed (so panning a paused view brings forecasts for what comes into view)."""
        view = self.view
        w_m, h_m = view.width_px / view.px_per_m, view.height_px / view.px_per_m
        wide = replace(view, width_px=int(1.2 * view.width_px),
                       height_px=int(1.2 * view.height_px))
        key = (round(view.center_x_m / (0.05 * w_m)), round(view.center_y_m / (0.05 * h_m)),
               round(8 * math.log(view.px_per_m)))
        return R.visible_vehicles(v, wide), key

    def forecasts(self) -> R.Forecasts | None:
        if self.predictor is None or not self.view.forecasts:
            return None
        select, view_key = self._forecast_rows(self.frame().vehicles)
        key = (id(self.source), self.source.version, self.source.cursor, view_key)
        if key != self._fc_key:
            t0, c0 = time.perf_counter(), time.process_time()
            hist = self.source.history(self.history_steps,
                                       int(getattr(self.predictor, "n_neighbors", 0)), select)
            pred = self.predictor.predict(hist, self.horizon_steps)
            self._fc_ms = 1e3 * (time.perf_counter() - t0)
            self.predict_ms.append(self._fc_ms)
            self.predict_cpu_ms.append(1e3 * (time.process_time() - c0))
            self._fc = R.Forecasts(rows=select, prediction=pred, dt_s=self.source.dt_s)
            self._fc_key = key
        return self._fc

    def scene(self) -> R.Scene:
        fr = self.frame()
        t_follow = time.perf_counter()
        self._apply_follow(fr)
        follow_ms = 1e3 * (time.perf_counter() - t_follow)
        fc = self.forecasts()
        t0 = time.perf_counter() - follow_ms / 1e3
        v = fr.vehicles
        target = self._target_row(v)
        followers = R.visible_vehicles(v, self.view)
        if target >= 0:
            followers = np.union1d(followers, [target])
        ttc, _ = R.ttc_ahead(v, followers)
        sel = -1
        if self.selected_id >= 0:
            hit = np.flatnonzero(v.ids == self.selected_id)
            sel = int(hit[0]) if len(hit) else -1
        reacts = -1
        if fr.reacts_to_id >= 0:
            hit = np.flatnonzero(v.ids == fr.reacts_to_id)
            reacts = int(hit[0]) if len(hit) else -1
        toast, until = self._toast
        if toast and time.monotonic() > until:
            toast = ""
            self._toast = ("", 0.0)
        ego_rows = np.flatnonzero(v.ego)
        status = ""
        if self.source.at_end:
            status = "end of run  (R restart)" if self.source.kind == "live" else "end of file"
        elif not self.paused and not self.headless and self._achieved < 0.9 * self.speed:
            status = f"the simulation runs at x{self._achieved:.1f}, slower than x{self.speed:g}"
        hud = R.Hud(
            t_s=fr.t_s, title=self.source.title,
            ego_speed_mps=float(v.speed[target]) if target >= 0 else math.nan,
            ego_accel_mps2=float(v.accel[target]) if target >= 0 else math.nan,
            target="ego" if target >= 0 and v.ego[target] else (
                f"#{int(v.ids[target])}" if target >= 0 else ""),
            action=fr.action if len(ego_rows) else "",
            ttc_s=float(ttc[target]) if target >= 0 else math.inf,
            min_ttc_s=fr.ego_min_ttc_s,
            collisions=fr.collided_so_far,
            predictor=self.predictor.name if self.predictor is not None else "",
            predictor_ms=math.nan if self.headless else self._fc_ms,  # frames: same bytes
            fps=None if self.headless else self.fps,
            sim_speed=self.speed, paused=self.paused and not self.headless, status=status,
            vehicles=v.n)
        scene = R.Scene(
            vehicles=v, road=self.source.road, trails=fr.trails, forecasts=fc,
            truth=fr.truth, truth_dt_s=self.source.dt_s, plan_xy=fr.plan_xy,
            reacts_to=reacts, ttc_s=ttc, selected=sel, lane_signal=fr.lane_signal, hud=hud,
            timeline=self.source.timeline, toast="" if self.headless else toast)
        self.scene_ms.append(1e3 * (time.perf_counter() - t0))
        return scene

    def draw(self, surface: pygame.Surface | None = None) -> pygame.Surface:
        """Build the scene (forecasts included) and render it; times every part."""
        c0 = time.process_time()
        n_pred = len(self.predict_ms)
        scene = self.scene()
        t0 = time.perf_counter()
        out = R.render(scene, self.view, surface)
        self.render_ms.append(1e3 * (time.perf_counter() - t0))
        new = len(self.predict_ms) > n_pred
        self.draw_predict_ms.append(self.predict_ms[-1] if new else 0.0)
        self.draw_predict_cpu_ms.append(self.predict_cpu_ms[-1] if new else 0.0)
        self.draw_cpu_ms.append(1e3 * (time.process_time() - c0))
        return out

    def screenshot(self, surface: pygame.Surface) -> Path:
        """Save surface as a PNG in screenshot_dir; returns the path."""
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.source.title)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.screenshot_dir / f"drivecast_{name}_t{self.source.t_s:07.1f}s_{stamp}.png"
        n = 1
        while path.exists():
            path = path.with_name(f"{path.stem.rsplit('~', 1)[0]}~{n}.png")
            n += 1
        R.save_png(surface, path)
        self.want_screenshot = False
        self.toast(f"screenshot saved: {path}")
        return path

    def profile(self) -> dict:
        """Per-frame timings so far, ms: scene building, drawing, forecast inference."""
        def stats(xs):
            return summary_ms(xs, "frames")

        frame = [s + r for s, r in zip(self.scene_ms, self.render_ms)]
        both = [f + p for f, p in zip(frame, self.draw_predict_ms)]
        cpu = [c - p for c, p in zip(self.draw_cpu_ms, self.draw_predict_cpu_ms)]
        return {"frame_ms": stats(frame), "render_ms": stats(self.render_ms),
                "scene_ms": stats(self.scene_ms), "predict_ms": stats(self.predict_ms),
                "frame_with_predict_ms": stats(both) if self.predict_ms else None,
                "frame_cpu_ms": stats(cpu), "predict_cpu_ms": stats(self.predict_cpu_ms),
                "frame_with_predict_cpu_ms": stats(self.draw_cpu_ms)}


# ---- the window ----------------------------------------------------------------------------


class NoDisplayError(RuntimeError):
    """No screen to open a window on."""


HEADLESS_DRIVERS = ("dummy", "offscreen")  # SDL video drivers that show nothing


def check_display() -> None:
    """Raise NoDisplayError (one line) when no window can be opened here. SDL's own
    complaints on stderr while it tries its drivers are captured into that line."""
    hint = "; use --headless --frames-dir DIR to write frames instead"
    driver = os.environ.get("SDL_VIDEODRIVER", "")
    if driver in HEADLESS_DRIVERS:
        raise NoDisplayError(f"no display (SDL_VIDEODRIVER={driver}){hint}")
    if os.name == "posix" and os.uname().sysname != "Darwin" and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or driver):
        raise NoDisplayError(f"no display (DISPLAY and WAYLAND_DISPLAY are unset){hint}")
    with _captured_stderr() as captured:
        try:
            pygame.display.init()
            got = pygame.display.get_driver()
            error = None
        except pygame.error as exc:
            got, error = "", str(exc)
    sdl = " ".join(line.removeprefix("error: ") for line in captured.lines)
    if error is not None or got in HEADLESS_DRIVERS:
        pygame.display.quit()
        why = error or f"SDL fell back to its {got!r} driver"
        raise NoDisplayError(f"cannot open a window on display "
                             f"{os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')!r}"
                             f" ({why}{'; ' + sdl if sdl else ''}){hint}")
    if sdl:
        print(sdl, file=sys.stderr)


class _captured_stderr:
    """Redirect file descriptor 2 (where SDL writes) to a temporary file for the block;
    afterwards `lines` holds what was written."""

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self.lines: list[str] = []
        self._file = tempfile.TemporaryFile(mode="w+b")
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        text = self._file.read().decode(errors="replace")
        self._file.close()
        self.lines = [line.strip() for line in text.splitlines() if line.strip()]


def run_window(viewer: Viewer, fps_cap: int = 60, max_frames: int | None = None) -> None:
    """The interactive loop: events, fixed-step time, drawing, until Esc or the window closes.
    While paused and nothing happens, the last frame stays on screen (no redrawing, 20 checks
    a second). Call check_display() first."""
    pygame.display.init()
    pygame.font.init()
    flags = pygame.RESIZABLE
    pygame.display.set_mode((viewer.view.width_px, viewer.view.height_px), flags)
    pygame.display.set_caption(f"drivecast - {viewer.source.title}")
    pygame.key.set_repeat(300, 40)
    clock = pygame.time.Clock()
    last = time.perf_counter()
    frame_times: list[float] = []
    frames = 0
    drawn_key = None
    try:
        while not viewer.quit:
            events = pygame.event.get()
            for e in events:
                viewer.handle(e)
            now = time.perf_counter()
            viewer.advance(now - last, budget_s=0.5 / fps_cap)
            frame_times.append(now - last)
            if len(frame_times) > 30:
                del frame_times[0]
            viewer.fps = len(frame_times) / max(sum(frame_times), 1e-9)
            last = now
            screen = pygame.display.get_surface()
            if screen.get_size() != (viewer.view.width_px, viewer.view.height_px):
                viewer.resize(*screen.get_size())
            key = (viewer.source.version, viewer.source.cursor, viewer.view, viewer.paused,
                   viewer.speed, viewer.selected_id, viewer._toast)
            idle = viewer.paused and not events and key == drawn_key and not viewer._toast[0]
            if not idle or viewer.want_screenshot:
                viewer.draw(screen)
                drawn_key = key
                if viewer.want_screenshot:
                    viewer.screenshot(screen)
                pygame.display.flip()
            clock.tick(fps_cap if not idle else 20)
            frames += 1
            if max_frames is not None and frames >= max_frames:
                break
    finally:
        pygame.display.quit()


# ---- headless frames -----------------------------------------------------------------------


class GifWriter:
    """Collects frames (scaled to width_px, fixed palette) and writes one animated GIF.
    Needs pillow (the optional extra `gif`): ImportError at construction otherwise."""

    def __init__(self, path: str | os.PathLike, frame_s: float, width_px: int = 640):
        from PIL import Image  # noqa: F401  (fail early when pillow is missing)

        self.path = Path(path)
        self.frame_ms = max(20, int(round(frame_s * 1000 / 10)) * 10)
        self.width_px = width_px
        self._frames: list = []
        self._palette = None

    def add(self, surface: pygame.Surface) -> None:
        from PIL import Image

        w, h = surface.get_size()
        if w > self.width_px:
            h = max(1, int(round(h * self.width_px / w)))
            surface = pygame.transform.smoothscale(surface, (self.width_px, h))
            w = self.width_px
        img = Image.frombytes("RGB", (w, h), pygame.image.tobytes(surface, "RGB"))
        if self._palette is None:
            self._palette = _gif_palette()
        self._frames.append(img.quantize(palette=self._palette, dither=Image.Dither.NONE))

    def close(self) -> None:
        if not self._frames:
            return
        from sim.files import atomic_path

        with atomic_path(self.path, suffix=".gif") as tmp:
            self._frames[0].save(tmp, save_all=True, append_images=self._frames[1:],
                                 duration=self.frame_ms, loop=0, optimize=False)
        self._frames = []


def _gif_palette():
    """A fixed 256-colour palette: the theme's colours, then a 6x6x6 colour cube."""
    from PIL import Image

    theme = [R.BG, R.GRID, R.ASPHALT, R.MARKING, R.EDGE_LINE, R.TEXT, R.TEXT_DIM, R.ACCENT,
             R.TRUTH, R.WARN, R.DANGER, R.BRAKE_LIGHT, R.SELECT, (14, 16, 20), (60, 66, 76)]
    theme += [tuple(c) for c in R.PAINT_RGB.tolist()]
    theme += [R._mix(R.FORECAST, R.ASPHALT, a) for a in np.linspace(0.2, 1.0, 9)]
    theme += [R._mix(c, R.ASPHALT, 0.45) for c in R.PAINT_RGB.tolist()]
    levels = [0, 51, 102, 153, 204, 255]
    cube = [(r, g, b) for r in levels for g in levels for b in levels]
    colours = (theme + cube)[:256]
    colours += [(0, 0, 0)] * (256 - len(colours))
    pal = Image.new("P", (1, 1))
    pal.putpalette([c for rgb in colours for c in rgb])
    return pal


def write_frames(viewer: Viewer, n_steps: int, frames_dir: str | os.PathLike | None,
                 every: int = 1, gif: GifWriter | None = None,
                 progress: Callable[[int], None] | None = None) -> int:
    """Headless: draw the source's current frame and every `every`-th of the next n_steps
    steps to frames_dir/frame_NNNNNN.png (NNNNNN = the source's step index) and/or a GIF.
    Returns the number of frames drawn."""
    surface = pygame.Surface((viewer.view.width_px, viewer.view.height_px))
    out = Path(frames_dir) if frames_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    drawn = 0
    for i in range(n_steps + 1):
        if i % every == 0:
            viewer.draw(surface)
            if out is not None:
                R.save_png(surface, out / f"frame_{viewer.source.cursor:06d}.png")
            if gif is not None:
                gif.add(surface)
            drawn += 1
        if i == n_steps or not viewer.source.step_forward():
            break
        if progress:
            progress(1)
    return drawn


class FrameHook:
    """Draws the states of a run driven elsewhere (sim.world.run): pass `hook` as run's
    control hook, and call finish(result.state) at the end. It only observes; a control hook
    of its own (`inner`, e.g. the ego's avoidance) runs first and its Override is returned,
    so what it decided for a state can be drawn with that state."""

    def __init__(self, viewer: Viewer, frames_dir: str | os.PathLike | None, every: int = 1,
                 gif: GifWriter | None = None, inner=None):
        self.viewer = viewer
        self.inner = inner
        self.out = Path(frames_dir) if frames_dir is not None else None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        self.every = every
        self.gif = gif
        self.surface = pygame.Surface((viewer.view.width_px, viewer.view.height_px))
        self.drawn = 0

    def _take(self, state: TrafficState) -> None:
        src = self.viewer.source
        if state is not src.state:
            src.observe(state)
        if state.step % self.every == 0:
            self.viewer.draw(self.surface)
            if self.out is not None:
                R.save_png(self.surface, self.out / f"frame_{state.step:06d}.png")
            if self.gif is not None:
                self.gif.add(self.surface)
            self.drawn += 1

    def hook(self, state, world, lane_index, accel):
        override = None if self.inner is None else self.inner(state, world, lane_index, accel)
        self._take(state)
        return override

    def finish(self, state: TrafficState) -> None:
        self._take(state)
        if self.gif is not None:
            self.gif.close()



# ---- benchmark -----------------------------------------------------------------------------


def benchmark_render(vehicles: int = 100, frames: int = 100, predictor=None,
                     width_px: int = 1280, height_px: int = 720, seed: int = 0,
                     warmup_s: float = 10.0) -> dict:
    """Headless frame time with at least `vehicles` vehicles in view.

    A five-lane straight highway at 2,000 veh/h/lane with an ego; after warmup_s the view
    follows the ego, zoomed out just enough to hold the `vehicles` vehicles nearest to it.
    Every frame the simulation steps once, forecasts are recomputed for every vehicle on
    the road (when a predictor is given) and the frame is drawn: trails, every forecast mode
    and ellipse, TTC tags, HUD. Reports ms per frame: scene + drawing, inference, and both.
    """
    from sim.spec import EgoSpec, RoadSpec, TrafficSpec, WorldSpec
    from sim.world import make_world

    spec = WorldSpec(road=RoadSpec("straight_highway", {"n_lanes": 5, "length_m": 4000.0}),
                     traffic=TrafficSpec(flow_vph_per_lane=2000.0),
                     ego=EgoSpec(lane=2, station_m=1500.0, speed_mps=27.0),
                     duration_s=warmup_s + frames * 0.1 + 1.0, seed=seed, name="benchmark")
    world = make_world(spec)
    source = LiveSource(world, max_history=64)
    for _ in range(int(round(warmup_s / source.dt_s))):
        source.step_forward()
    st = source.state
    rows = np.flatnonzero(st.active)
    ego = int(np.flatnonzero(st.active & (st.role == ROLE_EGO))[0])
    d = np.abs(st.x[rows] - st.x[ego])
    if len(rows) < vehicles:
        raise ValueError(f"the benchmark road holds only {len(rows)} vehicles")
    reach_m = float(np.sort(d)[vehicles - 1]) + 6.0
    px_per_m = float(np.clip(width_px / (2.0 * reach_m), R.View.MIN_PX_PER_M, 9.0))
    view = R.View(width_px=width_px, height_px=height_px, px_per_m=px_per_m)
    viewer = Viewer(source, predictor=predictor, view=view, headless=True)
    viewer.follow = True
    global FOLLOW_LEAD
    saved, FOLLOW_LEAD = FOLLOW_LEAD, 0.0  # centred on the ego: the nearest vehicles fit
    surface = pygame.Surface((width_px, height_px))
    in_view = []
    try:
        for _ in range(frames):
            source.step_forward()
            viewer.draw(surface)
            in_view.append(len(R.visible_vehicles(viewer.frame().vehicles, viewer.view)))
    finally:
        FOLLOW_LEAD = saved
    prof = viewer.profile()
    fc = viewer._fc
    return {
        "width_px": width_px, "height_px": height_px, "frames": frames,
        "px_per_m": round(px_per_m, 3), "vehicles_in_view_min": int(min(in_view)),
        "vehicles_in_view_mean": round(float(np.mean(in_view)), 1),
        "vehicles_on_road": int(source.state.n_active),
        "predictor": predictor.name if predictor is not None else None,
        "modes": int(np.asarray(fc.prediction.prob).shape[1]) if fc is not None else None,
        "uncertainty": bool(fc is not None and getattr(fc.prediction, "sigma_m", None)
                            is not None),
        "frame_ms": prof["frame_ms"], "predict_ms": prof["predict_ms"],
        "frame_with_predict_ms": prof["frame_with_predict_ms"] or prof["frame_ms"],
        "frame_cpu_ms": prof["frame_cpu_ms"], "predict_cpu_ms": prof["predict_cpu_ms"],
        "frame_with_predict_cpu_ms": prof["frame_with_predict_cpu_ms"],
    }
