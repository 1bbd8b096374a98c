"""Draw docs/img/stop_and_go.png: the space-time speed field of the `stop_and_go` scenario.

    python docs/img/stop_and_go.py        # about 15 s: 600 s of simulated traffic
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from scenarios import suite
from sim.world import make_world, run

OUT = Path(__file__).with_suffix(".png")


def main() -> None:
    spec = suite.load_scenario("stop_and_go").spec(0)
    tr = run(make_world(spec), record_every=10).tracks  # 600 s, one sample per second
    cell_m = 10.0
    edges = np.arange(0.0, 2600.0 + cell_m, cell_m)
    field = np.full((len(edges) - 1, tr.n_steps), np.nan)  # mean speed per 10 m x 1 s cell
    for k in range(tr.n_steps):
        m = np.isin(tr.lane[:, k], [0, 1]) & np.isfinite(tr.x[:, k])  # the two main lanes
        cell = np.digitize(tr.x[m, k], edges) - 1
        ok = (cell >= 0) & (cell < len(edges) - 1)
        v = np.hypot(tr.vx[m, k], tr.vy[m, k])[ok] * 3.6
        total = np.bincount(cell[ok], v, len(edges) - 1)
        count = np.bincount(cell[ok], minlength=len(edges) - 1)
        field[:, k] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    plt.switch_backend("Agg")
    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=80)
    im = ax.imshow(field, origin="lower", aspect="auto", cmap="RdYlGn", vmin=0, vmax=110,
                   extent=(0, tr.t[-1], 0, 2600), interpolation="nearest")
    ax.axhline(1800, color="k", lw=0.8, ls="--")
    ax.text(8, 2330, "on-ramp merge zone: 1,800-2,050 m (dashed: its start)", fontsize=8,
            bbox=dict(facecolor="white", edgecolor="none", alpha=0.8))
    ax.set(xlabel="time (s)", ylabel="position along the road (m)",
           title="stop_and_go: mean speed in the two main lanes (10 m x 1 s cells)")
    fig.colorbar(im, label="speed (km/h)")
    fig.tight_layout()
    fig.savefig(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
