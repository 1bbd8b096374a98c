import json
import zipfile

import numpy as np
import pytest

from sim.road import straight_highway
from sim.tracks import TrackFileError, Tracks, read_tracks, write_tracks


def make_tracks(n=3, t=5, **kw):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, t)).astype(np.float32)
    x[0, 0] = np.nan
    nan = np.isnan(x)
    arrays = {k: np.where(nan, np.nan, rng.normal(size=(n, t))).astype(np.float32)
              for k in ("y", "vx", "vy", "heading")}
    base = dict(t=np.arange(t) * 0.1, x=x, **arrays, length=np.full(n, 4.5, np.float32),
                width=np.full(n, 1.8, np.float32), ids=np.arange(n, dtype=np.int64) + 10,
                meta={"source": "test", "dt": 0.1})
    base.update(kw)
    return Tracks(**base)


def test_round_trip_with_optional_arrays(tmp_path):
    tr = make_tracks(kind=np.array([0, 1, -1], np.int8),
                     lane=np.zeros((3, 5), np.int16), ego=1,
                     collided=np.zeros((3, 5), bool), road=straight_highway())
    write_tracks(tmp_path / "a.npz", tr)
    back = read_tracks(tmp_path / "a.npz")
    for name in ("t", "x", "y", "vx", "vy", "heading", "length", "width", "ids", "kind",
                 "lane", "collided"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tr, name))
    assert back.ego == 1 and back.meta == {"source": "test", "dt": 0.1}
    assert back.road.n_lanes == 3
    assert back.present.sum() == 14


def test_writing_is_atomic_and_leaves_no_temporary_files(tmp_path):
    write_tracks(tmp_path / "a.npz", make_tracks())
    with pytest.raises(ValueError):
        write_tracks(tmp_path / "b.npz", make_tracks(ids=np.zeros(3, np.int64)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


def _save_raw(path, **arrays):
    np.savez(path, **arrays)


def _road_json(**lane_changes) -> str:
    obj = json.loads(straight_highway(n_lanes=1, length_m=200.0).to_json())
    lane = obj["lanes"][0]
    for key, value in lane_changes.items():
        lane[key] = value
        if key in ("x", "y", "station"):  # keep the point lists the same length
            for other in ("x", "y", "station"):
                if other != key:
                    lane[other] = lane[other][:len(value)]
    return json.dumps(obj)


def _good_arrays():
    tr = make_tracks()
    return dict(t=tr.t, x=tr.x, y=tr.y, vx=tr.vx, vy=tr.vy, heading=tr.heading,
                length=tr.length, width=tr.width, ids=tr.ids,
                meta=np.array(json.dumps(tr.meta)))


@pytest.mark.parametrize("mutate, field", [
    (lambda a: a.pop("x"), "'x'"),
    (lambda a: a.pop("meta"), "'meta'"),
    (lambda a: a.update(y=a["y"][:, :4]), "'y'"),
    (lambda a: a.update(t=np.array([0.0, 0.1, 0.25, 0.3, 0.4])), "'t'"),
    (lambda a: a.update(length=np.array([4.5, np.nan, 4.5], np.float32)), "'length'"),
    (lambda a: a.update(ids=np.array([1, 1, 2])), "'ids'"),
    (lambda a: a.update(x=a["x"].astype(np.float64)), "'x'"),
    (lambda a: a.update(meta=np.array("{not json")), "'meta'"),
    (lambda a: a.update(meta=np.array('{"dt": 0.1}')), "'meta'"),
    (lambda a: a.update(vx=np.where(np.isnan(a["vx"]), 0, a["vx"]).astype(np.float32)), "'vx'"),
    (lambda a: a.update(kind=np.array([0, 1, 9], np.int8)), "'kind'"),
    (lambda a: a.update(lane=np.zeros((3, 5), np.int64)), "'lane'"),
    (lambda a: a.update(ego=np.array(7)), "'ego'"),
    (lambda a: a.update(road=np.array('{"lanes": []}')), "'road'"),
    (lambda a: a.update(road=np.array(_road_json(width_m=0.0))), "width_m"),
    (lambda a: a.update(road=np.array(_road_json(station=[0.0, 0.0]))), "station"),
    (lambda a: a.update(road=np.array(_road_json(x=[0.0, 1e300]))), "within"),
    (lambda a: a.update(t=a["t"][:1], x=a["x"][:, :1], y=a["y"][:, :1], vx=a["vx"][:, :1],
                        vy=a["vy"][:, :1], heading=a["heading"][:, :1],
                        meta=np.array('{"source": "test", "dt": 0.0}')), "'dt' must be > 0"),
    (lambda a: a.update(t=1.1e9 + np.array([0.0, 0.1, 500.2, 500.3, 500.4])), "'t'"),
    (lambda a: a.update(x=np.array([object()] * 15).reshape(3, 5)), "'x'"),
])
def test_each_spec_violation_is_refused_naming_the_array(tmp_path, mutate, field):
    arrays = _good_arrays()
    mutate(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays) if "x" not in arrays or arrays["x"].dtype != object else \
        np.savez(path, **arrays, allow_pickle=True)
    with pytest.raises(TrackFileError) as err:
        read_tracks(path)
    msg = str(err.value)
    assert str(path) in msg and field in msg and "\n" not in msg


def test_not_an_npz_truncated_and_missing_files_are_refused(tmp_path):
    text = tmp_path / "a.npz"
    text.write_text("hello")
    good = tmp_path / "good.npz"
    write_tracks(good, make_tracks(n=50, t=200))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (text, cut, tmp_path / "missing.npz", tmp_path):
        with pytest.raises(TrackFileError, match=str(path)):
            read_tracks(path)


def test_corrupt_member_is_refused(tmp_path):
    good = tmp_path / "good.npz"
    write_tracks(good, make_tracks(n=50, t=200))
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("x.npy")
    start = info.header_offset + 30 + len(info.filename) + 10
    for k in range(start, start + 40):
        data[k] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(TrackFileError, match="bad.npz"):
        read_tracks(bad)
