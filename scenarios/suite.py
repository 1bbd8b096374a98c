"""The shipped scenario suite: names, descriptions, case counts and groups such as `ncap`.

Every shipped scenario is a file scenarios/<name>.toml (its description lives in the file). A
*suite* is a group name (GROUPS), a shipped scenario's name, or a path to a .toml file; it
resolves to a list of Scenarios, and `episodes` turns it into WorldSpecs with deterministic
seeds, for the safety benchmark and the training data.
"""

from __future__ import annotations

import functools
from pathlib import Path

from scenarios.loader import Scenario, ScenarioError, derive_seed, load
from sim.spec import WorldSpec

SUITE_DIR = Path(__file__).resolve().parent
# listing order of the shipped scenarios; files not named here follow alphabetically
ORDER = ("highway_cruise", "dense_traffic", "stop_and_go", "on_ramp_merge", "cut_in",
         "lead_brake", "stationary_target", "slower_target", "urban_intersection")
GROUPS = {
    "ncap": ("stationary_target", "slower_target", "lead_brake"),
    "highway": ("highway_cruise", "dense_traffic", "stop_and_go", "on_ramp_merge"),
}
GROUP_DESCRIPTIONS = {
    "ncap": "Euro NCAP AEB car-to-car rear: CCRs, CCRm and CCRb",
    "highway": "background traffic: cruising, dense, stop-and-go, on-ramp merge",
    "all": "every shipped scenario",
}


def shipped() -> list[str]:
    """Names of the shipped scenarios, in listing order."""
    names = {p.stem for p in SUITE_DIR.glob("*.toml")}
    return [n for n in ORDER if n in names] + sorted(names - set(ORDER))


def groups() -> dict[str, tuple[str, ...]]:
    """Group name -> scenario names (only shipped ones), `all` included."""
    have = set(shipped())
    out = {g: tuple(n for n in names if n in have) for g, names in GROUPS.items()}
    out["all"] = tuple(shipped())
    return out


@functools.lru_cache(maxsize=64)
def _load_shipped(name: str) -> Scenario:
    return load(SUITE_DIR / f"{name}.toml")


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name, or a scenario file by path (ScenarioError otherwise)."""
    text = str(name_or_path)
    if text in shipped():
        return _load_shipped(text)
    path = Path(text)
    if path.suffix == ".toml" or path.is_file() or "/" in text:
        if path.suffix.lower() == ".npz":
            raise ScenarioError(f"{text}: a track file, not a scenario file")
        return load(path)
    known = ", ".join(shipped())
    raise ScenarioError(f"unknown scenario '{text}': expected a shipped scenario ({known}) "
                        "or a path to a .toml file")


def resolve(suite: str | Path) -> list[Scenario]:
    """The scenarios of a suite: a group, a shipped scenario or a .toml path."""
    text = str(suite)
    table = groups()
    if text in table:
        return [_load_shipped(n) for n in table[text]]
    try:
        return [load_scenario(text)]
    except ScenarioError as exc:
        if text in shipped() or Path(text).suffix == ".toml" or "/" in text:
            raise
        raise ScenarioError(f"unknown suite '{text}': expected a group ({', '.join(table)}), "
                            f"a shipped scenario ({', '.join(shipped())}), a path to a "
                            ".toml file or a recording to replay (.npz track file, NGSIM "
                            ".csv / .csv.gz)") from exc


def episodes(suite: str | Path, repeats: int = 1,
             duration_s: float | None = None) -> list[WorldSpec]:
    """Every case of every scenario of a suite, `repeats` times: repetition 0 runs with the
    case's own seed, repetition r > 0 with seeds derived from (the file's seed, r), so
    episodes differ in their background traffic and are the same from run to run."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    out = []
    for sc in resolve(suite):
        for case in range(sc.n_cases):
            for r in range(repeats):
                seed = None if r == 0 else derive_seed(sc.seed, r)
                out.append(sc.spec(case, seed=seed, duration_s=duration_s))
    return out
