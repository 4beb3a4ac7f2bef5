"""Frame interpolation (paper Sec. III-E): optical-flow backends, SOFP (Eq. 14) and two baselines.

Layouts, stated once:
- an image is `(H, W, 3) uint8` RGB; a clip is `(N, H, W, 3) uint8` with N >= 2 and H, W >= 16;
- a flow is `(H, W, 2) float32` in pixels (`nadm.flow`: the `FlowFn` type, sampling, consistency).

Every flow backend is `flow(a, b) -> (H, W, 2)`; every interpolator is `frames (N,...) -> frames (2N-1,...)`,
inserting one frame half-way between each pair of neighbours.

How the middle frame is made (`midframe`): for each output pixel x, the flow through x at t + 0.5 is found
by a fixed-point iteration on the a->b flow (`u = F_ab(x - u/2)`, and likewise for b->a), both frames are
backward-warped to t + 0.5 with cv2.remap, and the two warps are blended with weights from the
forward-backward consistency of the flows (content of b that a does not see comes from b, and vice versa).

SOFP (Eq. 14, DESIGN.md section 3): `D_t = (V_{t->T} . V_{t->t+1}) / (|V_{t->t+1}|^2 + eps)` projects the
long-range motion on the step's motion: how far, in units of the step, the pixel keeps going the same way
until frame T. The confidence `c = clip(D_t, 0, 1)` weighs the flow midpoint against a plain cross-fade, so
motion that continues is interpolated along the flow and motion that stops or reverses (jitter) is damped
toward the cross-fade. V_{t->T} is the chain of the step flows t -> t+1 -> ... -> T (each pixel followed
along them), not a direct flow from t to T: a direct flow is often lost on large steady motion (a pan) and
then passes a forward-backward check as ~0, which made c collapse to a cross-fade where the step flow was
right. A steady motion gives D_t = T - t >= 1, so c = 1 and SOFP is the flow midpoint there. The chain is
trusted only as far as each of its steps passes the forward-backward check (c = 1 where one fails: the
chain then says nothing); c is smoothed (`SOFP_DEFAULTS`) and carried from frame t's grid to t + 0.5 along
the flow before use. For the last pair (T = t + 1) SOFP is the plain flow midpoint. Chosen by
benchmarks/interpolation.py (README, "interpolate").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm

from nadm.devices import resolve_device
from nadm.errors import NADMError
from nadm.flow import FlowFn, consistency, dot, sample

MIN_SIZE = 16  # DIS needs >= 12 px; below 16 px a flow is meaningless anyway
EPS = 1e-2  # px^2, keeps D_t finite where the step does not move
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
# Defaults chosen by benchmarks/interpolation.py (numbers in README.md, "interpolate" section).
DEFAULT_DIS_PRESET = "medium"
SOFP_DEFAULTS: dict[str, Any] = {"mode": "blend", "smooth": 6.0, "long_flow": "chained"}
PROGRESS_MIN_PAIRS = 16  # show a tqdm bar from this many frame pairs on


# --------------------------------------------------------------------------------------------- checking


def _check_image_pair(a: np.ndarray, b: np.ndarray) -> None:
    """Raise ValueError unless a and b are equal-shaped (H, W, 3) uint8 images of at least MIN_SIZE px."""
    for name, img in (("a", a), ("b", b)):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            desc = f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"flow input {name} must be an (H, W, 3) uint8 image, got {desc}")
    if a.shape != b.shape:
        raise ValueError(f"flow inputs differ in shape: {a.shape} vs {b.shape}")
    if min(a.shape[:2]) < MIN_SIZE:
        raise ValueError(f"images must be at least {MIN_SIZE}x{MIN_SIZE} px, got {a.shape[1]}x{a.shape[0]}")


def check_clip(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Validate a clip for interpolation and return it as one `(N, H, W, 3) uint8` array (Sec. III-E input)."""
    if not isinstance(frames, np.ndarray):
        frames = list(frames)
        for i, f in enumerate(frames):
            if not isinstance(f, np.ndarray):
                raise ValueError(f"frame {i} is a {type(f).__name__}, not a numpy array")
            if f.shape != frames[0].shape:
                raise ValueError(f"frame {i} has shape {f.shape} but frame 0 has {frames[0].shape}: sizes must match")
        if not frames:
            raise ValueError("interpolation needs at least 2 frames, got 0")
        frames = np.stack(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must have shape (N, H, W, 3), got {frames.shape}")
    n, h, w, _ = frames.shape
    if n < 2:
        raise ValueError(f"interpolation needs at least 2 frames, got {n}")
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"frames must be at least {MIN_SIZE}x{MIN_SIZE} px, got {w}x{h}")
    return np.ascontiguousarray(frames)


