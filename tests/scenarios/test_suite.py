"""The shipped suite: every scenario runs to its end, the Euro NCAP geometry is exact, events
happen as declared, a congestion wave emerges, same seed -> same file; and the command line."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scenarios import suite
from scenarios.loader import ScenarioError
from sim.tracks import read_tracks, write_tracks
from sim.world import init_state, make_world, run

REPO = Path(__file__).resolve().parents[2]
KPH = 3.6
CCR = ("stationary_target", "slower_target", "lead_brake")


def test_the_suite_lists_every_shipped_scenario_and_groups_the_ccr_families():
    names = suite.shipped()
    for name in ("highway_cruise", "dense_traffic", "stop_and_go", "on_ramp_merge", "cut_in",
                 *CCR):
        assert name in names
    assert suite.groups()["ncap"] == CCR
    assert {sc.name: sc.n_cases for sc in suite.resolve("ncap")} == {
        "stationary_target": 15 * 5, "slower_target": 11 * 5, "lead_brake": 4}
    assert all(suite.load_scenario(n).description for n in names)
    episodes = suite.episodes("ncap", repeats=2)
    assert len(episodes) == 268 and len({(e.name, e.case, e.seed) for e in episodes}) == 268
    assert [s.seed for s in suite.episodes("lead_brake")] == [s.seed for s in
                                                              suite.episodes("lead_brake")]
    with pytest.raises(ScenarioError, match="unknown suite 'nacp'"):
        suite.resolve("nacp")


@pytest.mark.parametrize("name", suite.shipped())
def test_every_shipped_scenario_runs_to_its_end(name, tmp_path):
    sc = suite.load_scenario(name)
    for case in sorted({0, sc.n_cases - 1}):
        spec = sc.spec(case)
        duration_s = min(spec.duration_s, 20.0)  # long scenarios: their first 20 s
        res = run(make_world(spec), duration_s=duration_s, record_every=5)
        assert res.steps == round(duration_s / spec.dt_s)
        write_tracks(tmp_path / "run.npz", res.tracks)
        tr = read_tracks(tmp_path / "run.npz")
        assert tr.meta["scenario"] == name and tr.ego >= 0 and tr.present[tr.ego, 0]
        speed = np.hypot(tr.vx, tr.vy)[tr.present]
        assert speed.min() >= 0.0 and speed.max() < 50.0
        if not spec.actors:  # background traffic alone never collides
            assert res.counters.collisions == 0


def _start(spec):
    st = init_state(make_world(spec), np.random.default_rng(spec.seed))
    gap = st.station[1] - st.station[0] - 0.5 * (st.length[0] + st.length[1])
    # lateral overlap of the two footprints, as a share of the ego's width (straight road)
    top = min(st.y[0] + st.width[0] / 2, st.y[1] + st.width[1] / 2)
    bottom = max(st.y[0] - st.width[0] / 2, st.y[1] - st.width[1] / 2)
    return st, gap, (top - bottom) / st.width[0], st.y[1] - st.y[0]


@pytest.mark.parametrize("name", CCR)
def test_euro_ncap_start_geometry_of_every_case(name):
    """CCRs: ego 10..80 km/h, stopped target; CCRm: ego 30..80 km/h, target 20 km/h; both
    start at TTC 4 s. CCRb: both 50 km/h, 12 or 40 m apart. Overlaps 100, 75, 50, -75, -50 %."""
    sc = suite.load_scenario(name)
    ego_kph, overlaps = set(), set()
    for case in range(sc.n_cases):
        spec = sc.spec(case)
        params = dict(spec.case_params)
        st, gap, share, dy = _start(spec)
        v_ego, v_tgt = st.speed[0] * KPH, st.speed[1] * KPH
        assert v_ego == pytest.approx(params.get("ego.speed_kph", 50.0), abs=0.5)
        assert v_tgt == pytest.approx({"stationary_target": 0.0, "slower_target": 20.0,
                                       "lead_brake": 50.0}[name], abs=0.5)
        if name == "lead_brake":
            assert gap == pytest.approx(params["actors.target.gap_m"], abs=0.01)
        else:
            assert gap / (st.speed[0] - st.speed[1]) == pytest.approx(4.0, abs=0.1)
        overlap = params.get("actors.target.overlap_pct", 100.0)
        # 100 % is centred: then a narrower target covers its own width's share
        assert share == pytest.approx(min(abs(overlap) / 100.0, st.width[1] / st.width[0]),
                                      abs=0.01)
        assert dy == pytest.approx(0.0, abs=1e-6) if overlap == 100 else np.sign(dy) == -np.sign(
            overlap)
        ego_kph.add(round(v_ego))
        overlaps.add(overlap)
    if name != "lead_brake":
        assert overlaps == {100, 75, 50, -75, -50}
        low = 10 if name == "stationary_target" else 30
        assert ego_kph == set(range(low, 81, 5))


@pytest.mark.parametrize("name, case", [("stationary_target", 0), ("stationary_target", 74),
                                        ("slower_target", 0), ("slower_target", 54),
                                        ("lead_brake", 0), ("lead_brake", 1),
                                        ("lead_brake", 2), ("lead_brake", 3)])
def test_ccr_runs_hold_their_speeds_and_collide_without_a_safety_layer(name, case):
    spec = suite.load_scenario(name).spec(case)
    res = run(make_world(spec))
    tr = res.tracks
    v = np.hypot(tr.vx, tr.vy).astype(float) * KPH
    hits = np.flatnonzero(tr.collided[0])
    assert len(hits), "the ego must hit the target when nothing avoids it"
    before = slice(0, hits[0])
    assert np.ptp(v[0, before]) < 0.5  # the ego holds its speed (within 0.5 km/h)
    params = dict(spec.case_params)
    if name == "lead_brake":
        decel = params["events.target_brakes.decel_mps2"]
        t = tr.t[before]
        want = np.maximum(50.0 - decel * KPH * np.maximum(t - 2.0, 0.0), 0.0)
        assert np.abs(v[1, before] - want).max() < 0.5
        assert tr.meta["events"][0]["start_s"] == pytest.approx(2.0)
    else:
        assert np.ptp(v[1, before]) < 0.5
        assert tr.t[hits[0]] == pytest.approx(4.0, abs=0.15)  # contact at the start TTC


def test_shipped_cut_ins_happen_as_declared_and_the_aggressive_ones_bite():
    sc = suite.load_scenario("cut_in")
    outcomes = {}
    for case in (0, 13, 26):  # mild, middle, aggressive
        spec = sc.spec(case)
        gap, lateral_s, kph = (v for _, v in spec.case_params)
        res = run(make_world(spec), record_every=1)
        tr = res.tracks
        e = tr.meta["events"][0]
        closing = (tr.vx[0] - tr.vx[1]).astype(float)
        k0 = np.searchsorted(tr.t, e["start_s"])
        assert gap - max(closing[k0], 0.0) * 0.1 - 0.05 <= e["start_gap_m"] <= gap + 1e-6
        assert e["end_s"] - e["start_s"] == pytest.approx(lateral_s, abs=0.3)
        assert tr.lane[1, np.searchsorted(tr.t, e["end_s"])] == tr.lane[0, k0]
        assert np.hypot(tr.vx[1, k0], tr.vy[1, k0]) * KPH == pytest.approx(kph, abs=0.5)
        outcomes[case] = bool(tr.collided[0].any())
    assert outcomes[0] is False and outcomes[26] is True


def test_the_ego_merges_from_the_on_ramp():
    res = run(make_world(suite.load_scenario("on_ramp_merge").spec(0)), duration_s=40.0)
    lanes = res.tracks.lane[0]
    assert lanes[0] == 3 and lanes[-1] == 0 and res.counters.collisions == 0


def speed_field(tr, x0_m, x1_m, cell_m, lanes):
    """(T, X) mean speed of the vehicles in each cell of the given lanes, km/h (NaN empty)."""
    edges = np.arange(x0_m, x1_m + 1e-9, cell_m)
    n = len(edges) - 1
    v = np.hypot(tr.vx, tr.vy) * KPH
    out = np.full((tr.n_steps, n), np.nan)
    for k in range(tr.n_steps):
        m = np.isfinite(tr.x[:, k]) & np.isin(tr.lane[:, k], lanes)
        cell = np.digitize(tr.x[m, k], edges) - 1
        ok = (cell >= 0) & (cell < n)
        total = np.bincount(cell[ok], v[m, k][ok], n)
        count = np.bincount(cell[ok], minlength=n)
        out[k] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def test_stop_and_go_waves_emerge_and_travel_upstream():
    """Upstream of the merge (1,800 m) traffic stops and goes again, repeatedly, and the
    stop-and-go pattern of a cell repeats in the cell 200 m upstream about 50 s later: a wave
    moving against the traffic at 8-25 km/h."""
    spec = suite.load_scenario("stop_and_go").spec(0, duration_s=300.0)
    res = run(make_world(spec), record_every=10)  # 1 s resolution
    assert res.counters.collisions == 0
    f = speed_field(res.tracks, 300.0, 1800.0, 100.0, [0, 1])[120:]  # from t = 120 s
    stop_and_go = 0
    for col in f.T:
        stops = np.flatnonzero(col < 10.0)
        if len(stops) and np.nanmax(col[stops[0]:]) > 20.0:
            stop_and_go += 1  # stops, then moves at more than 20 km/h again
    assert stop_and_go >= 3
    speeds_kph = []
    for j in range(2, f.shape[1]):
        a, b = f[:, j], f[:, j - 2]  # b is 200 m upstream of a
        if np.isnan(a).any() or np.isnan(b).any() or max(a.mean(), b.mean()) > 50.0:
            continue  # only where both cells are congested
        if a.std() < 3.0 or b.std() < 3.0:
            continue
        corr = [np.corrcoef(a[:len(a) - lag], b[lag:])[0, 1] for lag in range(1, 100)]
        if max(corr) > 0.7:
            speeds_kph.append(-200.0 / (1 + int(np.argmax(corr))) * KPH)
    assert speeds_kph, "no propagating pattern found"
    assert -25.0 <= np.median(speeds_kph) <= -8.0


def test_same_seed_same_track_file_for_a_scripted_scenario(tmp_path):
    sc = suite.load_scenario("cut_in")
    digests = []
    for i, seed in enumerate((None, None, 5)):
        res = run(make_world(sc.spec(13, seed=seed, duration_s=12.0)))
        write_tracks(tmp_path / f"{i}.npz", res.tracks)
        digests.append(hashlib.sha256((tmp_path / f"{i}.npz").read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


# ---- the command line --------------------------------------------------------------------


def cli(*args, cwd=None):
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or REPO, env=env,
                          timeout=600)


def test_cli_scenarios_list_and_show():
    res = cli("scenarios", "list", "--json", "-")
    assert res.returncode == 0, res.stderr
    listing = json.loads(res.stdout)
    cases = {r["name"]: r["cases"] for r in listing["scenarios"]}
    assert cases["cut_in"] == 27 and cases["stationary_target"] == 75
    assert listing["groups"]["ncap"]["cases"] == 134
    res = cli("scenarios", "show", "stationary_target", "--case", "74")
    assert res.returncode == 0, res.stderr
    assert "ego.speed_mps" in res.stdout and "22.2222 m/s (80 km/h)" in res.stdout
    assert "actors[0].ttc_s" in res.stdout and "4 s" in res.stdout
    res = cli("scenarios", "show", "nope")
    assert res.returncode == 2 and "unknown scenario 'nope'" in res.stderr


def test_cli_run_a_shipped_case_and_a_scenario_file(tmp_path):
    out, summary = tmp_path / "cut.npz", tmp_path / "s.json"
    res = cli("run", "--scenario", "cut_in", "--case", "26", "--headless", "--duration", "12",
              "--record", out, "--json", summary, "--quiet")
    assert res.returncode == 0, res.stderr
    s = json.loads(summary.read_text())
    assert s["case"] == 26 and s["events"][0]["type"] == "cut_in"
    assert read_tracks(out).meta["actors"] == {"ego": 0, "cutter": 1}
    bad = tmp_path / "mine.toml"
    bad.write_text('[ego]\nlane = 0\n\n[[events]]\ntype = "brake"\nactor = "ego"\nat_s = 1.0\n'
                   'decel_mps2 = 12.0\n')
    res = cli("run", "--scenario", bad, "--headless")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert f"{bad}: events[0].decel_mps2: expected a number in (0, 9]" in res.stderr
    bad.write_text(bad.read_text().replace("12.0", "3.0").replace('"brake"', '"stall"')
                   .replace("decel_mps2 = 3.0", "duration_s = inf"))
    res = cli("run", "--scenario", bad, "--headless", "--duration", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    res = cli("scenarios", "show", bad, "--json", "-")  # strict JSON: a stall for good is "inf"
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert shown["settings"]["events[0].duration_s"] == {"value": "inf", "unit": "s"}
