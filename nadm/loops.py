"""Seamless loops after decoding (issue 15): SOFP interpolation (Sec. III-E) that also fills the wrap pair.

A looping clip's last frame leads into its first, so interpolation treats (last, first) as one more pair: the clip
is interpolated with its first frame appended and the duplicate dropped again, N frames -> 2N (2^k N after k
doublings), the wrap frame last. Built on the public `nadm.interpolate.times`, so SOFP's internals stay its own.
(The denoising side of a loop is the ring windows of `nadm.windows`.)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def interpolate_loop(frames: np.ndarray, k: int = 1, method: str = "sofp", **options: Any) -> np.ndarray:
    """Double a looping clip k times, the pair (last, first) included: `(N, H, W, 3)` -> `(2^k N, H, W, 3)`."""
    from nadm.interpolate import check_clip, times

    frames = check_clip(frames)
    ring = np.concatenate([frames, frames[:1]])  # (N + 1, ...): the first frame again after the last
    return times(ring, k, method, **options)[:-1]  # 2^k N + 1 frames, the repeated first frame dropped


def interpolate_keyframes(
    keyframes: np.ndarray, flow: Any = "dis", loop: bool = False, window: int | None = None, progress: bool | None = None
) -> np.ndarray:
    """SOFP for generated frames: N -> 2N-1, or 2N for a loop; `window`: SOFP's T = t + window (long clips: C)."""
    from nadm.interpolate import sofp

    if loop:
        return interpolate_loop(keyframes, 1, "sofp", flow=flow, window=window, progress=progress)
    return sofp(keyframes, flow=flow, window=window, progress=progress)


def interpolate_clip(
    frames: np.ndarray,
    times: int,
    method: str = "sofp",
    flow: str | None = None,
    dis_preset: str | None = None,
    window: int | None = None,
    loop: bool = False,
    progress: bool | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """`nadm interpolate` and the studio's Interpolate tab (Sec. III-E): `times` doublings of a checked clip (a loop's
    last -> first pair too) and the sidecar's record of how; flow "dis" unless crossfade; NADMError for bad options."""
    from nadm import interpolate as interp
    from nadm.errors import NADMError

    options: dict[str, Any] = {"progress": progress}
    if method != "crossfade":
        flow = flow or "dis"
        options["flow"] = interp.get_flow(flow, **({"preset": dis_preset} if dis_preset else {}))  # raft: problems here
    if method == "sofp":
        options["window"] = window
    try:
        if loop:
            result = interpolate_loop(frames, times, method, **options)
        else:
            result = interp.times(frames, times, method=method, **options)
    except ValueError as e:
        raise NADMError(str(e)) from e
    record: dict[str, Any] = {"method": method, "flow": flow, "times": times, "window": window, "loop": loop,
                              "frames_in": int(len(frames)), "frames_out": int(len(result))}  # fmt: skip
    if method == "sofp":
        record["sofp"] = dict(interp.SOFP_DEFAULTS)
    if flow == "dis":
        record["dis_preset"] = dis_preset or interp.DEFAULT_DIS_PRESET
    return result, record
