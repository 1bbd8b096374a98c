"""Scenario files (TOML) -> sim.spec.WorldSpec, validated, with sweeps expanded into cases.

A scenario file holds the top-level keys name, description, duration_s, dt_s, seed and the
tables [road], [traffic] (with [traffic.car] and [traffic.truck]), [ego], [[actors]],
[[events]], [intersection] and [sweep]; docs/scenarios.md documents every key. Sections map
onto the sim.spec dataclasses field by field: the dataclasses own the ranges and cross-checks
(FieldError), this module owns the file: reading, types, unknown keys, km/h twins of every
*_mps key, sweeps and error messages.

Every problem becomes a ScenarioError whose text is one line: the file, the key path (e.g.
`events[2].decel_mps2`) and what was expected, e.g.
    lead_brake.toml: events[0].decel_mps2: expected a number in (0, 9], got 12
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import itertools
import math
import numbers
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim import road as road_mod
from sim import spec as spec_mod
from sim.spec import CAR, TRUCK, Dist, DriverDist, FieldError, RoadSpec, TrafficSpec, WorldSpec
from sim.world import make_world

MAX_FILE_BYTES = 1 << 20
MAX_CASES = 10_000
MAX_AXIS_VALUES = 1_000
MAX_LIST = 64  # longest list a setting may hold (per-lane values, phases, ...)
ROAD_PARAM_LIMITS = {"ds_m": (0.5, 50.0)}  # road builder parameters the builders leave open
KPH_PER_MPS = 3.6

# physical bounds of the per-driver distributions: draws are clipped to [lo, hi] inside these
DIST_LIMITS = {
    "v0_mps": (1.0, 70.0), "time_gap_s": (0.3, 5.0), "min_gap_m": (0.5, 10.0),
    "max_accel_mps2": (0.2, 5.0), "comf_decel_mps2": (0.5, 9.0), "politeness": (0.0, 1.0),
    "safe_decel_mps2": (0.5, 9.0), "accel_threshold_mps2": (0.0, 2.0),
    "length_m": (2.0, 25.0), "width_m": (1.0, 3.5), "lane_change_s": (1.0, 10.0),
}
TRAFFIC_KEYS = ("flow_vph_per_lane", "ramp_flow_vph", "truck_share", "min_headway_s",
                "initial_fill", "density_vpkm_per_lane", "car", "truck")
# WorldSpec fields a file may not set (the loader fills them)
_INTERNAL = ("case", "case_params")
_MISSING = object()
_FILE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_PATH_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)((?:\[\d+\])*)")


class ScenarioError(ValueError):
    """A scenario that cannot be used. The text is one line naming the file (or scenario),
    the key path and what was expected."""


def derive_seed(*keys: int) -> int:
    """A seed in [0, 2**63) derived from integers (numpy SeedSequence: independent streams,
    the same on every platform), e.g. derive_seed(base_seed, case, repetition)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return int(((int(state[0]) << 32) | int(state[1])) & (2**63 - 1))


def unit_of(key: str) -> str:
    """The unit a key's name carries (`decel_mps2` -> m/s^2), '' if none."""
    for suffix, unit in (("_mps2", "m/s^2"), ("_mps", "m/s"), ("_kph", "km/h"),
                         ("_vph_per_lane", "veh/h/lane"), ("_vph", "veh/h"),
                         ("_vpkm_per_lane", "veh/km/lane"), ("_pct", "%"), ("_deg", "deg"),
                         ("_1pm", "1/m"), ("_m", "m"), ("_s", "s")):
        if key.endswith(suffix):
            return unit
    return ""


# ---- reading -------------------------------------------------------------------------------