# ----------------------------------------------------------------------------------------- flow backends


def _gray(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luma."""
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


@functools.lru_cache(maxsize=16)
def _dis(preset: str, h: int, w: int) -> cv2.DISOpticalFlow:
    """One OpenCV DIS object per preset and image size (a DIS object fed changing sizes gets ~4x slower)."""
    return cv2.DISOpticalFlow_create(DIS_PRESETS[preset])


def dis_flow(a: np.ndarray, b: np.ndarray, preset: str = DEFAULT_DIS_PRESET) -> np.ndarray:
    """Optical flow a->b by OpenCV's DIS (the weight-free stand-in for RAFT in Sec. III-E)."""
    _check_image_pair(a, b)
    if preset not in DIS_PRESETS:
        raise NADMError(f"unknown DIS preset '{preset}': use one of {', '.join(DIS_PRESETS)}")
    return _dis(preset, *a.shape[:2]).calc(_gray(a), _gray(b), None)


def farneback_flow(
    a: np.ndarray, b: np.ndarray, levels: int = 4, winsize: int = 15, iterations: int = 3
) -> np.ndarray:
    """Optical flow a->b by OpenCV's Farneback polynomial expansion (Sec. III-E flow alternative)."""
    _check_image_pair(a, b)
    return cv2.calcOpticalFlowFarneback(
        _gray(a), _gray(b), None, pyr_scale=0.5, levels=levels, winsize=winsize, iterations=iterations,
        poly_n=5, poly_sigma=1.1, flags=0,
    )


class RaftFlow:
    """Optical flow a->b by torchvision's RAFT (the estimator the paper uses, Sec. III-E), large or small."""

    def __init__(self, size: str = "large", device: str | None = None, iters: int = 12) -> None:
        if size not in ("large", "small"):
            raise NADMError(f"unknown RAFT size '{size}': use 'large' or 'small'")
        try:
            import torch
            from torchvision.models import optical_flow
        except ImportError as e:  # torchvision is optional (it breaks diffusers on some CPU set-ups)
            raise NADMError(
                f"the raft flow backend needs torchvision, which is not importable here ({e}); "
                "install torchvision or use --flow dis"
            ) from e
        weights = (optical_flow.Raft_Large_Weights if size == "large" else optical_flow.Raft_Small_Weights).DEFAULT
        builder = optical_flow.raft_large if size == "large" else optical_flow.raft_small
        self.device = resolve_device(device, prefer=("cuda",))  # 'auto': CUDA, else the CPU
        try:
            self.model = builder(weights=weights, progress=False).eval().to(self.device)
        except Exception as e:  # download/cache failures come as URLError, OSError, RuntimeError...
            raise NADMError(
                f"could not load torchvision's RAFT-{size} weights ({type(e).__name__}: {e}); "
                "put them in the torch hub cache or use --flow dis"
            ) from e
        self.transforms = weights.transforms()
        self.iters = iters
        self._torch = torch

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """RAFT flow a->b: pad to a multiple of 8 by replication, run, crop back."""
        _check_image_pair(a, b)
        torch = self._torch
        h, w = a.shape[:2]
        ph, pw = (-h) % 8, (-w) % 8
        # (H, W, 3) uint8 -> (1, 3, H + ph, W + pw) float in [-1, 1]
        ta, tb = (
            torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255.0) for img in (a, b)
        )
        ta, tb = (torch.nn.functional.pad(t, (0, pw, 0, ph), mode="replicate") for t in (ta, tb))
        ta, tb = self.transforms(ta, tb)
        with torch.inference_mode():
            flows = self.model(ta.to(self.device), tb.to(self.device), num_flow_updates=self.iters)
        # last refinement, (1, 2, H', W') -> (H, W, 2)
        return flows[-1][0, :, :h, :w].permute(1, 2, 0).float().cpu().numpy()


