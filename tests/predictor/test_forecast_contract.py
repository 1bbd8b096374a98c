"""sim/forecast.py: History / Prediction validation, the ring buffer, track sampling."""

import subprocess
import sys

import numpy as np
import pytest

from sim.forecast import (
    History,
    HistoryBuffer,
    Prediction,
    Predictor,
    future_from_tracks,
    history_from_tracks,
    nearest_others,
    sample_index,
)
from sim.tracks import Tracks


def straight_tracks(n_agents=3, n_steps=80, dt=0.1, speed=(20.0, 25.0, 30.0), gap_m=30.0):
    """Agents on parallel straight lines at constant speed; agent 2 absent for a while."""
    t = np.arange(n_steps) * dt
    x = np.zeros((n_agents, n_steps), np.float32)
    y = np.zeros_like(x)
    for a in range(n_agents):
        x[a] = a * gap_m + speed[a] * t
        y[a] = 3.7 * a
    vx = np.array(speed[:n_agents], np.float32)[:, None] * np.ones_like(x)
    vy = np.zeros_like(x)
    h = np.zeros_like(x)
    for arr in (x, y, vx, vy, h):
        arr[2, 30:35] = np.nan
    return Tracks(t=t, x=x, y=y, vx=vx, vy=vy, heading=h,
                  length=np.full(n_agents, 4.5, np.float32),
                  width=np.full(n_agents, 1.8, np.float32),
                  ids=np.arange(10, 10 + n_agents, dtype=np.int64),
                  meta={"source": "test", "dt": dt})


def test_sample_index_follows_the_protocol():
    tr = straight_tracks()
    rows, cols = sample_index(tr.present, history_steps=20, horizon_steps=30, stride_steps=10)
    # times on the global grid, whole window inside the file
    assert set(cols.tolist()) == {20, 30, 40}
    # agent 2 is absent at 30..34: windows [i-20, i+30] touching it are dropped
    got = set(zip(rows.tolist(), cols.tolist()))
    assert got == {(0, 20), (1, 20), (0, 30), (1, 30), (0, 40), (1, 40)}
    # brute force agrees
    for a in range(3):
        for i in range(0, 80, 10):
            ok = i >= 20 and i + 30 < 80 and tr.present[a, i - 20:i + 31].all()
            assert ok == ((a, i) in got)


def test_history_and_future_gather_the_right_steps():
    tr = straight_tracks()
    rows, cols = np.array([0, 1]), np.array([25, 60])
    h = history_from_tracks(tr, rows, cols, history_steps=5, n_neighbors=2)
    assert h.xy.shape == (2, 6, 2) and h.history_steps == 5 and h.n_neighbors == 2
    np.testing.assert_allclose(h.xy[0, :, 0], tr.x[0, 20:26], rtol=1e-6)
    np.testing.assert_allclose(h.t_s, tr.t[cols])
    assert h.ids.tolist() == [10, 11]
    # neighbours of agent 0 at step 25: agent 1 (30 m + ...) nearer than agent 2
    assert h.nb_ids[0].tolist() == [11, 12]
    future = future_from_tracks(tr, rows, cols, 4)
    np.testing.assert_allclose(future[1, :, 0], tr.x[1, 61:65], rtol=1e-6)
    # the neighbour window (steps 30..36) masks the gap of agent 2 (absent at 30..34)
    h2 = history_from_tracks(tr, np.array([1]), np.array([36]), history_steps=6, n_neighbors=2)
    j = h2.nb_ids[0].tolist().index(12)
    assert h2.nb_valid[0, j].tolist() == [False] * 5 + [True, True]
    assert np.isnan(h2.nb_xy[0, j, 0]).all()


def test_history_refuses_absent_samples_and_bad_shapes():
    tr = straight_tracks()
    with pytest.raises(ValueError, match="absent"):
        history_from_tracks(tr, np.array([2]), np.array([31]), 5)
    h = history_from_tracks(tr, np.array([0]), np.array([10]), 3)
    with pytest.raises(ValueError, match="History.xy"):
        History(**{**vars(h), "xy": np.zeros((1, 3, 2))})
    bad = vars(h) | {"valid": np.zeros_like(h.valid)}
    with pytest.raises(ValueError, match="present now"):
        History(**bad)