def read_document(path: str | Path) -> dict:
    """The parsed TOML document of a scenario file (ScenarioError if it is not one)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return parse_document(data, str(path))


def parse_document(data: bytes | str, where: str) -> dict:
    """Parse scenario text (bytes or str); `where` names it in errors."""
    if isinstance(data, bytes):
        if len(data) > MAX_FILE_BYTES:
            raise ScenarioError(f"{where}: larger than {MAX_FILE_BYTES} bytes: not a scenario")
        if b"\x00" in data:
            raise ScenarioError(f"{where}: a binary file, expected TOML text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScenarioError(f"{where}: not UTF-8 text (byte {exc.start}), expected "
                                "TOML") from None
    else:
        text = data
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise ScenarioError(f"{where}: not valid TOML: nested too deeply") from None
    if not doc:
        raise ScenarioError(f"{where}: empty scenario file: expected at least one setting "
                            "(see docs/scenarios.md)")
    return doc


# ---- the scenario: a document and its sweep ------------------------------------------------


@dataclass(frozen=True, eq=False)
class Scenario:
    """A validated scenario file: its document, its sweep axes and one WorldSpec per case.

    axes: (key path, values) in declaration order; case i is the i-th element of their
    product, first axis slowest. Without a sweep there is one case (number 0) and its seed is
    the file's; with one, case i runs with derive_seed(seed, i).
    """

    name: str
    description: str
    where: str  # the file path (or a label) errors name
    doc: dict
    axes: tuple[tuple[str, tuple], ...]
    seed: int
    specs: tuple[WorldSpec, ...]

    @property
    def n_cases(self) -> int:
        return len(self.specs)

    @property
    def has_sweep(self) -> bool:
        return bool(self.axes)

    def case_params(self, case: int) -> tuple[tuple[str, object], ...]:
        """(key path, value) of each swept key in case `case`."""
        return self.specs[self._check_case(case)].case_params

    def spec(self, case: int = 0, seed: int | None = None,
             duration_s: float | None = None) -> WorldSpec:
        """The WorldSpec of a case; seed replaces the file's seed (cases still derive theirs
        from it), duration_s the file's duration."""
        spec = self.specs[self._check_case(case)]
        changes = {}
        if seed is not None:
            changes["seed"] = derive_seed(seed, case) if self.has_sweep else int(seed)
        if duration_s is not None:
            changes["duration_s"] = float(duration_s)
        try:
            return dataclasses.replace(spec, **changes) if changes else spec
        except ValueError as exc:
            raise ScenarioError(f"{self.where}: {_one_line(str(exc))}") from None

    def _check_case(self, case: int) -> int:
        if (not isinstance(case, numbers.Integral) or isinstance(case, bool)
                or not 0 <= case < self.n_cases):
            raise ScenarioError(f"{self.where}: case {case} does not exist (cases 0.."
                                f"{self.n_cases - 1})")
        return int(case)

    def describe_axes(self) -> str:
        """The sweep in one line, e.g. 'ego.speed_kph 10..80 step 5 (15 values) x ...'."""
        parts = []
        for path, values in self.axes:
            steps = np.diff(values) if all(_is_number(v) for v in values) else [0.0]
            if len(values) > 4 and steps[0] > 0 and np.allclose(steps, steps[0]):
                parts.append(f"{path} {values[0]:g}..{values[-1]:g} step {steps[0]:g} "
                             f"({len(values)} values)")
            else:
                parts.append(f"{path} [{', '.join(_fmt(v) for v in values)}]")
        return " x ".join(parts)


def load(path: str | Path, name: str | None = None) -> Scenario:
    """Read, validate and expand a scenario file (every case is checked)."""
    path = Path(path)
    return from_document(read_document(path), str(path), name or path.stem)


def from_text(text: str | bytes, where: str = "<scenario>", name: str = "scenario") -> Scenario:
    """A Scenario from TOML text (for tests and tools); `where` names it in errors."""
    return from_document(parse_document(text, where), where, name)


