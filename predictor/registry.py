"""The one name -> predictor map used by the benchmark, the viewer, `run` and the avoidance.

    make_predictor("cv")                         # a sim.forecast.Predictor
    make_predictor("rnn", checkpoint="sim", k=6) # (once the RNN lands)

Every factory takes (checkpoint, k): `checkpoint` is a name or path for learned predictors
(baselines ignore it), `k` the number of modes a multimodal predictor returns (single-mode
predictors return K = 1 whatever k is). Add a predictor with one entry in PREDICTORS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sim.forecast import Predictor


@dataclass(frozen=True)
class Entry:
    factory: Callable[[str | None, int], Predictor]
    summary: str


def _cv(checkpoint: str | None, k: int) -> Predictor:
    from predictor.baselines import ConstantVelocity

    return ConstantVelocity()


def _ca(checkpoint: str | None, k: int) -> Predictor:
    from predictor.baselines import ConstantAcceleration

    return ConstantAcceleration()


def _ctrv(checkpoint: str | None, k: int) -> Predictor:
    from predictor.baselines import ConstantTurnRateVelocity

    return ConstantTurnRateVelocity()


def _kalman(checkpoint: str | None, k: int) -> Predictor:
    from predictor.baselines import KalmanFilter

    return KalmanFilter()


def _cv_multi(checkpoint: str | None, k: int) -> Predictor:
    from predictor.baselines import MultiModalCV

    return MultiModalCV(k=k)


def _rnn(checkpoint: str | None, k: int) -> Predictor:
    from predictor.rnn import RnnPredictor

    return RnnPredictor.load(checkpoint or "sim", k=k)


PREDICTORS: dict[str, Entry] = {
    "cv": Entry(_cv, "constant velocity"),
    "ca": Entry(_ca, "constant acceleration (1 s finite difference, no reversing)"),
    "ctrv": Entry(_ctrv, "constant turn rate and velocity"),
    "kalman": Entry(_kalman, "Kalman filter, Singer manoeuvre model, with uncertainty"),
    "cv_multi": Entry(_cv_multi, "constant velocity with k lane-change / braking hypotheses"),
    "rnn": Entry(_rnn, "RNN/GRU/LSTM with neighbours and K modes (checkpoint sim, ngsim or a "
                       "file; default sim)"),
}


def predictor_names() -> list[str]:
    """Registered names, in registry order."""
    return list(PREDICTORS)


def make_predictor(name: str, checkpoint: str | None = None, k: int = 6) -> Predictor:
    """A predictor by registry name. ValueError for an unknown name or k < 1."""
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r} (valid: {', '.join(PREDICTORS)})")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return PREDICTORS[name].factory(checkpoint, k)


def parse_predictor_list(text: str) -> list[str]:
    """'cv,ca' -> ['cv', 'ca']; ValueError for empty, unknown or repeated names."""
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ValueError(f"expected comma-separated predictor names, got {text!r} "
                         f"(valid: {', '.join(PREDICTORS)})")
    for n in names:
        if n not in PREDICTORS:
            raise ValueError(f"unknown predictor {n!r} (valid: {', '.join(PREDICTORS)})")
    if len(set(names)) != len(names):
        raise ValueError(f"predictor listed twice in {text!r}")
    return names