def test_prediction_validation():
    xy = np.zeros((2, 3, 5, 2))
    Prediction(xy, np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="sum to 1"):
        Prediction(xy, np.full((2, 3), 0.3))
    with pytest.raises(ValueError, match="prob must have shape"):
        Prediction(xy, np.ones((2, 1)))
    with pytest.raises(ValueError, match="non-finite"):
        Prediction(xy + np.nan, np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="non-finite"):
        Prediction(np.where(np.arange(60).reshape(xy.shape) == 7, np.inf, xy),
                   np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="non-negative"):
        Prediction(xy, np.array([[1.5, -0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    with pytest.raises(ValueError, match="sigma_m"):
        Prediction(xy, np.full((2, 3), 1 / 3), sigma_m=-np.ones_like(xy))
    with pytest.raises(ValueError, match="sigma_m"):
        Prediction(xy, np.full((2, 3), 1 / 3), sigma_m=np.where(xy == 0, np.nan, 1.0))
    Prediction(xy[:0], np.empty((0, 3)), sigma_m=xy[:0])  # no samples: nothing to check
    p = Prediction(np.arange(2 * 3 * 5 * 2, dtype=float).reshape(2, 3, 5, 2),
                   np.array([[0.2, 0.5, 0.3], [0.6, 0.2, 0.2]]))
    assert np.array_equal(p.top()[0], p.xy[0, 1]) and np.array_equal(p.top()[1], p.xy[1, 0])


def test_nearest_others_excludes_self_and_pads():
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    out = nearest_others(pts, pts, np.arange(3), 3)
    assert out.tolist() == [[1, 2, -1], [0, 2, -1], [1, 0, -1]]


def test_nearest_others_with_many_candidates_equals_the_brute_force():
    from sim.forecast import _nearest_brute

    rng = np.random.default_rng(3)
    cand = rng.uniform(0, 500, (700, 2)) * np.array([1.0, 0.05])  # a long, narrow road
    targets = rng.choice(700, 150, replace=False)
    self_index = targets.copy()
    self_index[::5] = -1  # some targets are not candidates themselves
    xy = cand[targets] + np.where(self_index[:, None] < 0, 0.3, 0.0)
    for m in (1, 8, 16):
        fast = nearest_others(xy, cand, self_index, m)
        assert fast.shape == (150, m)
        assert np.array_equal(fast, _nearest_brute(xy, cand, self_index, m))
        assert not np.any(fast == self_index[:, None])


def test_history_buffer_tracks_ids_through_row_reuse(state_factory):
    from dataclasses import replace

    from sim.road import straight_highway

    road = straight_highway(2, 500.0)
    st = state_factory(road, [dict(lane=0, station_m=10.0, speed_mps=10.0),
                              dict(lane=1, station_m=20.0, speed_mps=10.0)])
    buf = HistoryBuffer(history_steps=3, dt_s=0.1)
    for k in range(5):
        # from step 3 on, row 1 is reused by a new vehicle with id 7
        ids = np.where((np.arange(st.capacity) == 1) & (k >= 3), 7, st.ids)
        cur = replace(st, t_s=0.1 * k, x=st.x + 1.0 * k, ids=ids)
        buf.push(cur)
    h = buf.history(cur, n_neighbors=1)
    assert h.ids.tolist() == [0, 7]
    assert h.valid[0].all() and h.valid[1].tolist() == [False, False, True, True]
    np.testing.assert_allclose(h.xy[0, :, 0], st.x[0] + np.arange(1, 5))
    assert h.nb_ids.tolist() == [[7], [0]]
    assert h.nb_valid[0, 0].tolist() == [False, False, True, True]
    # a push that is not one step later clears the past
    buf.push(replace(cur, t_s=5.0))
    h = buf.history(replace(cur, t_s=5.0))
    assert h.valid.sum() == 2
    with pytest.raises(ValueError, match="push"):
        buf.history(replace(cur, t_s=9.0))


def test_baselines_satisfy_the_protocol():
    from predictor.registry import make_predictor, predictor_names

    for name in predictor_names():
        p = make_predictor(name)
        assert isinstance(p, Predictor) and p.name == name


def test_import_sim_forecast_stays_light():
    code = ("import sys, sim.forecast; "
            "bad = [m for m in ('torch', 'pygame', 'scipy', 'predictor', 'scenarios') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_history_buffer_matches_the_recorded_track_file():
    """The live ring buffer and a track file of the same run give the same History."""
    import main as cli_main
    from sim.world import Recorder, init_state, make_world, step

    world = make_world(cli_main.default_spec("on_ramp", seed=3, duration_s=8.0))
    rng = np.random.default_rng(3)
    st = init_state(world, rng)
    buf = HistoryBuffer(history_steps=20, dt_s=world.dt_s)
    rec = Recorder()
    buf.push(st)
    rec.append(st)
    for _ in range(60):
        st, _ = step(st, world, rng)
        buf.push(st)
        rec.append(st)
    live = buf.history(st, n_neighbors=4)
    tr = rec.tracks(world.road, {"source": "test"})
    row_of = {int(i): r for r, i in enumerate(tr.ids)}
    rows = np.array([row_of[int(i)] for i in live.ids])
    recorded = history_from_tracks(tr, rows, np.full(len(rows), tr.n_steps - 1), 20,
                                   n_neighbors=4)
    assert np.array_equal(live.valid, recorded.valid)
    np.testing.assert_allclose(live.xy[live.valid], recorded.xy[recorded.valid], atol=1e-3)
    np.testing.assert_allclose(live.vxy[live.valid], recorded.vxy[recorded.valid], atol=1e-4)
    assert np.array_equal(live.nb_ids, recorded.nb_ids)
    assert np.array_equal(live.nb_valid, recorded.nb_valid)
