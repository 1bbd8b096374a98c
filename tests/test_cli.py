"""The command line as a user runs it: exit codes, one-line errors, files written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None):
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=600)


def assert_one_line_error(res, *needles):
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_run_headless_records_a_track_file_and_info_reads_it(tmp_path):
    out = tmp_path / "out.npz"
    summary = tmp_path / "s.json"
    res = cli("run", "--headless", "--duration", "5", "--record", out, "--json", summary,
              "--quiet")
    assert res.returncode == 0, res.stderr
    s = json.loads(summary.read_text())
    assert s["steps"] == 50 and s["collisions"] == 0 and s["record"] == str(out)
    res = cli("info", out, "--json", "-")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["steps"] == 51 and info["ego_id"] == 0 and info["road"] == "on_ramp_highway"


@pytest.mark.parametrize("args, needles", [
    (["run", "--headless", "--duration", "abc"], ["--duration", "abc"]),
    (["run", "--headless", "--road", "moon"], ["--road", "moon"]),
    (["run", "--headless", "--seed", "-3"], ["--seed"]),
    (["benchmark", "sim", "--vehicles", "0"], ["--vehicles"]),
    (["benchmark", "nothing"], ["nothing"]),
    (["frobnicate"], ["frobnicate"]),
    (["run", "--headless", "--flow", "5000"], ["flow"]),
    (["train", "--data", "sim", "--out", "m.pt", "--knots", "1"], ["knots", "got 1"]),
    (["train", "--data", "sim", "--out", "m.pt", "--knots", "31"], ["knots", "(30)"]),
    # 40 knots fit a 5 s horizon (50 steps): the config passes and the missing data file fails
    (["train", "--data", "nowhere.npz", "--out", "m.pt", "--horizon", "5", "--knots", "40",
      "--social-hidden", "16"], ["nowhere.npz"]),
])
def test_bad_flags_exit_2_with_one_line(args, needles):
    assert_one_line_error(cli(*args), *needles)


def test_malformed_track_files_exit_2_naming_file_and_array(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, t=np.arange(3.0))
    assert_one_line_error(cli("info", bad), str(bad), "'x'")
    text = tmp_path / "text.npz"
    text.write_text("no")
    assert_one_line_error(cli("info", text), str(text))


def test_benchmark_sim_writes_the_contract_json(tmp_path):
    out = tmp_path / "b.json"
    res = cli("benchmark", "sim", "--vehicles", "100", "--steps", "20", "--repeats", "1",
              "--json", out)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    for key in ("vehicles", "steps", "dt", "vehicle_steps_per_s", "wall_s"):
        assert key in data
    assert data["vehicles"] == 100 and data["steps"] == 20 and data["dt"] == 0.1
    assert "vehicle-steps/s" in res.stdout


def test_help_for_every_command():
    for args in (["--help"], ["run", "--help"], ["benchmark", "sim", "--help"],
                 ["info", "--help"]):
        res = cli(*args)
        assert res.returncode == 0 and "usage" in res.stdout


def test_unwritable_outputs_exit_2_before_any_work(tmp_path):
    """An output path that cannot be written is refused before the run starts, one line,
    and a good file already there is left as it was."""
    blocker = tmp_path / "file.npz"
    blocker.write_bytes(b"keep me")
    folder = tmp_path / "runs"
    folder.mkdir()
    cases = [
        (["run", "--headless", "--duration", "600", "--record", blocker / "x.npz"],
         ["--record", "is not a folder"]),
        (["run", "--headless", "--duration", "600", "--record", folder], ["--record", "folder"]),
        (["run", "--headless", "--duration", "600", "--json", blocker / "s.json"], ["--json"]),
        (["run", "--headless", "--duration", "600", "--frames-dir", blocker],
         ["--frames-dir", "not a folder"]),
        (["benchmark", "safety", "--suite", "ncap", "--json", blocker / "s.json"], ["--json"]),
        (["train", "--data", "sim", "--out", folder], ["--out", "folder"]),
    ]
    for args, needles in cases:
        assert_one_line_error(cli(*args), *needles)
    assert blocker.read_bytes() == b"keep me"


def test_outputs_get_the_permissions_of_new_files(tmp_path):
    """Under umask 022 outputs are 0644 (a temporary file alone would be 0600)."""
    out, summary = tmp_path / "out.npz", tmp_path / "s.json"
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    res = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "run", "--headless", "--duration", "1",
         "--record", str(out), "--json", str(summary), "--quiet"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
        preexec_fn=lambda: os.umask(0o022))
    assert res.returncode == 0, res.stderr
    for f in (out, summary):
        assert f.stat().st_mode & 0o777 == 0o644, f


def test_run_headless_refuses_a_predictor_it_would_not_draw():
    assert_one_line_error(cli("run", "--headless", "--predictor", "kalman", "--duration", "1"),
                          "--predictor")


def test_track_outputs_need_a_npz_name_and_never_overwrite_the_input(tmp_path):
    rec = tmp_path / "rec.npz"
    assert cli("run", "--headless", "--duration", "1", "--record", rec, "--quiet").returncode == 0
    before = rec.read_bytes()
    assert_one_line_error(cli("run", "--scenario", rec, "--headless", "--record", rec),
                          "would overwrite the input")
    assert_one_line_error(cli("run", "--headless", "--duration", "1", "--record",
                              tmp_path / "rec.csv"), ".npz")
    assert rec.read_bytes() == before


@pytest.mark.parametrize("args, needles", [
    (["run", "--headless", "--duration", "1", "--predictor", "cv", "--horizon", "1e9",
      "--frames-dir", "frames"], ["--horizon", "at most 30"]),
    (["run", "--headless", "--duration", "1", "--predictor", "rnn", "--checkpoint", "sim",
      "--horizon", "10", "--frames-dir", "frames"], ["--horizon 10", "at most 3 s"]),
    (["benchmark", "sim", "--vehicles", "40000", "--steps", "1", "--repeats", "1"],
     ["--vehicles 40000"]),
])
def test_out_of_range_settings_exit_2_with_one_line(tmp_path, args, needles):
    args = [str(tmp_path / a) if a == "frames" else a for a in args]
    assert_one_line_error(cli(*args), *needles)
    assert not (tmp_path / "frames").exists()


def test_scenario_errors_name_the_field_at_fault(tmp_path):
    text = (REPO / "scenarios" / "lead_brake.toml").read_text()
    bad = tmp_path / "far_ego.toml"
    head, ego = text.split("[ego]\n", 1)
    assert ego.startswith("lane = 0\nstation_m = 100.0\n")
    bad.write_text(head + "[ego]\n" + ego.replace("station_m = 100.0", "station_m = 5000.0", 1))
    assert_one_line_error(cli("run", "--headless", "--scenario", bad), "ego.station_m")
