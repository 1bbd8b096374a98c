"""Where forecasting data comes from: the simulated scenario suite, track files, NGSIM files.

Training (`train`) and the forecast benchmark (`benchmark predict`) read the same sources the
same way, as predictor.benchmark.Episode objects (truth + what predictors see), and split
them with the same rule (predictor/split.py), so the test episodes and vehicles are never
trained on. `sim` means the training episodes of the scenario suite, simulated now: every
scenario several times with derived seeds (deterministic), keyed "scenario[:case]:seed".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from predictor.benchmark import Episode, load_episode


def training_episodes(seeds: int = 8, max_duration_s: float = 120.0,
                      suite: str = "all") -> list:
    """WorldSpecs: every scenario of the suite `seeds` times (sweeps of 8+ cases up to 3x as
    often), each time with its own derived seed and, for sweeps, another case (spread over
    the sweep), capped at max_duration_s. Deterministic."""
    from scenarios.loader import derive_seed
    from scenarios.suite import resolve

    specs = []
    for sc in resolve(suite):
        for r in range(seeds * max(1, min(3, sc.n_cases // 8))):
            case = (r * 7919) % sc.n_cases
            spec = sc.spec(case, seed=derive_seed(sc.seed, 1000 + r))
            specs.append(replace(spec, duration_s=min(spec.duration_s, max_duration_s)))
    return specs


def _simulate(spec):
    from sim.world import make_world, run

    return run(make_world(spec)).tracks


def simulate_suite(seeds: int = 8, max_duration_s: float = 120.0, workers: int = 1,
                   progress: Callable[[int, int], None] | None = None,
                   suite: str = "all") -> list[Episode]:
    """Episodes of `training_episodes`, simulated now (the same whatever the worker count)."""
    specs = training_episodes(seeds, max_duration_s, suite)
    names = [f"sim:{spec.name}:{spec.seed}" for spec in specs]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_simulate, specs, chunksize=1)
            tracks = []
            for i, tr in enumerate(results):
                tracks.append(tr)
                if progress:
                    progress(i + 1, len(specs))
    else:
        tracks = []
        for i, spec in enumerate(specs):
            tracks.append(_simulate(spec))
            if progress:
                progress(i + 1, len(specs))
    return [Episode(name, tr, tr, "as recorded") for name, tr in zip(names, tracks)]


def load_sources(sources: Sequence[str], ngsim_inputs: str = "causal", sim_seeds: int = 8,
                 sim_duration_s: float = 120.0, workers: int = 1,
                 progress: Callable[[int, int], None] | None = None,
                 file_progress: bool = False) -> list[Episode]:
    """Episodes from `sim`, track files (.npz) and NGSIM CSVs (imported now; predictors see
    causally smoothed inputs unless ngsim_inputs is 'smoothed')."""
    out = []
    for src in sources:
        if src == "sim":
            out.extend(simulate_suite(sim_seeds, sim_duration_s, workers, progress))
        else:
            out.append(load_episode(src, ngsim_inputs, progress=file_progress))
    return out


def split_masks(episodes: Sequence[Episode], split: str, seed: int = 0) -> list:
    """Per episode, (N,) bool: the agents in `split` (the shared predictor/split.py rule)."""
    from predictor.split import agent_mask

    return [agent_mask(ep.truth, ep.path, split, seed) for ep in episodes]