FLOW_BACKENDS = ("dis", "farneback", "raft")


def get_flow(name: str, **options: Any) -> FlowFn:
    """A flow backend by name ('dis', 'farneback', 'raft') with its options bound (Sec. III-E)."""
    if name == "dis":
        return functools.partial(dis_flow, **options)
    if name == "farneback":
        return functools.partial(farneback_flow, **options)
    if name == "raft":
        return RaftFlow(**options)
    raise NADMError(f"unknown flow backend '{name}': use one of {', '.join(FLOW_BACKENDS)}")


def _resolve_flow(flow: str | FlowFn) -> FlowFn:
    """A backend name or an already-built flow callable."""
    return get_flow(flow) if isinstance(flow, str) else flow


# ------------------------------------------------------------------------------------- the middle frame


def _mid_flow(f: np.ndarray, iters: int = 1) -> np.ndarray:
    """Flow u through each pixel at half-time: fixed point of u(x) = f(x - u(x)/2), from u = f.

    One step by default: a second moved PSNR by at most 0.04 dB either way (Middlebury, UCF101, the pans and
    real sequences of benchmarks/interpolation.py) and cost about a tenth of SOFP's time at 512x512.
    """
    u = f
    for _ in range(iters):
        u = sample(f, -0.5 * u)
    return u


