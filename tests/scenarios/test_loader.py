"""Scenario files: loading, one-line errors naming the file and the key path, sweeps, fuzzing."""

import dataclasses
import datetime
import inspect
import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenarios import loader
from scenarios.loader import ScenarioError, derive_seed, from_document, from_text, load
from sim import road as road_mod
from sim.spec import ActorSpec, DriverDist, EgoSpec, EventSpec, RoadSpec, WorldSpec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios.md"

BASE = """
name = "t"
description = "a test"
duration_s = 5.0
seed = 7

[road]
type = "straight_highway"
n_lanes = 2
length_m = 600.0

[traffic]
flow_vph_per_lane = 0.0
ramp_flow_vph = 0.0
initial_fill = false

[ego]
lane = 0
station_m = 100.0
speed_kph = 50.0
driver = "cruise"

[[actors]]
name = "target"
lane = 0
gap_m = 12.0
speed_kph = 50.0

[[events]]
name = "b"
type = "brake"
actor = "target"
at_s = 1.0
decel_mps2 = 6.0
"""


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def error_of(text, where="x.toml") -> str:
    with pytest.raises(ScenarioError) as err:
        from_text(text, where)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(where + ":"), msg
    return msg


def test_a_valid_file_becomes_a_world_spec_with_units_converted():
    sc = from_text(BASE, "x.toml")
    assert sc.n_cases == 1 and not sc.has_sweep and sc.name == "t"
    spec = sc.spec()
    assert isinstance(spec, WorldSpec) and spec.seed == 7 and spec.case is None
    assert spec.ego.speed_mps == pytest.approx(50 / 3.6)
    assert spec.ego.desired_speed_mps == pytest.approx(50 / 3.6)  # defaults to the speed
    assert spec.actors[0].speed_mps == pytest.approx(50 / 3.6)
    assert spec.events[0].decel_mps2 == 6.0 and spec.events[0].to_speed_mps == 0.0
    assert spec.road == RoadSpec("straight_highway", {"n_lanes": 2, "length_m": 600.0})
    assert spec.ego.avoidance == "none" and spec.ego.follow_actors == "always"


def test_defaults_fill_everything_not_given():
    spec = from_text('duration_s = 3.0\n', "min.toml", "min").spec()
    assert spec.name == "min" and spec.road.kind == "straight_highway"
    assert spec.ego == EgoSpec() and spec.actors == () and spec.dt_s == 0.1