def from_document(doc: dict, where: str, default_name: str) -> Scenario:
    """Validate a parsed document and expand its sweep into one WorldSpec per case."""
    if not isinstance(doc, dict):
        raise ScenarioError(f"{where}: expected a TOML document")
    base = {k: v for k, v in doc.items() if k != "sweep"}
    axes = _parse_sweep(doc.get("sweep", _MISSING), base, where)
    roads: dict[str, road_mod.Road] = {}
    if not _FILE_NAME_RE.fullmatch(default_name):
        default_name = re.sub(r"[^A-Za-z0-9_.\-]", "_", default_name)[:64] or "scenario"
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not _FILE_NAME_RE.fullmatch(name):
        # checked here too so a bad name is reported as such, not as a bad default
        _fail(where, "name", "a name of letters, digits, _, - or . (at most 64)", name)
    base_seed = base.get("seed", 0)
    specs = []
    combos = list(itertools.product(*(values for _, values in axes))) if axes else [()]
    for case, combo in enumerate(combos):
        case_doc = base
        params = tuple((path, value) for (path, _), value in zip(axes, combo))
        if axes:
            case_doc = copy.deepcopy(base)
            for path, value in params:
                _set_path(case_doc, path, value)
        label = where if not axes else f"{where}: sweep case {case} (" + ", ".join(
            f"{p}={_fmt(v)}" for p, v in params) + ")"
        spec = build_spec(case_doc, label, name, roads)
        if axes:
            seed = spec.seed if any(p == "seed" for p, _ in axes) else base_seed
            spec = dataclasses.replace(spec, seed=derive_seed(seed, case), case=case,
                                       case_params=params)
        specs.append(spec)
    description = specs[0].description
    return Scenario(name=name, description=description, where=where, doc=doc, axes=axes,
                    seed=specs[0].seed if not axes else int(base_seed), specs=tuple(specs))


# ---- one document -> one WorldSpec ---------------------------------------------------------


def build_spec(doc: dict, where: str, default_name: str,
               roads: dict[str, road_mod.Road] | None = None) -> WorldSpec:
    """A WorldSpec from one (sweep-free) document, checked against its road."""
    fields = {f.name: f for f in dataclasses.fields(WorldSpec) if f.name not in _INTERNAL}
    _check_keys(where, "", doc, [*fields, "sweep"])
    hints = typing.get_type_hints(WorldSpec)
    kwargs: dict = {"name": default_name}
    for key, value in doc.items():
        if key == "road":
            kwargs[key] = _road(where, value)
        elif key == "traffic":
            kwargs[key] = _traffic(where, value)
        elif key == "ego":
            kwargs[key] = _ego(where, value)
        else:
            kwargs[key] = _convert(where, key, value, hints[key])
    try:
        spec = WorldSpec(**kwargs)
    except FieldError as exc:
        _fail(where, exc.field, exc.expected, _lookup(doc, exc.field))
    except ValueError as exc:
        _fail_message(where, "", exc, doc, list(fields))
    _check_world(spec, doc, where, roads if roads is not None else {})
    return spec


def _check_world(spec: WorldSpec, doc: dict, where: str, roads: dict) -> None:
    """What needs the road: it builds, and the ego, actors, events and flows fit on it."""
    key = repr((spec.road.kind, sorted(spec.road.params.items())))
    road = roads.get(key)
    if road is None:
        try:
            road = spec.road.build()
        except (ValueError, TypeError, ArithmeticError, IndexError, MemoryError) as exc:
            params = list(inspect.signature(getattr(road_mod, spec.road.kind)).parameters)
            _fail_message(where, "road", exc, doc.get("road", {}), params)
        roads[key] = road
    try:
        make_world(spec, road)
    except FieldError as exc:
        path = exc.field.replace("traffic.lane_flows_vph", "traffic.flow_vph_per_lane")
        _fail(where, path, exc.expected, _lookup(doc, path))
    except ValueError as exc:
        _fail(where, "road", _one_line(str(exc)))


def _road(where: str, table) -> RoadSpec:
    _require_table(where, "road", table)
    kind = table.get("type", RoadSpec.kind)
    if kind not in RoadSpec.BUILDERS:
        _fail(where, "road.type", "one of " + ", ".join(RoadSpec.BUILDERS), kind)
    params = inspect.signature(getattr(road_mod, kind)).parameters
    _check_keys(where, "road", table, ["type", *params])
    out = {}
    for key, value in table.items():
        if key == "type":
            continue
        hint = str(params[key].annotation)
        path = f"road.{key}"
        if key in ROAD_PARAM_LIMITS:
            lo, hi = ROAD_PARAM_LIMITS[key]
            if not _is_number(value) or not lo <= value <= hi:
                _fail(where, path, f"a number in [{lo:g}, {hi:g}] {unit_of(key)}", value)
        if re.fullmatch(r"int", hint):
            out[key] = _integer(where, path, value)
        elif re.fullmatch(r"float", hint):
            out[key] = _float(where, path, value)
        elif "list" in hint or "tuple" in hint:
            out[key] = _nested_numbers(where, path, value)
        elif hint == "bool":
            out[key] = _bool(where, path, value)
        elif hint == "str":
            out[key] = _string(where, path, value)
        else:
            out[key] = value
    return RoadSpec(kind, out)


