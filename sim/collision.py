"""Oriented-box overlap, a sweep-and-prune broad phase, gaps and time to collision."""

from __future__ import annotations

import numpy as np


def box_corners(x, y, heading, length, width) -> np.ndarray:
    """(N, 4, 2) corners of oriented boxes (front-left, front-right, rear-right, rear-left), m."""
    c, s = np.cos(heading), np.sin(heading)
    hl, hw = 0.5 * np.asarray(length), 0.5 * np.asarray(width)
    fx, fy = hl * c, hl * s  # half-length along the heading
    lx, ly = -hw * s, hw * c  # half-width to the left
    xs = np.stack([x + fx + lx, x + fx - lx, x - fx - lx, x - fx + lx], axis=-1)
    ys = np.stack([y + fy + ly, y + fy - ly, y - fy - ly, y - fy + ly], axis=-1)
    return np.stack([xs, ys], axis=-1)


def boxes_overlap(ax, ay, ah, al, aw, bx, by, bh, bl, bw) -> np.ndarray:
    """(P,) True where box a and box b overlap with positive area (separating axis theorem).

    Boxes are centre (x, y) m, heading rad, length and width m, each (P,). Boxes that only
    touch along an edge or at a corner do not overlap. Box a's two axes are tried on every
    pair first; box b's only on the pairs they did not separate.
    """
    dx, dy = np.asarray(bx) - ax, np.asarray(by) - ay
    ca, sa, cb, sb = np.cos(ah), np.sin(ah), np.cos(bh), np.sin(bh)
    hal, haw, hbl, hbw = 0.5 * al, 0.5 * aw, 0.5 * bl, 0.5 * bw
    # |cos| of the angles between the candidate axes and the other box's axes
    c_ab = np.abs(ca * cb + sa * sb)  # a's length axis vs b's length axis
    s_ab = np.abs(sa * cb - ca * sb)  # a's length axis vs b's width axis (= sin of the angle)
    eps = 1e-9
    sep = np.abs(dx * ca + dy * sa) >= hal + hbl * c_ab + hbw * s_ab - eps
    sep |= np.abs(dy * ca - dx * sa) >= haw + hbl * s_ab + hbw * c_ab - eps
    out = ~sep
    r = np.flatnonzero(out)
    if len(r):
        dx, dy, cb, sb, c_ab, s_ab = dx[r], dy[r], cb[r], sb[r], c_ab[r], s_ab[r]
        hal, haw = np.broadcast_to(hal, out.shape)[r], np.broadcast_to(haw, out.shape)[r]
        hbl, hbw = np.broadcast_to(hbl, out.shape)[r], np.broadcast_to(hbw, out.shape)[r]
        sep = np.abs(dx * cb + dy * sb) >= hbl + hal * c_ab + haw * s_ab - eps
        sep |= np.abs(dy * cb - dx * sb) >= hbw + hal * s_ab + haw * c_ab - eps
        out[r] = ~sep
    return out


def candidate_pairs(x: np.ndarray, y: np.ndarray, radius: np.ndarray,
                    along_x: bool | None = None):
    """Pairs (i, j), i < j, whose bounding circles overlap: sweep and prune.

    Sorts along one axis (x if along_x, else y; by default the one with the larger spread),
    then walks k = 1, 2, ... places ahead in that order while any pair is still within reach:
    O(N log N + pairs), exact (no pair whose circles overlap is missed). x, y, radius are
    (N,); returns two int64 arrays of indices.
    """
    n = len(x)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if along_x is None:
        along_x = x.max() - x.min() >= y.max() - y.min()
    axis = x if along_x else y
    order = np.argsort(axis)
    a = axis[order]
    a_pad = np.concatenate([a, np.full(n, np.inf)])  # a_pad[p + k] is inf past the end
    reach = radius[order] + float(radius.max())
    found, counts = [], []
    live = np.arange(n - 1)  # sorted positions that may still have a partner k places ahead
    k = 1
    while len(live):
        live = live[a_pad[live + k] - a[live] < reach[live]]
        found.append(live + k * n)  # position and offset in one integer
        counts.append(len(live))
        k += 1
    code = np.concatenate(found)
    p = code % n
    i, j = order[p], order[p + code // n]
    hit = (x[i] - x[j]) ** 2 + (y[i] - y[j]) ** 2 < (radius[i] + radius[j]) ** 2
    i, j = i[hit], j[hit]
    return np.minimum(i, j), np.maximum(i, j)


def overlapping_pairs(x, y, heading, length, width, along_x: bool | None = None):
    """All overlapping pairs (i, j), i < j, among (N,) oriented boxes: broad then narrow phase.
    along_x picks the sweep axis (default: the one along which the boxes spread most)."""
    radius = 0.5 * np.hypot(length, width)
    i, j = candidate_pairs(x, y, radius, along_x)
    hit = boxes_overlap(x[i], y[i], heading[i], length[i], width[i],
                        x[j], y[j], heading[j], length[j], width[j])
    return i[hit], j[hit]


def gap_m(station_lead_m, length_lead_m, station_follow_m, length_follow_m):
    """Bumper-to-bumper gap along the road between a leader and its follower, m (N,)."""
    return station_lead_m - station_follow_m - 0.5 * (length_lead_m + length_follow_m)


def ttc_s(gap, speed_follow_mps, speed_lead_mps) -> np.ndarray:
    """Time to collision at constant speeds, s (N,); inf when the gap is not closing."""
    closing = np.asarray(speed_follow_mps - speed_lead_mps, float)
    gap = np.asarray(gap, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(closing > 1e-9, np.maximum(gap, 0.0) / closing, np.inf)
    return t