@pytest.mark.parametrize("old, new, needles", [
    ("decel_mps2 = 6.0", "decel_mps2 = 12", ["events[0].decel_mps2", "(0, 9]", "got 12"]),
    ("speed_kph = 50.0\ndriver", "spead_kph = 50.0\ndriver",
     ["ego.spead_kph", "did you mean 'speed_kph'"]),
    ("lane = 0\nstation_m", 'lane = "one"\nstation_m', ["ego.lane", "an integer", "'one'"]),
    ("n_lanes = 2", "n_lanes = 9", ["road.n_lanes", "between 1 and 8"]),
    ('type = "straight_highway"', 'type = "moon"', ["road.type", "one of", "'moon'"]),
    ("length_m = 600.0", "length_m = 600.0\nwidth_m = 3.0", ["road.width_m", "did you mean"]),
    ("speed_kph = 50.0\ndriver", "speed_kph = 50.0\nspeed_mps = 3.0\ndriver",
     ["ego.speed_mps", "not both"]),
    ("gap_m = 12.0", "gap_m = 12.0\nttc_s = 4.0", ["actors[0].ttc_s", "exactly one of"]),
    ('actor = "target"', 'actor = "targte"', ["events[0].actor", "target"]),
    ('name = "b"\n', 'name = "b"\nafter = "c"\n', ["events[0]", "exactly one trigger"]),
    ("at_s = 1.0", 'after = "zz"', ["events[0].after", "earlier event"]),
    ("flow_vph_per_lane = 0.0", "flow_vph_per_lane = [0.0, 10.0, 20.0]",
     ["traffic.flow_vph_per_lane", "one value per main entry lane (2)"]),
    ("initial_fill = false", "initial_fill = false\n[traffic.car]\nv0_kph = {mean = 300}",
     ["traffic.car.v0_kph.mean", "[3.6, 252] km/h"]),
    ("initial_fill = false", "initial_fill = false\n[traffic.car]\nv0_mps = {std = 1}",
     ["traffic.car.v0_mps.mean", "required"]),
    ("initial_fill = false",
     "initial_fill = false\n[traffic.truck]\nlength_m = {mean = 9, lo = 10}",
     ["traffic.truck.length_m.mean", "lo <= mean <= hi"]),
    ("lane = 0\nstation_m", "lane = 5\nstation_m", ["ego.lane", "ego lane 5 does not exist"]),
    ("gap_m = 12.0", "gap_m = 5000.0", ["actors[0].gap_m", "puts the actor at"]),
    ("duration_s = 5.0", "duration_s = -1.0", ["duration_s"]),
    ("duration_s = 5.0", "duration_s = nan", ["duration_s", "finite"]),
    ("duration_s = 5.0", "duration_s = inf", ["duration_s", "finite"]),
    ("seed = 7", "seed = -3", ["seed", "non-negative"]),
    ("seed = 7", "seed = true", ["seed", "an integer"]),
    ("seed = 7", "seed = 7\nfoo = 1", ["foo", "a known key"]),
    ("at_s = 1.0", "at_s = 1979-05-27", ["events[0].at_s", "a finite number"]),
    ('name = "t"', 'name = "bad name!"', ["name"]),
    ("lane = 0\ngap_m", "lane = 1\ngap_m = 4.0\noverlap_pct = 50.0\n#",
     ["actors[0].overlap_pct", "ego's lane"]),
    ('driver = "cruise"', 'driver = "cruise"\navoidance = "r n n"', ["ego.avoidance"]),
    ('driver = "cruise"', 'driver = "fast"', ["ego.driver", "idm, idm_lane, cruise"]),
    ("speed_kph = 50.0\n\n[[events]]", "speed_kph = 300.0\n\n[[events]]",
     ["actors[0].speed_kph", "[0, 252]"]),
    ("decel_mps2 = 6.0", "decel_mps2 = 6.0\nduration_s = inf", ["events[0].duration_s",
                                                                 "no setting of a brake"]),
    ('type = "brake"', 'type = "cut_in"', ["events[0].decel_mps2", "no setting of a cut_in"]),
])
def test_bad_values_give_one_line_naming_the_file_and_key(old, new, needles):
    msg = error_of(edit(BASE, old, new))
    for needle in needles:
        assert needle in msg, msg


def test_structure_errors():
    head = BASE.split("[[events]]")[0]
    assert "events: expected a list" in error_of("events = 3\n" + head)
    assert "events[0]: expected a table" in error_of("events = [1, 2]\n" + head)
    assert "road: expected a table" in error_of('road = "highway"\n')
    stall = edit(BASE, 'type = "brake"', 'type = "stall"').replace("decel_mps2 = 6.0",
                                                                  "duration_s = inf")
    assert math.isinf(from_text(stall).spec().events[0].duration_s)  # a stall may last forever