def _traffic(where: str, table) -> TrafficSpec:
    _require_table(where, "traffic", table)
    _check_keys(where, "traffic", table, list(TRAFFIC_KEYS))
    kwargs: dict = {}
    for key, value in table.items():
        path = f"traffic.{key}"
        if key in ("flow_vph_per_lane", "density_vpkm_per_lane"):
            if isinstance(value, list):
                values = tuple(_float(where, f"{path}[{i}]", v) for i, v in enumerate(value))
                if not 1 <= len(values) <= MAX_LIST:
                    _fail(where, path, f"a number or a list of 1..{MAX_LIST} numbers", value)
            else:
                values = (_float(where, path, value),)
            if key == "density_vpkm_per_lane":
                kwargs[key] = values
            elif isinstance(value, list):
                kwargs["lane_flows_vph"] = values
                kwargs[key] = max(values)
            else:
                kwargs[key] = values[0]
        elif key in ("car", "truck"):
            kwargs[key] = _driver_dist(where, path, value, CAR if key == "car" else TRUCK)
        elif key == "initial_fill":
            kwargs[key] = _bool(where, path, value)
        else:
            kwargs[key] = _float(where, path, value)
    try:
        return TrafficSpec(**kwargs)
    except FieldError as exc:
        field_name = exc.field.replace("lane_flows_vph", "flow_vph_per_lane")
        _fail(where, f"traffic.{field_name}", exc.expected,
              _lookup(table, field_name))
    except ValueError as exc:
        _fail_message(where, "traffic", exc, table, list(TRAFFIC_KEYS))


def _driver_dist(where: str, path: str, table, default: DriverDist) -> DriverDist:
    _require_table(where, path, table)
    _check_keys(where, path, table, list(DriverDist.FIELDS))
    values = {f: getattr(default, f) for f in DriverDist.FIELDS}
    for key, value in table.items():
        field_name, scale = _twin(key)
        lo_phys, hi_phys = DIST_LIMITS[field_name]
        values[field_name] = _dist(where, f"{path}.{key}", value, lo_phys * scale,
                                   hi_phys * scale, unit_of(key), 1.0 / scale)
    return DriverDist(**values)


def _dist(where: str, path: str, value, lo_phys: float, hi_phys: float, unit: str,
          to_si: float) -> Dist:
    """A number (a constant) or a table {mean, std, lo, hi} (std 0, lo and hi the physical
    bounds when not given), in the key's unit; returned in SI units."""
    rng = f"[{lo_phys:g}, {hi_phys:g}]{' ' + unit if unit else ''}"
    if _is_number(value):
        mean = _float(where, path, value)
        if not lo_phys <= mean <= hi_phys:
            _fail(where, path, f"a number in {rng}", value)
        return Dist(mean * to_si, 0.0, lo_phys * to_si, hi_phys * to_si)
    if not isinstance(value, dict):
        _fail(where, path, "a number or a table {mean, std, lo, hi}", value)
    _check_keys(where, path, value, ["mean", "std", "lo", "hi"])
    if "mean" not in value:
        _fail(where, f"{path}.mean", "a value: the mean is required")
    got = {k: _float(where, f"{path}.{k}", value[k]) for k in value}
    mean, std = got["mean"], got.get("std", 0.0)
    lo, hi = got.get("lo", lo_phys), got.get("hi", hi_phys)
    for k, v in (("lo", lo), ("hi", hi), ("mean", mean)):
        if not lo_phys <= v <= hi_phys:
            _fail(where, f"{path}.{k}", f"a number in {rng}", v)
    if not lo <= mean <= hi:
        _fail(where, f"{path}.mean", f"lo <= mean <= hi ({lo:g} <= {mean:g} <= {hi:g} fails)")
    if not 0.0 <= std <= hi_phys - lo_phys:
        _fail(where, f"{path}.std", f"a number in [0, {hi_phys - lo_phys:g}]", std)
    return Dist(mean * to_si, std * to_si, lo * to_si, hi * to_si)


