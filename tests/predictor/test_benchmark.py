"""The forecast benchmark: protocol, split, resampling, manoeuvres, CLI contract."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from predictor.baselines import ConstantVelocity, single_mode
from predictor.benchmark import (
    MANEUVERS,
    BenchmarkInputError,
    BenchmarkSpec,
    Episode,
    classify_maneuvers,
    format_table,
    load_episode,
    run_benchmark,
)
from predictor.registry import make_predictor
from predictor.split import FRACTIONS, agent_mask, split_of, unit_keys
from sim.forecast import History, Prediction, sample_index
from sim.tracks import Tracks, write_tracks

REPO = Path(__file__).resolve().parents[2]


def straight_tracks(n_agents=6, n_steps=120, dt=0.1, seed=0, scenario="straight") -> Tracks:
    """Agents at constant speed on straight parallel lines, entering at different times."""
    t = np.arange(n_steps) * dt
    x = np.full((n_agents, n_steps), np.nan, np.float32)
    y, vx, vy, h = (np.full_like(x, np.nan) for _ in range(4))
    for a in range(n_agents):
        start = 5 * a
        speed = 15.0 + 2.0 * a
        x[a, start:] = 10.0 * a + speed * t[start:]
        y[a, start:] = 3.7 * (a % 3)
        vx[a, start:], vy[a, start:], h[a, start:] = speed, 0.0, 0.0
    return Tracks(t=t, x=x, y=y, vx=vx, vy=vy, heading=h,
                  length=np.full(n_agents, 4.5, np.float32),
                  width=np.full(n_agents, 1.8, np.float32),
                  ids=np.arange(n_agents, dtype=np.int64),
                  meta={"source": "test", "dt": dt, "scenario": scenario, "seed": seed})


def episode(tr: Tracks, path="mem.npz") -> Episode:
    return Episode(path, tr, tr, "as recorded")


def cli(*args):
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_cv_has_zero_error_on_a_straight_constant_speed_track():
    tr = straight_tracks()
    spec = BenchmarkSpec(split="all", stride_s=0.5)
    res = run_benchmark([episode(tr)], [make_predictor("cv")], spec)
    r = res["predictors"]["cv"]
    rows, _ = sample_index(tr.present, 20, 30, 5)
    assert r["samples"] == len(rows) > 0
    for key in ("ade", "fde", "min_ade_k", "min_fde_k", "miss_rate"):
        assert r[key] < 1e-4, key
    assert set(r["rmse_at"]) == {"1", "2", "3"} and max(r["rmse_at"].values()) < 1e-4
    assert r["latency_ms_per_sample"] >= 0 and r["modes"] == 1


def test_latency_per_full_batch_leaves_out_the_partial_one():
    tr = straight_tracks()
    rows, _ = sample_index(tr.present, 20, 30, 5)
    batch = 4
    assert len(rows) % batch  # a partial batch at the end
    spec = BenchmarkSpec(split="all", stride_s=0.5, batch=batch)
    res = run_benchmark([episode(tr)], [make_predictor("cv")], spec)
    b = res["predictors"]["cv"]["batch_ms"]
    assert b["batches"] == len(rows) // batch and b["median"] <= b["p95"] <= b["max"]
    assert f"ms per batch of 4 (median; p95 {b['p95']:.2f} ms; {len(rows) // batch} full" \
        in format_table(res)
    whole = run_benchmark([episode(tr)], [make_predictor("cv")],
                          BenchmarkSpec(split="all", stride_s=0.5))["predictors"]["cv"]
    assert whole["batch_ms"] is None  # no batch of 20,000 here


def test_ca_is_not_exact_when_speed_changes():
    tr = straight_tracks()
    x = tr.x.copy()
    vx = tr.vx.copy()
    t = tr.t
    x[0] = 0.5 * 1.0 * t ** 2 + 5.0 * t  # agent 0 accelerates at 1 m/s^2
    vx[0] = 5.0 + t
    tr2 = Tracks(**{**vars(tr), "x": x.astype(np.float32), "vx": vx.astype(np.float32)})
    res = run_benchmark([episode(tr2)], [make_predictor("cv"), make_predictor("ca")],
                        BenchmarkSpec(split="all", by="maneuver"))
    assert res["predictors"]["cv"]["fde"] > res["predictors"]["ca"]["fde"]
    acc = res["by"]["maneuver"]["accelerate"]
    assert acc["ca"]["fde"] < 1e-3 < acc["cv"]["fde"]
    assert sum(g["cv"]["samples"] for g in res["by"]["maneuver"].values()) == \
        res["predictors"]["cv"]["samples"]


def _maneuver_tracks(paths: dict, dt: float, t: np.ndarray, frame: str = "course") -> Tracks:
    """Tracks of (along, across) paths, velocities their derivatives: frame "course" (no
    road, heading 0.4 rad), "road" (a straight highway's lane 0, the track carries the
    road) or "ngsim" (x along the road, y across, source ngsim)."""
    from sim.road import straight_highway

    n = len(paths)
    along = np.array([p[0] for p in paths.values()])
    across = np.array([p[1] for p in paths.values()])
    road, source, x, y = None, "test", along, across
    if frame == "course":
        c, s = np.cos(0.4), np.sin(0.4)
        x, y = c * along - s * across, s * along + c * across
    elif frame == "road":
        road = straight_highway(n_lanes=2, length_m=2000.0)
        cx, cy, h, _, _ = road.pose_at(np.zeros(1, np.int64), np.array([100.0]))
        c, s = np.cos(h[0]), np.sin(h[0])
        x, y = cx[0] + c * along - s * across, cy[0] + s * along + c * across
    else:
        source = "ngsim"
    vx, vy = np.gradient(x, dt, axis=1), np.gradient(y, dt, axis=1)
    f32 = np.float32
    return Tracks(t=t, x=x.astype(f32), y=y.astype(f32), vx=vx.astype(f32), vy=vy.astype(f32),
                  heading=np.arctan2(vy, vx).astype(f32), length=np.full(n, 4.5, f32),
                  width=np.full(n, 1.8, f32), ids=np.arange(n, dtype=np.int64),
                  meta={"source": source, "dt": dt}, road=road)


@pytest.mark.parametrize("frame", ["course", "road", "ngsim"])
def test_maneuver_classes(frame):
    """Samples at t = 2 s: the true future picks the class, the last 0.5 s whether a brake
    or a lane change has begun (sideways in the direction it goes on), in each frame the
    lateral motion is measured in."""
    dt, n = 0.1, 80
    t = np.arange(n) * dt
    from predictor.baselines import min_jerk

    late = np.maximum(t - 2.0, 0.0)  # braking from t = 2 s on
    paths = {
        "keep_lane": (20.0 * t, 0 * t),
        "accelerate": (20.0 * t + 0.5 * 1.0 * t ** 2, 0 * t),
        "brake_not_begun": (20.0 * t - 0.5 * 2.0 * late ** 2, 0 * t),
        "brake_begun": (20.0 * t - 0.5 * 2.0 * t ** 2, 0 * t),
        "lane_change_not_begun": (20.0 * t, 3.7 * min_jerk((t - 2.0) / 4.0)),
        "lane_change_begun": (20.0 * t, 3.7 * min_jerk((t - 1.0) / 4.0)),
    }
    assert list(paths) == list(MANEUVERS)
    tr = _maneuver_tracks(paths, dt, t, frame)
    rows, cols = np.arange(len(paths)), np.full(len(paths), 20)
    codes = classify_maneuvers(tr, rows, cols, 30, past_steps=5, course_steps=20)
    assert [MANEUVERS[c] for c in codes] == list(paths)
    # to the other side too
    mirrored = {k: (a, -b) for k, (a, b) in paths.items()}
    codes = classify_maneuvers(_maneuver_tracks(mirrored, dt, t, frame), rows, cols, 30,
                               past_steps=5, course_steps=20)
    assert [MANEUVERS[c] for c in codes] == list(paths)
    # without a past nothing has begun
    codes = classify_maneuvers(tr, rows, cols, 30, course_steps=20)
    assert [MANEUVERS[c] for c in codes] == ["keep_lane", "accelerate", "brake_not_begun",
                                             "brake_not_begun", "lane_change_not_begun",
                                             "lane_change_not_begun"]
    # a swerve back: moving right over the last 0.5 s, then 3.7 m left: not begun
    back = {"swerve": (20.0 * t, -0.8 * np.clip(t - 1.5, 0.0, 0.5)
                       + 3.7 * min_jerk((t - 2.0) / 4.0))}
    code = classify_maneuvers(_maneuver_tracks(back, dt, t, frame), np.arange(1),
                              np.full(1, 20), 30, past_steps=5, course_steps=20)
    assert MANEUVERS[code[0]] == "lane_change_not_begun"
    # the past comes from what the forecasters see: a brake the inputs do not show yet
    seen = _maneuver_tracks({"k": paths["keep_lane"]}, dt, t, frame)
    code = classify_maneuvers(_maneuver_tracks({"b": paths["brake_begun"]}, dt, t, frame),
                              np.arange(1), np.full(1, 20), 30, past_steps=5, past=seen,
                              course_steps=20)
    assert MANEUVERS[code[0]] == "brake_not_begun"


def test_split_is_deterministic_disjoint_and_balanced():
    keys = [f"ngsim:us101:123:{v}" for v in range(4000)]
    got = [split_of(k) for k in keys]
    assert got == [split_of(k) for k in keys]
    share = {s: got.count(s) / len(got) for s in ("train", "val", "test")}
    for s, f in zip(("train", "val", "test"), FRACTIONS):
        assert abs(share[s] - f) < 0.03
    assert [split_of(k, seed=1) for k in keys] != got
    # by episode: every agent of a file shares a split; train + val + test = all samples
    eps = [episode(straight_tracks(seed=s), f"e{s}.npz") for s in range(12)]
    counts = {}
    for split in ("train", "val", "test", "all"):
        try:
            res = run_benchmark(eps, [ConstantVelocity()], BenchmarkSpec(split=split))
            counts[split] = res["predictors"]["cv"]["samples"]
        except BenchmarkInputError:
            counts[split] = 0
    assert counts["train"] + counts["val"] + counts["test"] == counts["all"] > 0
    for ep in eps:
        assert len(set(unit_keys(ep.truth, ep.path))) == 1


def test_ngsim_split_by_vehicle_ignores_the_file_name(ngsim_dir, tmp_path):
    src = ngsim_dir / "us101" / "us101_trajectories-0820am-0835am_subset.csv.gz"
    a = load_episode(src)
    copy = tmp_path / "renamed.csv.gz"
    copy.write_bytes(src.read_bytes())
    b = load_episode(copy)
    assert unit_keys(a.truth, a.path) == unit_keys(b.truth, b.path)
    assert len(set(unit_keys(a.truth, a.path))) == a.truth.n_agents
    assert a.inputs_kind == "causal" and a.inputs is not a.truth
    assert np.array_equal(a.inputs.present, a.truth.present)
    masks = [agent_mask(a.truth, a.path, s) for s in ("train", "val", "test")]
    assert (sum(m.astype(int) for m in masks) == 1).all()


@dataclass(frozen=True)
class CoarseCV:
    """CV that insists on a given step, to test resampling."""

    dt_s: float
    name: str = "coarse"
    n_neighbors: int = 0

    def predict(self, history: History, horizon_steps: int) -> Prediction:
        assert abs(history.dt_s - self.dt_s) < 1e-9
        return ConstantVelocity().predict(history, horizon_steps)


def test_inputs_are_resampled_or_refused():
    tr = straight_tracks(n_steps=200)
    res = run_benchmark([episode(tr)], [CoarseCV(0.2), ConstantVelocity()],
                        BenchmarkSpec(split="all"))
    assert res["predictors"]["coarse"]["dt_s"] == pytest.approx(0.2)
    assert res["predictors"]["coarse"]["fde"] < 1e-4
    assert res["predictors"]["coarse"]["samples"] == res["predictors"]["cv"]["samples"]
    with pytest.raises(BenchmarkInputError, match="mem.npz: step 0.1 s cannot be resampled"):
        run_benchmark([episode(tr)], [CoarseCV(0.15)], BenchmarkSpec(split="all"))
    with pytest.raises(BenchmarkInputError, match="not a whole number"):
        run_benchmark([episode(tr)], [ConstantVelocity()],
                      BenchmarkSpec(split="all", horizon_s=3.05))


@dataclass(frozen=True)
class ManyModes:
    """Ten modes: the truth (least probable) and nine wrong ones."""

    name: str = "many"
    dt_s: float | None = None
    n_neighbors: int = 0

    def predict(self, history: History, horizon_steps: int) -> Prediction:
        base = ConstantVelocity().predict(history, horizon_steps).xy[:, 0]
        xy = np.stack([base + 10.0 * (m + 1) for m in range(9)] + [base], axis=1)
        prob = np.array([0.2] + [0.1] * 8 + [0.0])[None].repeat(len(base), 0)
        return Prediction(xy, prob)


def test_only_the_k_most_probable_modes_count():
    tr = straight_tracks()
    res = run_benchmark([episode(tr)], [ManyModes()], BenchmarkSpec(split="all", k=9))
    assert res["predictors"]["many"]["min_fde_k"] > 10.0  # the truth is mode 10
    res = run_benchmark([episode(tr)], [ManyModes()], BenchmarkSpec(split="all", k=10))
    assert res["predictors"]["many"]["min_fde_k"] < 1e-4
    assert res["predictors"]["many"]["fde"] > 10.0  # mode 1 is the most probable, wrong one


def test_kalman_and_multimodal_are_fitted_on_the_train_split():
    eps = [episode(straight_tracks(seed=s), f"e{s}.npz") for s in range(12)]
    res = run_benchmark(eps, [make_predictor("kalman"), make_predictor("cv_multi")],
                        BenchmarkSpec(split="test"))
    assert set(res["fitted"]) == {"kalman", "cv_multi"}
    assert res["fitted"]["kalman"]["samples"] > 0
    assert res["predictors"]["kalman"]["fde"] < 0.05
    assert res["predictors"]["cv_multi"]["modes"] == 6
    assert "nll" in res["predictors"]["kalman"]


def test_cli_benchmark_predict(tmp_path):
    files = []
    for s in range(3):
        f = tmp_path / f"run{s}.npz"
        write_tracks(f, straight_tracks(seed=s))
        files.append(f)
    out, png = tmp_path / "r.json", tmp_path / "p.png"
    res = cli("benchmark", "predict", "--data", *files, "--predictors", "cv,ca,ctrv,kalman",
              "--split", "all", "--json", out, "--plot", png, "--by", "file", "--quiet")
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert set(data) >= {"protocol", "predictors"}
    assert list(data["predictors"]) == ["cv", "ca", "ctrv", "kalman"]
    for r in data["predictors"].values():
        assert set(r) >= {"samples", "ade", "fde", "min_ade_k", "min_fde_k", "miss_rate",
                          "rmse_at", "latency_ms_per_sample"}
    assert data["predictors"]["cv"]["fde"] < 1e-4
    assert data["protocol"]["history_s"] == 2.0 and data["protocol"]["k"] == 6
    assert len(data["by"]["file"]) == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = res.stdout.splitlines()
    assert lines[1].split()[:3] == ["predictor", "samples", "ADE"]
    assert [ln.split()[0] for ln in lines[2:6]] == ["cv", "ca", "ctrv", "kalman"]


@pytest.mark.parametrize("args,needle", [
    (["--predictors", "cv,lstm"], "unknown predictor 'lstm'"),
    (["--horizon", "0"], "--horizon"),
    (["--history", "-1"], "history"),
    (["--split", "dev"], "--split"),
    (["--k", "0"], "--k"),
])
def test_cli_bad_flags(tmp_path, args, needle):
    f = tmp_path / "a.npz"
    write_tracks(f, straight_tracks())
    res = cli("benchmark", "predict", "--data", f, *args, "--quiet")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr


def test_cli_bad_data(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    res = cli("benchmark", "predict", "--data", junk, "--quiet")
    assert res.returncode == 2 and "junk.bin" in res.stderr and "not a track file" in res.stderr
    res = cli("benchmark", "predict", "--data", tmp_path / "missing.npz", "--quiet")
    assert res.returncode == 2 and "no such file" in res.stderr
    twice = tmp_path / "twice.npz"
    write_tracks(twice, straight_tracks())
    res = cli("benchmark", "predict", "--data", twice, twice, "--split", "all", "--quiet")
    assert res.returncode == 2 and "given twice" in res.stderr
    short = tmp_path / "short.npz"
    write_tracks(short, straight_tracks(n_steps=30))
    res = cli("benchmark", "predict", "--data", short, "--split", "all", "--quiet")
    assert res.returncode == 2 and "no samples" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_single_mode_helper_shapes():
    p = single_mode(np.zeros((3, 4, 2)), np.ones((3, 4, 2)))
    assert p.xy.shape == (3, 1, 4, 2) and p.sigma_m.shape == (3, 1, 4, 2)