@pytest.mark.parametrize("data, needle", [
    (b"", "empty scenario file"),
    (b"# only a comment\n\n", "empty scenario file"),
    (b"\x00\x01binary\x00", "binary file"),
    (b"name = \"\xff\xfe\"", "not UTF-8"),
    (b"[road\nn_lanes = 2", "not valid TOML"),
    (b"a = 1\na = 2\n", "not valid TOML"),
    (b"x" * (loader.MAX_FILE_BYTES + 10), "larger than"),
])
def test_files_that_are_not_scenarios(tmp_path, data, needle):
    path = tmp_path / "bad.toml"
    path.write_bytes(data)
    with pytest.raises(ScenarioError) as err:
        load(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and needle in msg and "\n" not in msg
    with pytest.raises(ScenarioError, match="cannot read"):
        load(tmp_path / "missing.toml")


SWEPT = BASE + """
[sweep]
"ego.speed_kph" = { from = 10, to = 30, step = 10 }
actors.target.gap_m = [12.0, 40.0]
"events[0].decel_mps2" = [2.0, 6.0]
"""


def test_a_sweep_expands_into_numbered_cases_in_grid_order_with_derived_seeds():
    sc = from_text(SWEPT)
    assert sc.n_cases == 3 * 2 * 2 and sc.has_sweep
    assert [p for p, _ in sc.axes] == ["ego.speed_kph", "actors.target.gap_m",
                                       "events[0].decel_mps2"]
    first, last = sc.spec(0), sc.spec(11)
    assert first.case_params == (("ego.speed_kph", 10), ("actors.target.gap_m", 12.0),
                                 ("events[0].decel_mps2", 2.0))
    assert dict(sc.spec(1).case_params)["events[0].decel_mps2"] == 6.0  # last axis fastest
    assert last.ego.speed_mps == pytest.approx(30 / 3.6) and last.actors[0].gap_m == 40.0
    seeds = [sc.spec(i).seed for i in range(sc.n_cases)]
    assert len(set(seeds)) == sc.n_cases and seeds[3] == derive_seed(7, 3)
    assert seeds == [from_text(SWEPT).spec(i).seed for i in range(sc.n_cases)]  # same every time
    assert sc.spec(5, seed=99).seed == derive_seed(99, 5)
    assert sc.spec(5, duration_s=2.0).duration_s == 2.0
    assert "sweep case 12" not in sc.describe_axes()
    with pytest.raises(ScenarioError, match=r"case 12 does not exist \(cases 0..11\)"):
        sc.spec(12)


def test_sweep_ranges_paths_and_twins():
    doc = edit(BASE, "speed_kph = 50.0\ndriver", "speed_mps = 10.0\ndriver")
    sc = from_text(doc + '[sweep]\n"ego.speed_kph" = {from = 0.5, to = 1.5, step = 0.25}\n')
    assert [v for _, (v,) in [(0, (dict(s.case_params)["ego.speed_kph"],)) for s in sc.specs]] \
        == [0.5, 0.75, 1.0, 1.25, 1.5]  # inclusive, no float drift; the m/s twin is replaced
    by_index = from_text(BASE + '[sweep]\n"actors[0].gap_m" = [3.0, 4.0]\n')
    by_name = from_text(BASE + '[sweep]\nactors.target.gap_m = [3.0, 4.0]\n')
    assert [s.actors[0].gap_m for s in by_index.specs] == [s.actors[0].gap_m
                                                           for s in by_name.specs]


@pytest.mark.parametrize("sweep, needles", [
    ('"foo.bar" = [1, 2]', ['sweep."foo.bar"', "a key path into a section"]),
    ('"ego.speed_kph" = {from = 1, to = 5, step = 0}', ["step", "a positive number"]),
    ('"ego.speed_kph" = {from = 5, to = 1, step = 1}', [".to", ">= from"]),
    ('"ego.speed_kph" = {from = 0, to = 5000, step = 1}', ["at most 1000 values"]),
    ('"ego.speed_kph" = {from = 0, to = 99, step = 1}\n"ego.station_m" = '
     '{from = 0, to = 200, step = 1}', ["sweep", "at most 10000 cases"]),
    ('"actors[3].gap_m" = [1, 2]', ["actors[3].gap_m", "an existing element"]),
    ('"actors.nobody.gap_m" = [1, 2]', ["an element of actors named 'nobody'"]),
    ('"ego.speed_kph" = []', ["a list of 1..1000 values"]),
    ('"ego.speed_kph" = [[1]]', ['"ego.speed_kph"[0]', "a number, string or boolean"]),
    ('"ego.spead_kph" = [1, 2]', ["sweep case 0 (ego.spead_kph=1)", "ego.spead_kph",
                                  "did you mean"]),
    ('"events[0].decel_mps2" = [2.0, 20.0]', ["sweep case 1 (events[0].decel_mps2=20)",
                                              "events[0].decel_mps2", "(0, 9]"]),
])
def test_sweep_errors(sweep, needles):
    msg = error_of(BASE + "[sweep]\n" + sweep + "\n")
    for needle in needles:
        assert needle in msg, msg
    assert "sweep: expected at least one" in error_of(BASE + "[sweep]\n")


def test_derived_seeds_are_stable_numbers():
    # SeedSequence is specified to be the same on every platform and numpy version
    assert derive_seed(0, 0) == derive_seed(0, 0) != derive_seed(0, 1)
    assert 0 <= derive_seed(2**62, 10**6) < 2**63


# ---- fuzzing: nothing but a Scenario or a ScenarioError ---------------------------------


def _outcome(make):
    try:
        sc = make()
    except ScenarioError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "Traceback" not in msg
        return None
    assert sc.n_cases >= 1 and all(isinstance(s, WorldSpec) for s in sc.specs)
    return sc


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.binary(max_size=3000))
def test_fuzz_random_bytes(data):
    _outcome(lambda: from_text(data, "fuzz.toml"))