def _ego(where: str, table) -> spec_mod.EgoSpec:
    ego = _dataclass(where, "ego", table, spec_mod.EgoSpec)
    given = _given(table)
    if "desired_speed_mps" not in given and "speed_mps" in given and ego.speed_mps > 0:
        ego = dataclasses.replace(ego, desired_speed_mps=ego.speed_mps)
    return ego


def _dataclass(where: str, path: str, table, cls):
    """Build dataclass `cls` from a table, field by field; FieldError -> key path."""
    _require_table(where, path, table)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    _check_keys(where, path, table, names)
    kwargs = {}
    for key, value in table.items():
        field_name, scale = _twin(key)
        hint = hints[field_name]
        converted = _convert(where, f"{path}.{key}", value, hint,
                             allow_inf=cls is spec_mod.EventSpec and field_name == "duration_s")
        if scale != 1.0 and converted is not None:
            converted = converted / scale
        kwargs[field_name] = converted
    missing = [f.name for f in dataclasses.fields(cls)
               if f.init and f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ScenarioError(f"{where}: {path}.{missing[0]}: missing (a required key)")
    try:
        return cls(**kwargs)
    except FieldError as exc:
        base = exc.field.split("[")[0].split(".")[0]
        key = base if base in table else next((k for k in table if _twin(k)[0] == base), base)
        shown = exc.field.replace(base, key, 1)
        expected = exc.expected
        if key != base and key.endswith("_kph"):
            expected = _scaled_ranges(expected, KPH_PER_MPS)
        _fail(where, f"{path}.{shown}", expected, _lookup(table, shown))
    except (ValueError, TypeError) as exc:
        _fail_message(where, path, exc, table, names)


def _convert(where: str, path: str, value, hint, allow_inf: bool = False):
    """A TOML value converted to the type a dataclass field is annotated with."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, _UNION_TYPE):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(where, path, value, options[0], allow_inf)
    if hint is float:
        return _float(where, path, value, allow_inf)
    if hint is int:
        return _integer(where, path, value)
    if hint is bool:
        return _bool(where, path, value)
    if hint is str:
        return _string(where, path, value)
    if origin is tuple and args and args[-1] is Ellipsis:
        item = args[0]
        if not isinstance(value, list):
            _fail(where, path, "a list", value)
        if len(value) > MAX_LIST * 16:
            _fail(where, path, f"at most {MAX_LIST * 16} items", value)
        return tuple(_convert(where, f"{path}[{i}]", v, item) for i, v in enumerate(value))
    if hint is tuple or origin is tuple:
        return _nested_numbers(where, path, value, as_tuple=True)
    if dataclasses.is_dataclass(hint):
        return _dataclass(where, path, value, hint)
    if hint is dict:
        _require_table(where, path, value)
        return dict(value)
    _fail(where, path, f"a value of type {hint}", value)


_UNION_TYPE = type(int | None)


# ---- sweeps --------------------------------------------------------------------------------


def _parse_sweep(table, base: dict, where: str) -> tuple[tuple[str, tuple], ...]:
    """The sweep's axes: (key path, values), in declaration order."""
    if table is _MISSING:
        return ()
    _require_table(where, "sweep", table)
    leaves: list[tuple[str, object]] = []
    _flatten_sweep(table, "", leaves)
    if not leaves:
        _fail(where, "sweep", "at least one key path with values, e.g. "
                              "\"ego.speed_kph\" = {from = 10, to = 80, step = 5}")
    axes = []
    seen = set()
    total = 1
    for path, spec in leaves:
        at = f'sweep."{path}"'
        _resolve_path(base, path, where, at)
        if path in seen:
            _fail(where, at, "each key path once")
        seen.add(path)
        if isinstance(spec, list):
            if not 1 <= len(spec) <= MAX_AXIS_VALUES:
                _fail(where, at, f"a list of 1..{MAX_AXIS_VALUES} values", spec)
            for i, v in enumerate(spec):
                if not (_is_number(v) or isinstance(v, (str, bool))):
                    _fail(where, f"{at}[{i}]", "a number, string or boolean", v)
            values = tuple(spec)
        else:
            values = _sweep_range(where, at, spec)
        total *= len(values)
        if total > MAX_CASES:
            _fail(where, "sweep", f"at most {MAX_CASES} cases in all (the product of the axes)")
        axes.append((path, values))
    return tuple(axes)


def _flatten_sweep(table: dict, prefix: str, out: list) -> None:
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and not (value and set(value) <= {"from", "to", "step"}):
            _flatten_sweep(value, path, out)
        else:
            out.append((path, value))


def _sweep_range(where: str, at: str, spec) -> tuple:
    if not isinstance(spec, dict):
        _fail(where, at, "a list of values or a table {from, to, step}", spec)
    for key in ("from", "to", "step"):
        if key not in spec:
            _fail(where, f"{at}.{key}", "a number: from, to and step are all required")
    lo, hi, step = (_float(where, f"{at}.{k}", spec[k]) for k in ("from", "to", "step"))
    if not step > 0:
        _fail(where, f"{at}.step", "a positive number", spec["step"])
    if hi < lo:
        _fail(where, f"{at}.to", f"a number >= from ({lo:g})", spec["to"])
    n = int(math.floor((hi - lo) / step + 1e-9)) + 1
    if n > MAX_AXIS_VALUES:
        _fail(where, at, f"at most {MAX_AXIS_VALUES} values ({n} asked)")
    ints = all(isinstance(spec[k], int) for k in ("from", "to", "step"))
    return tuple(int(lo) + i * int(step) if ints else round(lo + i * step, 10)
                 for i in range(n))


def _split_path(path: str, where: str, at: str) -> list[tuple[str, list[int]]]:
    parts = []
    for segment in path.split("."):
        m = _PATH_RE.fullmatch(segment)
        if not m:
            _fail(where, at, "a key path like ego.speed_kph, actors[0].gap_m or "
                             "events.NAME.decel_mps2")
        parts.append((m.group(1), [int(i) for i in re.findall(r"\d+", m.group(2))]))
    return parts


def _resolve_path(doc: dict, path: str, where: str, at: str) -> None:
    """Check that a sweep path names a setting reachable in the document."""
    _walk(doc, path, where, at, create=False)


def _set_path(doc: dict, path: str, value) -> None:
    node, key = _walk(doc, path, "", "", create=True)
    twin = key[:-4] + "_mps" if key.endswith("_kph") else (
        key[:-4] + "_kph" if key.endswith("_mps") else None)
    if twin is not None:
        node.pop(twin, None)
    node[key] = value


def _walk(doc: dict, path: str, where: str, at: str, create: bool):
    """The table holding a path's last key, and that key. Array-of-table sections (actors,
    events) are entered by [index] or by an element's name."""
    parts = _split_path(path, where, at)
    node = doc
    i = 0
    while i < len(parts) - 1:
        key, indices = parts[i]
        child = node.get(key, _MISSING)
        if isinstance(child, list):
            if not indices:
                name = parts[i + 1][0]
                found = [e for e in child if isinstance(e, dict) and e.get("name") == name]
                if len(found) != 1:
                    _fail(where, at, f"an element of {key} named '{name}'")
                node = found[0]
                i += 2
                continue
            for n in indices:
                if not isinstance(child, list) or n >= len(child):
                    _fail(where, at, f"an existing element ({key} has "
                                     f"{len(child) if isinstance(child, list) else 0})")
                child = child[n]
        elif indices:
            _fail(where, at, f"[index] only on arrays of tables ({key} is not one)")
        if child is _MISSING:
            if not create:
                if i == 0 and key not in _SECTIONS:
                    _fail(where, at, f"a key path into a section ({', '.join(_SECTIONS)})")
                child = {}
            else:
                child = node.setdefault(key, {})
        if not isinstance(child, dict):
            _fail(where, at, f"a path through tables ({key} is not a table)")
        node = child
        i += 1
    key, indices = parts[-1]
    if indices:
        _fail(where, at, "a path ending in a setting's key, not an array element")
    return node, key


_SECTIONS = ("road", "traffic", "ego", "actors", "events", "intersection")


# ---- value checks --------------------------------------------------------------------------


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _float(where: str, path: str, value, allow_inf: bool = False) -> float:
    if not _is_number(value) or math.isnan(value) or (math.isinf(value) and not allow_inf):
        _fail(where, path, "a finite number" if not allow_inf else "a number (inf allowed)",
              value)
    return float(value)


def _integer(where: str, path: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(where, path, "an integer", value)
    return value


def _bool(where: str, path: str, value) -> bool:
    if not isinstance(value, bool):
        _fail(where, path, "true or false", value)
    return value


def _string(where: str, path: str, value) -> str:
    if not isinstance(value, str) or len(value) > 4000:
        _fail(where, path, "a string (at most 4000 characters)", value)
    return value


def _nested_numbers(where: str, path: str, value, as_tuple: bool = False, depth: int = 0):
    """A list (of lists) of finite numbers, e.g. curve pieces [[300, 0], [500, 800]]."""
    if _is_number(value) and depth > 0:
        return _float(where, path, value) if isinstance(value, float) else value
    if not isinstance(value, list) or depth > 2 or len(value) > MAX_LIST * 16:
        _fail(where, path, "a list of numbers (or of lists of numbers)", value)
    items = [_nested_numbers(where, f"{path}[{i}]", v, as_tuple, depth + 1)
             for i, v in enumerate(value)]
    return tuple(items) if as_tuple else items


def _require_table(where: str, path: str, value) -> None:
    if not isinstance(value, dict):
        _fail(where, path, "a table", value)


def _twin(key: str) -> tuple[str, float]:
    """(field name, km/h per field unit) of a key: x_kph is the km/h twin of x_mps."""
    if key.endswith("_kph"):
        return key[:-4] + "_mps", KPH_PER_MPS
    return key, 1.0


def _given(table: dict) -> set[str]:
    """Field names a table sets (a *_kph key sets its *_mps field)."""
    return {_twin(key)[0] for key in table}


def _check_keys(where: str, path: str, table: dict, allowed: list[str]) -> None:
    """Unknown keys, and a *_mps key given together with its *_kph twin, are errors."""
    seen: set[str] = set()
    for key in table:
        name = _twin(key)[0] if _twin(key)[0] in allowed else key
        at = f"{path}.{key}" if path else key
        if name not in allowed:
            known = allowed + [a[:-4] + "_kph" for a in allowed if a.endswith("_mps")]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            _fail(where, at, f"a known key ({hint}allowed here: {', '.join(allowed)})")
        if name in seen:
            _fail(where, at, f"either {name} or {name[:-4]}_kph, not both")
        seen.add(name)


def _lookup(doc, path: str):
    """The value at a key path of a document, _MISSING if absent."""
    node = doc
    try:
        for segment in path.split("."):
            m = _PATH_RE.fullmatch(segment)
            if m is None:
                return _MISSING
            key = m.group(1)
            if isinstance(node, dict) and key not in node:
                twin = key[:-4] + "_kph" if key.endswith("_mps") else None
                if twin and twin in node:
                    key = twin
            node = node[key]
            for n in re.findall(r"\d+", m.group(2)):
                node = node[int(n)]
        return node
    except (KeyError, IndexError, TypeError):
        return _MISSING


def _show(value) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if _is_number(value):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return f"a {type(value).__name__}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(where: str, path: str, expected: str, value=_MISSING) -> typing.NoReturn:
    got = "" if value is _MISSING else f", got {_show(value)}"
    raise ScenarioError(_one_line(f"{where}: {path}: expected {expected}{got}"))


def _fail_message(where: str, path: str, exc: Exception, table, keys: list[str]):
    """Map a dataclass/builder's plain ValueError to the key its message starts with."""
    text = _one_line(str(exc))
    for key in keys:
        if re.match(rf"\W*{re.escape(key)}\b", text) or re.search(rf"\b{re.escape(key)}\b",
                                                                   text):
            at = f"{path}.{key}" if path else key
            got = _lookup(table, key) if isinstance(table, dict) else _MISSING
            raise ScenarioError(_one_line(f"{where}: {at}: {text}"
                                          + ("" if got is _MISSING else f" (got {_show(got)})")))
    raise ScenarioError(f"{where}: {path or 'scenario'}: {text}")


def _scaled_ranges(text: str, factor: float) -> str:
    """'a number in [0, 70]' -> 'a number in [0, 252]' for factor 3.6 (m/s -> km/h)."""
    def scale(m):
        lo, hi = (float(v) * factor for v in (m.group(2), m.group(3)))
        return f"{m.group(1)}{lo:g}, {hi:g}{m.group(4)}"

    return re.sub(r"([\[(])(-?[\d.]+(?:e[+-]?\d+)?), (-?[\d.]+(?:e[+-]?\d+)?|inf)([\])])",
                  scale, text)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---- every setting of a spec, for `scenarios show` -----------------------------------------


def settings(spec: WorldSpec) -> list[tuple[str, object]]:
    """Every setting of a spec as (key path, value), defaults included, in file order.

    Values are plain Python (numbers, strings, lists; a distribution is a dict with mean,
    std, lo and hi), in the units the key names (unit_of)."""
    out: list[tuple[str, object]] = [("name", spec.name), ("description", spec.description),
                                     ("duration_s", spec.duration_s), ("dt_s", spec.dt_s),
                                     ("seed", spec.seed)]
    out.append(("road.type", spec.road.kind))
    params = inspect.signature(getattr(road_mod, spec.road.kind)).parameters
    for key, p in params.items():
        value = spec.road.params.get(key, p.default)
        if value is not None and value is not inspect.Parameter.empty:
            out.append((f"road.{key}", _plain(value)))
    t = spec.traffic
    out.append(("traffic.flow_vph_per_lane",
                list(t.lane_flows_vph) if t.lane_flows_vph else t.flow_vph_per_lane))
    for key in ("ramp_flow_vph", "truck_share", "min_headway_s", "initial_fill"):
        out.append((f"traffic.{key}", getattr(t, key)))
    if t.density_vpkm_per_lane:
        out.append(("traffic.density_vpkm_per_lane", list(t.density_vpkm_per_lane)))
    for cls in ("car", "truck"):
        dist = getattr(t, cls)
        for key in DriverDist.FIELDS:
            d = getattr(dist, key)
            out.append((f"traffic.{cls}.{key}", {"mean": d.mean, "std": d.std, "lo": d.lo,
                                                  "hi": d.hi}))
    if spec.ego is not None:
        out += _fields("ego", spec.ego)
    for i, a in enumerate(spec.actors):
        out += _fields(f"actors[{i}]", a)
        station_m, lateral_m = a.place(spec.ego)
        out.append((f"actors[{i}].placed_station_m", round(station_m, 4)))
        out.append((f"actors[{i}].placed_lateral_offset_m", round(lateral_m, 4)))
    for i, e in enumerate(spec.events):
        out += _fields(f"events[{i}]", e)
    if "intersection" in spec.road.kind and hasattr(spec, "intersection"):
        out += _fields("intersection", spec.intersection)
    return out


def _fields(path: str, obj) -> list[tuple[str, object]]:
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        if dataclasses.is_dataclass(value):
            out += _fields(f"{path}.{f.name}", value)
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            for i, v in enumerate(value):
                out += _fields(f"{path}.{f.name}[{i}]", v)
        else:
            out.append((f"{path}.{f.name}", _plain(value)))
    return out


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def format_value(key: str, value) -> str:
    """A setting's value with its unit, for people: '13.89 m/s (50 km/h)'."""
    unit = unit_of(key.split(".")[-1])
    if isinstance(value, dict) and set(value) == {"mean", "std", "lo", "hi"}:
        text = (f"mean {_num(value['mean'])}, sd {_num(value['std'])}, in "
                f"[{_num(value['lo'])}, {_num(value['hi'])}]")
        if unit == "m/s":
            text += f" {unit} (mean {value['mean'] * KPH_PER_MPS:.4g} km/h)"
        return f"{text} {unit}".rstrip() if unit != "m/s" else text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(format_value("", v) for v in value) + "]" + (
            f" {unit}" if unit else "")
    if _is_number(value):
        text = _num(value) + (f" {unit}" if unit else "")
        if unit == "m/s":
            text += f" ({value * KPH_PER_MPS:.4g} km/h)"
        return text
    return str(value)


def _num(value) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return str(value)