def midframe(
    a: np.ndarray,
    b: np.ndarray,
    fab: np.ndarray,
    fba: np.ndarray,
    confidence: np.ndarray | None = None,
    mode: str = "blend",
    occlusion: bool = True,
    seen: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The frame at t + 0.5 from a, b and both flows (Sec. III-E), damped where the confidence is below 1.

    confidence: (H, W) in [0, 1] on a's pixel grid (None: 1 everywhere, the plain flow midpoint). It is
    carried to t + 0.5 along the flow, then 'blend' mixes the flow midpoint with the cross-fade by it and
    'scale' shrinks the motion by it (0 = the cross-fade either way). occlusion: weigh the two warps by the
    forward-backward consistency of the flows (`seen`: both maps, a->b and b->a, if the caller has them).
    """
    # 1. flow through every half-time pixel, toward b and toward a
    u = _mid_flow(fab)
    v = _mid_flow(fba)
    # 2. the confidence, moved from a's grid to t + 0.5: pixel x there came from x - u/2 in a
    c = None if confidence is None else sample(np.asarray(confidence, np.float32), -0.5 * u)
    if c is not None and mode == "scale":
        u, v = u * c[..., None], v * c[..., None]
    # 3. backward warps: a seen from x - u/2, b from x - v/2
    wa = sample(a, -0.5 * u)
    wb = sample(b, -0.5 * v)
    # 4. occlusion-aware weights: where b's sample is content a never saw (cb low), b supplies the pixel;
    #    where a's sample is content that b no longer shows (ca low), a does (cv2.blendLinear: the weighted
    #    mean, rounded to uint8, ~8x faster than the same in numpy)
    even = np.ones(a.shape[:2], np.float32)
    if occlusion:
        ca, cb = seen or (consistency(fab, fba), consistency(fba, fab))
        ka = 0.05 + sample(cb, -0.5 * v)
        kb = 0.05 + sample(ca, -0.5 * u)
    else:
        ka = kb = even
    out = cv2.blendLinear(wa, wb, ka, kb)
    # 5. SOFP's damping: toward the 50/50 cross-fade where the motion does not continue
    if c is not None and mode == "blend":
        out = cv2.blendLinear(out, cv2.blendLinear(a, b, even, even), c, 1.0 - c)
    return out


# -------------------------------------------------------------------------------------------- SOFP


def sofp_confidence(f_next: np.ndarray, f_last: np.ndarray) -> np.ndarray:
    """Eq. 14 as a confidence: clip((V_{t->T} . V_{t->t+1}) / (|V_{t->t+1}|^2 + eps), 0, 1), (H, W) float32."""
    d = dot(f_last, f_next) / (dot(f_next, f_next) + EPS)
    return np.clip(d, 0.0, 1.0).astype(np.float32)


def chain(steps: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """V_{t->T} as the chain of step flows V_{t->t+1}, ..., V_{T-1->T}, and how far that chain can be trusted.

    steps: (V_{s->s+1}, r_s) for s = t, ..., T-1, with r_s (H, W) in [0, 1] the forward-backward consistency
    of step s on frame s's grid. Each pixel is followed along the steps: after k steps it has moved
    p_k(x) = p_{k-1}(x) + V_{t+k-1->t+k}(x + p_{k-1}(x)). Returns p (H, W, 2) and the trust (H, W), the
    product of the r_s met on the way.
    """
    p, trust = steps[0]
    for f, r in steps[1:]:
        trust = trust * sample(r, p)
        p = p + sample(f, p)
    return p, trust


def _check_sofp_options(window: int | None, mode: str) -> None:
    """ValueError naming a bad window or mode."""
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1):
        raise ValueError(f"window must be a positive integer or None, got {window!r}")
    if mode not in ("scale", "blend"):
        raise ValueError(f"unknown SOFP mode '{mode}': use 'scale' or 'blend'")


# ---------------------------------------------------------------------------------------- interpolators


def _interleave(frames: np.ndarray, mids: list[np.ndarray]) -> np.ndarray:
    """(N, H, W, 3) keys + N-1 middles -> (2N-1, H, W, 3): key, mid, key, ..., key."""
    n, h, w, c = frames.shape
    out = np.empty((2 * n - 1, h, w, c), np.uint8)
    out[0::2] = frames
    out[1::2] = np.stack(mids)
    return out


def _progress(total: int, progress: bool | None, desc: str) -> tqdm:
    """A tqdm bar over frame pairs, shown by default only for long clips."""
    # None lets tqdm hide the bar when stderr is not a terminal
    disable = (True if total < PROGRESS_MIN_PAIRS else None) if progress is None else not progress
    return tqdm(total=total, desc=desc, unit="pair", disable=disable, leave=False)


def crossfade(frames: np.ndarray, progress: bool | None = None) -> np.ndarray:
    """Baseline for Sec. III-E: each inserted frame is the 50/50 blend of its neighbours."""
    frames = check_clip(frames)
    f = frames.astype(np.uint16)
    mids = list(((f[:-1] + f[1:] + 1) // 2).astype(np.uint8))
    return _interleave(frames, mids)


def flow_midpoint(
    frames: np.ndarray, flow: str | FlowFn = "dis", occlusion: bool = True, progress: bool | None = None
) -> np.ndarray:
    """Baseline for Sec. III-E: bidirectional-flow midpoint with forward-backward occlusion weights."""
    frames = check_clip(frames)
    fn = _resolve_flow(flow)
    mids = []
    with _progress(len(frames) - 1, progress, "flow midpoint") as bar:
        for a, b in zip(frames[:-1], frames[1:]):
            mids.append(midframe(a, b, fn(a, b), fn(b, a), occlusion=occlusion))
            bar.update()
    return _interleave(frames, mids)


def sofp(
    frames: np.ndarray,
    flow: str | FlowFn = "dis",
    window: int | None = None,
    mode: str = SOFP_DEFAULTS["mode"],
    smooth: float = SOFP_DEFAULTS["smooth"],
    occlusion: bool = True,
    progress: bool | None = None,
) -> np.ndarray:
    """SOFP, paper Sec. III-E Eq. 14: flow midpoints damped toward a cross-fade where motion does not continue.

    Per pair (t, t+1) and T = min(t + window, N - 1) (window None: the clip's last frame): D_t projects the
    long-range motion V_{t->T} on the step's V_{t->t+1} (Eq. 14), with V_{t->T} the chain of the step flows
    t -> t+1 -> ... -> T; c = clip(D_t, 0, 1) where every step of the chain is forward-backward consistent
    (c = 1 where one is not: the chain then says nothing), Gaussian-smoothed by `smooth` px, carried to
    t + 0.5 along the flow, damps the flow midpoint toward the cross-fade ('blend') or shrinks its motion
    ('scale'). The last pair (T = t + 1) is the plain flow midpoint. occlusion: consistency weights.
    """
    # 1. check inputs and options
    frames = check_clip(frames)
    _check_sofp_options(window, mode)
    n = len(frames)
    fn = _resolve_flow(flow)
    mids: list[np.ndarray] = [np.empty(0)] * (n - 1)
    later: list[tuple[np.ndarray, np.ndarray]] = []  # window: (V_{s->s+1}, r_s), s = t, t+1, ..., nearest first
    long = trust = None  # the chain to T and its trust; whole clip: from t + 1 until step 3 extends them to t
    with _progress(n - 1, progress, "SOFP") as bar:
        for t in range(n - 2, -1, -1):  # backward, so the chains to T reuse the later steps' flows
            a, b = frames[t], frames[t + 1]
            big_t = n - 1 if window is None else min(t + window, n - 1)
            # 2. flows to the next frame and back, and their forward-backward consistency on a's and b's grids
            f_next, f_back = fn(a, b), fn(b, a)
            seen = (consistency(f_next, f_back), consistency(f_back, f_next))
            # 3. V_{t->T} and its trust by chaining the step flows
            if window is None:
                long = f_next if long is None else f_next + sample(long, f_next)
                trust = seen[0] if trust is None else seen[0] * sample(trust, f_next)
            else:
                later = [(f_next, seen[0]), *later][:window]
                long, trust = chain(later[: big_t - t])
            # 4. Eq. 14 -> confidence c, 1 where the chain is not trusted (none for T = t + 1)
            c = None
            if big_t > t + 1:
                c = trust * sofp_confidence(f_next, long) + (1.0 - trust)
                if smooth > 0:
                    c = cv2.GaussianBlur(c, (0, 0), smooth)
            # 5. the middle frame, damped toward the cross-fade where c < 1
            mids[t] = midframe(a, b, f_next, f_back, c, mode, occlusion, seen)
            bar.update()
    return _interleave(frames, mids)


METHODS: dict[str, Callable[..., np.ndarray]] = {"sofp": sofp, "flow_midpoint": flow_midpoint, "crossfade": crossfade}


def times(frames: np.ndarray, k: int, method: str | Callable[..., np.ndarray] = "sofp", **options: Any) -> np.ndarray:
    """Repeat a Sec. III-E doubling k times: N frames -> 2^k (N - 1) + 1 (a window doubles with the clip)."""
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"times must be a non-negative integer, got {k!r}")
    if isinstance(method, str):
        if method not in METHODS:
            raise NADMError(f"unknown interpolation method '{method}': use one of {', '.join(METHODS)}")
        method = METHODS[method]
    out = check_clip(frames)
    options = dict(options)
    if isinstance(options.get("flow"), str):
        options["flow"] = get_flow(options["flow"])  # build once (RAFT loads its weights)
    for _ in range(k):
        out = method(out, **options)
        if options.get("window") is not None:
            options["window"] *= 2  # the same time span in the doubled clip
    return out


__all__ = [
    "DIS_PRESETS",
    "FLOW_BACKENDS",
    "METHODS",
    "RaftFlow",
    "chain",
    "check_clip",
    "crossfade",
    "dis_flow",
    "farneback_flow",
    "flow_midpoint",
    "get_flow",
    "midframe",
    "sofp",
    "sofp_confidence",
    "times",
]