@FUZZ
@given(st.text(max_size=500))
def test_fuzz_random_text(text):
    _outcome(lambda: from_text(text, "fuzz.toml"))


_KEYS = ["type", "name", "lane", "speed_kph", "speed_mps", "gap_m", "ttc_s", "decel_mps2",
         "actor", "at_s", "when_gap_m", "n_lanes", "length_m", "flow_vph_per_lane", "sweep",
         "overlap_pct", "duration_s", "driver", "mean", "std", "pieces", "to_lane", "after"]
_scalars = st.one_of(
    st.integers(min_value=-2**63, max_value=2**63 - 1), st.floats(allow_nan=True),
    st.booleans(), st.text(max_size=12), st.sampled_from(["target", "ego", "cruise", "b",
                                                         "cut_in", "brake", "idm", "left"]),
    st.dates(), st.datetimes())
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=6)), inner,
                    max_size=4)), max_leaves=12)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_documents(draw):
    """A valid scenario (with a sweep sometimes) with a few random edits: values replaced,
    keys deleted or added, anywhere in the tree."""
    import tomllib

    doc = tomllib.loads(draw(st.sampled_from([BASE, SWEPT])))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(_values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(_KEYS))] = draw(_values)
    return doc


@FUZZ
@given(mutated_documents())
def test_fuzz_mutated_documents(doc):
    _outcome(lambda: from_document(doc, "fuzz.toml", "fuzz"))


def _toml(value) -> str:
    """A TOML inline value (enough for the fuzzer's documents)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, (int, datetime.date)):
        return value.isoformat() if isinstance(value, datetime.date) else str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"


@FUZZ
@given(mutated_documents())
def test_fuzz_mutated_documents_as_text(doc):
    text = "\n".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in doc.items())
    _outcome(lambda: from_text(text, "fuzz.toml"))


# ---- the docs cover every key the loader accepts ----------------------------------------


def accepted_keys() -> set[str]:
    keys = {f.name for f in dataclasses.fields(WorldSpec)} - {"case", "case_params",
                                                              "intersection"}
    keys |= {"sweep", "type", *loader.TRAFFIC_KEYS, *DriverDist.FIELDS}
    for kind in RoadSpec.BUILDERS:
        if "intersection" not in kind:
            keys |= set(inspect.signature(getattr(road_mod, kind)).parameters)
    for cls in (EgoSpec, ActorSpec, EventSpec):
        keys |= {f.name for f in dataclasses.fields(cls)}
    return keys


def test_docs_describe_every_key():
    text = DOCS.read_text()
    missing = sorted(k for k in accepted_keys() if not re.search(rf"`{re.escape(k)}`", text))
    assert not missing, f"docs/scenarios.md does not describe: {missing}"
