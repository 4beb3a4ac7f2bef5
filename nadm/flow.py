"""Optical-flow fields, shared by interpolation (Sec. III-E) and the warping error (Sec. IV-C2 complement).

Layouts, stated once:
- a flow is `(H, W, 2) float32` in pixels, `flow[y, x] = (dx, dy)`: pixel (x, y) of `a` moves to
  (x + dx, y + dy) in `b`;
- every flow backend (`nadm.interpolate.get_flow`) is a `FlowFn`, `flow(a, b) -> (H, W, 2)` for two
  `(H, W, 3) uint8` RGB images.

`sample` reads any `(H, W[, C])` array at x + offset(x) (bilinear, edges replicated): with the flow a->b as
the offset it warps b back onto a. `fb_residual` is the forward-backward consistency test (Ruder et al. 2016,
Lai et al. 2018) that both SOFP (occlusion weights, trust in a chain of flows) and the warping error use;
`consistency` is its soft form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@functools.lru_cache(maxsize=8)
def grid(h: int, w: int) -> np.ndarray:
    """(H, W, 2) float32 pixel coordinates (x, y); cached and shared, so never written into."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xs, ys], axis=-1)


def sample(img: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """img sampled at x + offset(x) (bilinear, edges replicated); img (H, W[, C]), offset (H, W, 2)."""
    h, w = offset.shape[:2]
    return cv2.remap(img, grid(h, w) + offset, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def dot(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-pixel dot product of two (H, W, 2) fields -> (H, W) (much faster than a sum over the last axis)."""
    return p[..., 0] * q[..., 0] + p[..., 1] * q[..., 1]


def fb_residual(forward: np.ndarray, backward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-backward check of a flow pair a->b, b->a: (err, tol), both (H, W); consistent where err <= tol.

    err = |f + b(x + f)|^2, tol = 0.01 (|f|^2 + |b(x + f)|^2) + 0.5 (Ruder et al. 2016, Lai et al. 2018):
    going a->b and back lands where it started, up to a tolerance that grows with the motion.
    """
    back = sample(backward, forward)  # the backward flow at the pixel the forward flow lands on
    loop = forward + back
    return dot(loop, loop), 0.01 * (dot(forward, forward) + dot(back, back)) + 0.5


def consistency(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1]: 1 where the pair passes `fb_residual`'s check (a's pixel is seen again in b), falling
    off as exp(-(err - tol) / tol) beyond it (occluded, or a wrong flow)."""
    err, tol = fb_residual(forward, backward)
    return np.exp(-np.maximum(err - tol, 0.0) / tol)


def lands_inside(forward: np.ndarray) -> np.ndarray:
    """(H, W) bool: x + forward(x) lies inside the frame."""
    h, w = forward.shape[:2]
    target = grid(h, w) + forward
    return (target[..., 0] >= 0) & (target[..., 0] <= w - 1) & (target[..., 1] >= 0) & (target[..., 1] <= h - 1)
