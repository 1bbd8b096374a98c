"""Shared test setup: headless SDL, the NGSIM data folder, and synthetic state factories."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

REPO = Path(__file__).resolve().parents[1]
NGSIM_DIR = REPO.parent / "shared" / "data" / "ngsim"


@pytest.fixture
def ngsim_dir() -> Path:
    if not NGSIM_DIR.is_dir():
        pytest.skip("../shared/data/ngsim is not beside this checkout")
    return NGSIM_DIR


def make_state(road, vehicles: list[dict], capacity: int | None = None):
    """A TrafficState on `road` with the given vehicles (dicts of lane, station_m, speed_mps
    and optional driver fields), Frenet-consistent, lane-centred."""
    from sim.state import empty_state

    n = len(vehicles)
    st = empty_state(capacity or max(8, n), road.n_lanes)
    for i, v in enumerate(vehicles):
        lane = np.array([v["lane"]])
        s = road.s_at_station(lane, np.array([v["station_m"]]))
        x, y, h, k, station = road.pose_at(lane, s)
        st.ids[i], st.lane[i], st.active[i] = i, v["lane"], True
        st.x[i], st.y[i], st.heading[i], st.s[i] = x[0], y[0], h[0], s[0]
        st.station[i], st.lane_heading[i], st.lane_curvature[i] = station[0], h[0], k[0]
        st.speed[i] = v.get("speed_mps", 0.0)
        st.vx[i], st.vy[i] = st.speed[i] * np.cos(h[0]), st.speed[i] * np.sin(h[0])
        for key, value in v.items():
            if key not in ("lane", "station_m", "speed_mps"):
                getattr(st, key)[i] = value
    return st


@pytest.fixture
def state_factory():
    return make_state
