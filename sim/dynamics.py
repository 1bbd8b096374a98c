"""Kinematic bicycle model, referenced at the centre of gravity, all rows at once."""

from __future__ import annotations

import numpy as np

REAR_AXLE_SHARE = 0.5  # lr / wheelbase: centre of gravity midway between the axles
MAX_STEER_RAD = 0.6
_MAX_TAN = float(np.tan(MAX_STEER_RAD))


def bicycle_step(x: np.ndarray, y: np.ndarray, heading: np.ndarray, speed: np.ndarray,
                 accel_mps2: np.ndarray, tan_steer: np.ndarray, wheelbase_m: np.ndarray,
                 dt_s: float):
    """Advance (N,) vehicles by dt_s under (acceleration, tangent of the front steering angle).

    The steering angle is limited to +-MAX_STEER_RAD. Speed never goes negative: a vehicle
    braking to a stop within the step stops there and travels only its stopping distance.
    Heading changes at the yaw rate v sin(beta) / lr with slip angle
    beta = atan(lr / L tan(steer)); the centre of gravity moves along the arc (chord at the
    mean direction). Returns x, y, heading, speed, vx, vy (world-frame velocity at the end).
    """
    tan_beta = REAR_AXLE_SHARE * np.minimum(np.maximum(tan_steer, -_MAX_TAN), _MAX_TAN)
    cos_beta = 1.0 / np.sqrt(1.0 + tan_beta * tan_beta)
    sin_beta = tan_beta * cos_beta
    new_speed = speed + accel_mps2 * dt_s
    stops = new_speed < 0.0
    # distance over the step; a stop inside the step travels v^2 / (2 |a|)
    dist = 0.5 * (speed + new_speed) * dt_s
    if stops.any():
        dist = np.where(stops, speed * speed / np.maximum(-2.0 * accel_mps2, 1e-9), dist)
        new_speed = np.maximum(new_speed, 0.0)
    dheading = dist * sin_beta / (REAR_AXLE_SHARE * wheelbase_m)
    h = 0.5 * dheading
    sh, ch = np.sin(h), np.cos(h)
    sinc = np.ones_like(h)  # sin(h) / h
    np.divide(sh, h, out=sinc, where=h != 0.0)
    chord = dist * sinc
    # velocity direction = heading + beta; rotate by half the heading change
    c, s = np.cos(heading), np.sin(heading)
    cv, sv = c * cos_beta - s * sin_beta, s * cos_beta + c * sin_beta
    x = x + chord * (cv * ch - sv * sh)
    y = y + chord * (sv * ch + cv * sh)
    heading = heading + dheading
    ch2, sh2 = ch * ch - sh * sh, 2.0 * sh * ch  # rotate by the full heading change
    vdx, vdy = cv * ch2 - sv * sh2, sv * ch2 + cv * sh2
    return x, y, heading, new_speed, new_speed * vdx, new_speed * vdy


def turn_radius_m(wheelbase_m: float, steer_rad: float) -> float:
    """Radius of the circle the centre of gravity drives at a constant steering angle."""
    beta = np.arctan(REAR_AXLE_SHARE * np.tan(steer_rad))
    return float(REAR_AXLE_SHARE * wheelbase_m / np.sin(beta))
