"""NGSIM import: both layouts, units and reference point, smoothing, periods, bad files."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scenarios.ngsim import (
    FT_M,
    ID_STRIDE,
    ImportSettings,
    NgsimFormatError,
    read_ngsim,
)
from sim.tracks import TrackFileError, read_tracks, write_tracks

REPO = Path(__file__).resolve().parents[2]
SUBSET_HEADER = ("Vehicle_ID,Frame_ID,Total_Frames,Global_Time,Local_X,Local_Y,v_Vel,v_Acc,"
                 "Space_Headway,Time_Headway")
OFFICIAL_HEADER = ("Vehicle_ID,Frame_ID,Total_Frames,Global_Time,Local_X,Local_Y,Global_X,"
                   "Global_Y,v_length,v_Width,v_Class,v_Vel,v_Acc,Lane_ID,O_Zone,D_Zone,Int_ID,"
                   "Section_ID,Direction,Movement,Preceding,Following,Space_Headway,"
                   "Time_Headway,Location")
CLOCK = 1118846978900  # a US-101 period's Global_Time at frame 0


def subset_rows(vid, frames, local_x, local_y, clock=CLOCK):
    return [f"{vid},{f},999,{clock + 100 * f},{lx:.3f},{ly:.3f},0,0,0,0"
            for f, lx, ly in zip(frames, local_x, local_y)]


def write_csv(path: Path, header: str, rows: list[str], gz: bool = False) -> Path:
    text = header + "\n" + "\n".join(rows) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def cli(*args):
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_units_frame_and_reference_point_on_a_steady_vehicle(tmp_path):
    frames = np.arange(100, 160)
    ly = 50.0 + 60.0 * 0.1 * (frames - 100)  # 60 ft/s along the road
    lx = np.full(len(frames), 18.0)  # in lane 2 (12..24 ft)
    f = write_csv(tmp_path / "one.csv", SUBSET_HEADER, subset_rows(7, frames, lx, ly))
    tr = read_ngsim(f)
    assert tr.ids.tolist() == [7] and tr.n_steps == 60 and tr.dt_s == pytest.approx(0.1)
    # x along the road from Local_Y, y to the left (-Local_X), centre half a length back
    np.testing.assert_allclose(tr.x[0], ly * FT_M - 0.5 * 4.5, atol=1e-3)
    np.testing.assert_allclose(tr.y[0], -18.0 * FT_M, atol=1e-4)
    np.testing.assert_allclose(tr.vx[0], 60.0 * FT_M, atol=1e-3)
    np.testing.assert_allclose(tr.vy[0], 0.0, atol=1e-4)
    np.testing.assert_allclose(tr.heading[0], 0.0, atol=1e-5)
    assert (tr.lane[0] == 2).all() and tr.kind.tolist() == [-1]
    assert tr.meta["source"] == "ngsim" and tr.meta["smoothing"]["window_frames"] == 21


def test_unordered_frames_duplicates_and_periods(tmp_path):
    frames = np.arange(0, 40)
    rows = subset_rows(3, frames, np.full(40, 6.0), 10.0 + 3.0 * frames)
    rows += subset_rows(3, frames, np.full(40, 30.0), 500.0 + 2.0 * frames,
                        clock=CLOCK + 900_000)  # the same id in a period 15 min later
    rows = rows[::-1]  # descending order
    rows.insert(5, rows[10])  # an exact duplicate key
    f = write_csv(tmp_path / "two.csv", SUBSET_HEADER, rows)
    tr = read_ngsim(f)
    assert tr.ids.tolist() == [3, 3 + ID_STRIDE]
    assert tr.meta["duplicates_dropped"] == 1 and len(tr.meta["periods"]) == 2
    # 15 min apart is more than 60 s: laid end to end with 60 s between
    second = tr.meta["periods"][1]
    assert second["t_start_s"] == pytest.approx(3.9 + 60.0)
    np.testing.assert_allclose(np.diff(tr.x[0][tr.present[0]]), 3.0 * FT_M, atol=1e-4)
    assert not (tr.present[0] & tr.present[1]).any()


def test_overlapping_periods_keep_true_time(tmp_path):
    frames = np.arange(0, 50)
    rows = subset_rows(1, frames, np.full(50, 6.0), 10.0 + 3.0 * frames)
    rows += subset_rows(1, frames, np.full(50, 18.0), 10.0 + 3.0 * frames,
                        clock=CLOCK + 2_000)  # starts 2 s later
    tr = read_ngsim(write_csv(tmp_path / "o.csv", SUBSET_HEADER, rows))
    assert tr.meta["periods"][1]["t_start_s"] == pytest.approx(2.0)
    assert tr.n_steps == 70


def test_official_layout_fixture(ngsim_dir):
    tr = read_ngsim(ngsim_dir / "fixtures" / "peachtree_official_csv_layout_5000rows.csv.gz")
    assert tr.meta["location"] == "peachtree" and len(tr.meta["periods"]) == 2
    assert len(np.unique(tr.ids)) == tr.n_agents
    assert (tr.ids >= ID_STRIDE).any() and (tr.ids < ID_STRIDE).any()
    # sizes from v_length / v_Width, kinds from v_Class, lanes from Lane_ID
    assert set(np.round(tr.length / FT_M).astype(int)) > {15}
    assert set(tr.kind.tolist()) <= {0, 1, 2} and 0 in tr.kind
    assert set(np.unique(tr.lane[tr.present]).tolist()) <= {1, 2, 11}
    speed = np.hypot(tr.vx, tr.vy)[tr.present]
    assert speed.max() < 40.0


def test_us101_speeds_and_accelerations_plausible_and_round_trip(ngsim_dir, tmp_path):
    src = ngsim_dir / "us101" / "us101_trajectories-0820am-0835am_subset.csv.gz"
    tr = read_ngsim(src)
    assert tr.n_agents == 13
    speed = np.hypot(tr.vx, tr.vy).astype(float)
    assert np.nanmin(speed) >= 0.0 and np.nanmax(speed) < 40.0
    acc = np.diff(speed, axis=1) / 0.1
    acc = np.abs(acc[np.isfinite(acc)])
    assert np.percentile(acc, 99.9) < 5.0 and acc.max() < 10.0
    out = tmp_path / "us101.npz"
    write_tracks(out, tr)
    back = read_tracks(out)
    p = tr.present
    assert np.array_equal(back.present, p)
    assert np.abs(back.x[p] - tr.x[p]).max() < 0.01 and np.abs(back.y[p] - tr.y[p]).max() < 0.01
    # and against the raw file: centred positions within smoothing noise of the raw ones
    raw = np.loadtxt(gzip.open(src, "rt"), delimiter=",", skiprows=1)
    row = {int(i): k for k, i in enumerate(back.ids)}
    a = np.array([row[int(v)] for v in raw[:, 0]])
    col = (raw[:, 1] - raw[:, 1].min()).astype(int)
    front_x = back.x[a, col] + 0.5 * back.length[a] * np.cos(back.heading[a, col])
    assert np.median(np.abs(front_x - raw[:, 5] * FT_M)) < 0.3


def test_causal_smoothing_never_looks_ahead(tmp_path):
    rng = np.random.default_rng(1)
    frames = np.arange(0, 80)
    ly = 3.0 * frames + rng.normal(0, 0.5, 80)
    lx = 6.0 + rng.normal(0, 0.3, 80)
    a = read_ngsim(write_csv(tmp_path / "a.csv", SUBSET_HEADER, subset_rows(1, frames, lx, ly)),
                   settings=ImportSettings(causal=True))
    ly2 = ly.copy()
    ly2[50:] += 40.0  # change the future of frame 49
    b = read_ngsim(write_csv(tmp_path / "b.csv", SUBSET_HEADER,
                             subset_rows(1, frames, lx, ly2)),
                   settings=ImportSettings(causal=True))
    assert np.array_equal(a.x[0, :50], b.x[0, :50]) and np.array_equal(a.vx[0, :50], b.vx[0, :50])
    assert not np.array_equal(a.x[0, 50:], b.x[0, 50:])
    c = read_ngsim(tmp_path / "a.csv")  # centred: frame 45 sees frame 50's change
    d = read_ngsim(tmp_path / "b.csv")
    assert c.x[0, 45] != d.x[0, 45]


@pytest.mark.parametrize("content,needle", [
    (b"", "empty file"),
    (b"\x00\x01\x02\xff\xfe" * 200, "not a text CSV"),
    (b"a,b,c\n1,2,3\n", "no column 'vehicle_id'"),
    ((SUBSET_HEADER + "\n1,2,3\n").encode(), "row 2: expected 10 fields"),
    ((SUBSET_HEADER + "\n" + "\n".join(subset_rows(1, range(5), [1] * 5, range(5)))
      + "\n1,6,999,1118846979500,abc,7,0,0,0,0\n").encode(), "row 7, column 'local_x'"),
    ((SUBSET_HEADER + "\n").encode(), "no data rows"),
    ((SUBSET_HEADER + "\n1,2,999,1118846979100,1,2,0,0,0,0\n").encode(),
     "no vehicle has 3 or more"),
    ((SUBSET_HEADER + "\n" + "\n".join(  # Global_Time 1.5 s per frame, not 0.1 s
        f"1,{f},999,{CLOCK + 1500 * f},1,{f},0,0,0,0" for f in range(300))).encode(),
     "columns 'global_time' and 'frame_id' disagree"),
    ((SUBSET_HEADER + "\n1,1e300,999,1118846979100,1,2,0,0,0,0\n").encode(),
     "column 'frame_id': frames must be <"),
])
def test_bad_files_refused(tmp_path, content, needle):
    f = tmp_path / "bad.csv"
    f.write_bytes(content)
    with pytest.raises(NgsimFormatError, match=needle) as exc:
        read_ngsim(f)
    assert str(f) in str(exc.value) and isinstance(exc.value, TrackFileError)


def test_cli_import_and_errors(tmp_path, ngsim_dir, capsys):
    import main

    out = tmp_path / "pt.npz"
    fixture = ngsim_dir / "fixtures" / "peachtree_official_csv_layout_5000rows.csv.gz"
    res = cli("import", "ngsim", fixture, "-o", out, "--quiet")
    assert res.returncode == 0, res.stderr
    assert "148 vehicles" in res.stdout and read_tracks(out).meta["location"] == "peachtree"
    # a truncated gzip: one line, exit 2, nothing written
    trunc = tmp_path / "trunc.csv.gz"
    trunc.write_bytes(fixture.read_bytes()[:40_000])
    res = cli("import", "ngsim", trunc, "-o", tmp_path / "t.npz", "--quiet")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "trunc.csv.gz" in res.stderr and "truncated" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "t.npz").exists()
    # two locations need --location (in process: the same main(), faster)
    lines = gzip.open(fixture, "rt").read().splitlines()
    mixed = [lines[0]] + lines[1:200] + [ln.replace("peachtree", "lankershim")
                                         for ln in lines[200:400]]
    f = write_csv(tmp_path / "mixed.csv", lines[0], mixed[1:])
    capsys.readouterr()
    assert main.main(["import", "ngsim", str(f), "-o", str(tmp_path / "m.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--location" in err and "lankershim" in err and not (tmp_path / "m.npz").exists()
    assert main.main(["import", "ngsim", str(f), "-o", str(tmp_path / "m.npz"), "--quiet",
                      "--location", "lankershim"]) == 0
    assert read_tracks(tmp_path / "m.npz").meta["location"] == "lankershim"
    assert main.main(["import", "ngsim", str(f), "-o", str(tmp_path / "w.npz"),
                      "--window", "-1"]) == 2
    assert "window" in capsys.readouterr().err
