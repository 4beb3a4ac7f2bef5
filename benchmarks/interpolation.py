"""Benchmark of frame interpolation (paper Sec. III-E): fidelity, smoothness and speed of every method x flow.

Run: `python benchmarks/interpolation.py [--data ../shared/data] [--variants] [--out FILE]`
(default FILE: benchmarks/results/interpolation.md).

1. Fidelity: PSNR / SSIM of rebuilt middle frames on the Middlebury-other and UCF101 triplets (ground-truth
   middle frames), and on whole sequences (sky time-lapse tiles, the annarbor moving-camera clip, the
   Animating-Landscape sky frames) with every other frame dropped and rebuilt.
2. Pans: two paintings and a photograph panned 3 and 7 px/frame, horizontally and vertically (17 frames of a
   240x240 window moving over the image); every other frame dropped and rebuilt (PSNR).
3. Smoothness: the real sequences with a seeded random 1.5 px shake added to every kept frame; flow warping
   error (Farneback flow between consecutive output frames, occluded pixels masked out) and flicker (mean
   absolute second difference over time) of the output.
4. Speed: milliseconds per interpolated frame at 256x256 and 512x512, and the ratio to the two-flow floor
   (the two flows per interpolated frame that the flow midpoint needs too), all timed in alternation.
5. Targets of issues 4 and 12.
With --variants, the routes tried for SOFP's long-range flow (issue 12) and its options (smoothing, mode,
window, occlusion weights, DIS preset) are scored on the pans and sequences too: the numbers behind sofp.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nadm import interpolate as interp  # noqa: E402
from nadm.flow import FlowFn, consistency, dot, fb_residual, lands_inside, sample  # noqa: E402
from nadm.io import environment_versions, read_video  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "interpolation.md"
SHAKE_PX = 1.5
SEED = 0
PAN_IMAGES = {  # label: path under the data folder
    "painting 127": "paintings/stevenling_landscape/shanshui_test_127.jpg",  # soft ink: trees, a house, mist
    "painting 148": "paintings/stevenling_landscape/shanshui_test_148.jpg",  # ink and colour, strong contrast
    "photograph": "landscape_motion/animating_landscape_sky/input_still_1.png",  # coast under clouds
}
PAN_SPEEDS = (3, 7)  # px per frame
PAN_FRAMES, PAN_SIZE = 17, 240
SPEED_REPEATS = 7
Clip = np.ndarray  # (N, H, W, 3) uint8
Method = Callable[[Clip], Clip]


# ------------------------------------------------------------------------------------------------ metrics


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (peak 255)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """SSIM (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5), mean over RGB channels."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = a.astype(np.float64), b.astype(np.float64)
    blur = functools.partial(cv2.GaussianBlur, ksize=(11, 11), sigmaX=sigma, sigmaY=sigma)
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s[5:-5, 5:-5].mean())  # drop the border where the window leaves the image


def _farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The metric's own flow: Farneback, independent of the DIS flow most methods use."""
    return cv2.calcOpticalFlowFarneback(
        cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), None, 0.5, 4, 15, 3, 5, 1.1, 0
    )


def warping_error(clip: Clip) -> float:
    """Mean |o_t - o_{t+1} warped back to t| (0-255) over pixels whose forward-backward flow agrees."""
    errors = []
    for a, b in zip(clip[:-1], clip[1:]):
        fab, fba = _farneback(a, b), _farneback(b, a)
        err, tol = fb_residual(fab, fba)
        mask = (err <= tol) & lands_inside(fab)
        diff = np.abs(a.astype(np.float32) - sample(b, fab).astype(np.float32)).mean(-1)
        errors.append(float(diff[mask].mean()) if mask.any() else 0.0)
    return float(np.mean(errors))


def flicker(clip: Clip) -> float:
    """Mean absolute second difference over time, |o_{t-1} - 2 o_t + o_{t+1}| (0-255)."""
    f = clip.astype(np.float32)
    return float(np.abs(f[:-2] - 2 * f[1:-1] + f[2:]).mean())


# --------------------------------------------------------------------------------------------------- data


def _rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_triplets(data: Path) -> dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]:
    """{'Middlebury-other': [(name, first, true middle, last)], 'UCF101': [...]}, whatever is present."""
    sets: dict[str, list] = {}
    mb = data / "middlebury_other"
    if mb.is_dir():
        sets["Middlebury-other"] = [
            (d.name, _rgb(d / "frame10.png"), _rgb(d / "frame10i11.png"), _rgb(d / "frame11.png"))
            for d in sorted(mb.iterdir())
            if (d / "frame10i11.png").is_file()
        ]
    ucf = data / "ucf101_triplets"
    if ucf.is_dir():
        sets["UCF101"] = [
            (d.name, _rgb(d / "frame0.png"), _rgb(d / "frame1.png"), _rgb(d / "frame2.png"))
            for d in sorted(ucf.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0)
            if (d / "frame1.png").is_file()
        ]
    return sets


def load_sequences(data: Path) -> dict[str, Clip]:
    """Real landscape-motion sequences with an odd frame count (every other frame is dropped and rebuilt)."""
    seqs: dict[str, Clip] = {}
    sky = data / "landscape_motion" / "mdgan_sky_timelapse"
    for tile in sorted(sky.glob("tile_r*c*")):
        frames, _ = read_video(tile)
        seqs[f"sky {tile.name[5:]} (128px)"] = frames[:31]
    annarbor = data / "landscape_motion" / "skyar_annarbor" / "annarbor.mp4"
    if annarbor.is_file():
        frames, _ = read_video(annarbor)
        small = np.stack([cv2.resize(f, (480, 272), interpolation=cv2.INTER_AREA) for f in frames[:33]])
        seqs["annarbor 33f (480x272)"] = small
    al = data / "landscape_motion" / "animating_landscape_sky"
    jpgs = sorted(al.glob("frames_*.jpg"))
    if len(jpgs) >= 3:
        seqs["animating-landscape sky (640x360)"] = np.stack([_rgb(p) for p in jpgs[: (len(jpgs) - 1) // 2 * 2 + 1]])
    return seqs


def shake(frames: Clip, rng: np.random.Generator, px: float = SHAKE_PX) -> Clip:
    """Translate every frame by px pixels in a random direction (bicubic, reflected borders)."""
    out = []
    for f in frames:
        angle = rng.uniform(0, 2 * np.pi)
        m = np.float32([[1, 0, px * np.cos(angle)], [0, 1, px * np.sin(angle)]])
        out.append(cv2.warpAffine(f, m, (f.shape[1], f.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def pan(image: np.ndarray, speed: int, axis: str, frames: int = PAN_FRAMES, size: int = PAN_SIZE) -> Clip:
    """A camera pan: a size x size window moving `speed` px per frame across the image, along x ('h') or y ('v')."""
    need = size + (frames - 1) * speed
    if image.shape[1 if axis == "h" else 0] < need or min(image.shape[:2]) < size:
        raise SystemExit(f"an image of {image.shape[1]}x{image.shape[0]} is too small for a {speed} px/frame pan")
    if axis == "h":
        return np.stack([image[:size, k * speed : k * speed + size] for k in range(frames)])
    return np.stack([image[k * speed : k * speed + size, :size] for k in range(frames)])


def load_pans(data: Path) -> dict[str, Clip]:
    """The pan cases of issue 12: each PAN_IMAGES entry at each speed, horizontally and vertically."""
    pans: dict[str, Clip] = {}
    for label, rel in PAN_IMAGES.items():
        if (data / rel).is_file():
            image = _rgb(data / rel)
            for speed in PAN_SPEEDS:
                for axis in "hv":
                    pans[f"{label} {speed}{axis}"] = pan(image, speed, axis)
    return pans


# ------------------------------------------------------------------------------------------------ methods


def available_flows() -> dict[str, str]:
    """{backend: '' if usable else why not}; raft is tried once (torchvision and weights may be missing)."""
    flows = {"dis": "", "farneback": ""}
    try:
        interp.get_flow("raft")
        flows["raft"] = ""
    except interp.NADMError as e:
        flows["raft"] = str(e)
    return flows


def two_flows(frames: Clip, flow: FlowFn) -> Clip:
    """The two-flow floor: only the flows a->b and b->a of every pair, which any flow midpoint needs."""
    for a, b in zip(frames[:-1], frames[1:]):
        flow(a, b), flow(b, a)
    return frames


def method_table(flows: list[str]) -> dict[str, Method]:
    """Every method with every usable flow backend (crossfade needs none)."""
    methods: dict[str, Method] = {"crossfade": interp.crossfade}
    for flow in flows:
        fn = interp.get_flow(flow)
        methods[f"flow_midpoint/{flow}"] = functools.partial(interp.flow_midpoint, flow=fn)
        methods[f"sofp/{flow}"] = functools.partial(interp.sofp, flow=fn)
    return methods


def _half_res_flow(flow: FlowFn, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow a->b computed at half resolution and upsampled (how the pre-issue-12 SOFP got its long flows)."""
    h, w = a.shape[:2]
    small = flow(*(cv2.resize(x, (w // 2, h // 2), interpolation=cv2.INTER_AREA) for x in (a, b)))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32([w / (w // 2), h / (h // 2)])


def _route_confidence(route: str, flow: FlowFn, a: np.ndarray, last: np.ndarray, f_next: np.ndarray,
                      chained: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Eq. 14's confidence for pair (t, t+1) with V_{t->T} taken as the route says."""
    long, trust = chained
    chain_c = trust * interp.sofp_confidence(f_next, long) + (1.0 - trust)  # what interp.sofp uses
    if route == "chain, untrusted":
        return interp.sofp_confidence(f_next, long)
    if route.startswith("chain"):
        return chain_c
    if route == "before":  # direct V_{t->T} at half resolution, trusted only where forward-backward consistent
        direct = _half_res_flow(flow, a, last)
        consistent = consistency(direct, _half_res_flow(flow, last, a))
        return consistent * interp.sofp_confidence(f_next, direct) + (1.0 - consistent)
    direct = flow(a, last)
    c = interp.sofp_confidence(f_next, direct)
    if route == "direct, checked":  # distrusted where its length differs from the chain's; the chain's c there
        diff = direct - long
        tol = 0.0625 * dot(long, long) + 1.0  # within 25% of the chained displacement, or 1 px
        agree = np.exp(-np.maximum(dot(diff, diff) - tol, 0.0) / tol)
        c = agree * c + (1.0 - agree) * chain_c
    return c


def sofp_route(frames: Clip, route: str, flow: FlowFn = interp.dis_flow, smooth: float = 6.0) -> Clip:
    """SOFP (Eq. 14) with one of issue 12's candidate routes for V_{t->T} and for where c is applied.

    'chain': the chain of step flows, trusted where its steps are consistent, c carried to t + 0.5 (what
    `interp.sofp` does); 'chain, untrusted': trusted everywhere; 'chain, not carried': c used on frame t's grid;
    'direct': the flow from t to T; 'direct, checked': the direct flow distrusted where its length differs
    from the chain's; 'before': what sofp did before issue 12 (direct at half resolution, trusted where
    forward-backward consistent, c not carried).
    """
    frames = interp.check_clip(frames)
    n = len(frames)
    steps = [(flow(a, b), flow(b, a)) for a, b in zip(frames[:-1], frames[1:])]
    seen = [(consistency(f, g), consistency(g, f)) for f, g in steps]
    chained = [(steps[-1][0], seen[-1][0])]  # (V_{t->N-1}, trust), built backward as interp.sofp does
    for (f, _), (r, _) in zip(reversed(steps[:-1]), reversed(seen[:-1])):
        chained.insert(0, (f + sample(chained[0][0], f), r * sample(chained[0][1], f)))
    mids = []
    for t, ((a, b), (f, g)) in enumerate(zip(zip(frames[:-1], frames[1:]), steps)):
        if t == n - 2:
            mids.append(interp.midframe(a, b, f, g, seen=seen[t]))
            continue
        c = cv2.GaussianBlur(_route_confidence(route, flow, a, frames[-1], f, chained[t]), (0, 0), smooth)
        if route in ("chain, not carried", "before"):
            fade = (a.astype(np.float32) + b.astype(np.float32)) / 2
            mid = c[..., None] * interp.midframe(a, b, f, g) + (1 - c[..., None]) * fade
            mids.append(np.clip(np.rint(mid), 0, 255).astype(np.uint8))
        else:
            mids.append(interp.midframe(a, b, f, g, c, seen=seen[t]))
    return np.concatenate([np.stack([k, m]) for k, m in zip(frames[:-1], mids)] + [frames[-1:]])


ROUTES = ("before", "direct", "direct, checked", "chain, untrusted", "chain, not carried", "chain")


def variant_table() -> dict[str, Method]:
    """SOFP routes and options and midpoint options (all DIS medium unless named) behind sofp's defaults."""
    p = functools.partial
    v: dict[str, Method] = {
        "crossfade": interp.crossfade,
        "flow_midpoint (default)": interp.flow_midpoint,
        "flow_midpoint, no occlusion weights": p(interp.flow_midpoint, occlusion=False),
    }
    for route in ROUTES:
        v[f"sofp route: {route}"] = p(sofp_route, route=route)
    v.update({
        "sofp (default: chain, trusted, carried, blend, smooth 6)": interp.sofp,
        "sofp smooth 0": p(interp.sofp, smooth=0.0),
        "sofp smooth 12": p(interp.sofp, smooth=12.0),
        "sofp mode scale": p(interp.sofp, mode="scale"),
        "sofp window 2": p(interp.sofp, window=2),
        "sofp window 4": p(interp.sofp, window=4),
        "sofp, no occlusion weights": p(interp.sofp, occlusion=False),
    })
    for preset in ("ultrafast", "fast"):
        fn = p(interp.dis_flow, preset=preset)
        v[f"flow_midpoint, DIS {preset}"] = p(interp.flow_midpoint, flow=fn)
        v[f"sofp, DIS {preset}"] = p(interp.sofp, flow=fn)
    return v


# ------------------------------------------------------------------------------------------------ running


def eval_triplets(method: Method, triplets: list) -> tuple[float, float]:
    """Mean PSNR, SSIM of the middle frame rebuilt from (first, last)."""
    scores = [
        (psnr(mid, out[1]), ssim(mid, out[1]))
        for _, a, mid, b in triplets
        for out in [method(np.stack([a, b]))]
    ]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def eval_sequence(method: Method, clip: Clip) -> tuple[float, float]:
    """Mean PSNR, SSIM of the odd frames rebuilt from the even ones."""
    out = method(clip[0::2])
    assert out.shape == clip.shape, (out.shape, clip.shape)
    scores = [(psnr(t, o), ssim(t, o)) for t, o in zip(clip[1::2], out[1::2])]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def eval_pan(method: Method, clip: Clip) -> float:
    """Mean PSNR of the odd frames of a pan rebuilt from the even ones."""
    out = method(clip[0::2])
    return float(np.mean([psnr(t, o) for t, o in zip(clip[1::2], out[1::2])]))


def eval_shaken(method: Method, kept: Clip) -> tuple[float, float]:
    """Warping error and flicker of the output built from already-shaken kept frames."""
    out = method(kept)
    return warping_error(out), flicker(out)


def time_methods(methods: dict[str, Method], size: int, frames: Clip, repeats: int) -> dict[str, dict[str, list]]:
    """Wall-clock and CPU (this process, all threads) milliseconds per interpolated frame of each method on frames
    resized to size x size, one value per round; the methods run in turn within each round, so a change of
    machine load hits them all alike."""
    clip = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    for method in methods.values():
        method(clip[:3])  # warm-up (DIS objects, caches)
    times: dict[str, dict[str, list]] = {name: {"wall": [], "cpu": []} for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            method(clip)
            times[name]["wall"].append(1000.0 * (time.perf_counter() - wall) / (len(clip) - 1))
            times[name]["cpu"].append(1000.0 * (time.process_time() - cpu) / (len(clip) - 1))
    return times


def floor_ratio(times: dict[str, dict[str, list]], name: str, floor: str) -> tuple[float, float]:
    """Time over the floor's time in the same round, median over the rounds: (wall clock, CPU)."""
    return tuple(float(np.median(np.divide(times[name][k], times[floor][k]))) for k in ("wall", "cpu"))


def _speed_source(seqs: dict[str, Clip], triplets: dict[str, list]) -> Clip:
    """9 real frames to time on: the annarbor clip when present (real texture), else any sequence/triplets."""
    named = [clip for name, clip in seqs.items() if name.startswith("annarbor")]
    source = named[0] if named else next(iter(seqs.values()), None)
    if source is None:
        source = np.stack([t[1] for t in next(iter(triplets.values()))])
    return source[:9] if len(source) >= 9 else np.concatenate([source] * 9)[:9]


def machine() -> str:
    """CPU model, usable cores, load average, OS."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"{model}, {cores} usable cores, load average {load}, {platform.system()} {platform.release()}"


class Report:
    """Markdown lines, printed as they come and written to a file at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def section(self, title: str, text: str) -> None:
        """A '## title' heading and a paragraph."""
        for line in (f"## {title}", "", text, ""):
            self.say(line)

    def table(self, header: list[str], rows: list[list]) -> None:
        row = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"  # noqa: E731
        for line in [row(header), row(["---"] * len(header)), *[row(r) for r in rows]]:
            self.say(line)
        self.say()


def _mean(cells: list[tuple[float, ...]], i: int = 0) -> float:
    return float(np.mean([c[i] for c in cells]))


def _pct(new: float, ref: float) -> str:
    return f"{100 * (new - ref) / ref:+.1f}%"


# ----------------------------------------------------------------------------------------------- sections


@dataclass
class Data:
    """Everything scored: triplets, real sequences, pans, and the shaken kept frames of the sequences."""

    triplets: dict[str, list]
    seqs: dict[str, Clip]
    pans: dict[str, Clip]
    shaken: dict[str, Clip]


@dataclass
class Scores:
    """Per method: fidelity cells (triplet sets, sequences, mean), pan PSNRs, shaken (warp, flicker) cells."""

    fid: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    pan: dict[str, list[float]] = field(default_factory=dict)
    smooth: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    speed: dict[int, dict[str, list[float]]] = field(default_factory=dict)


def fidelity_section(r: Report, d: Data, methods: dict[str, Method], sc: Scores) -> None:
    """Triplets and real sequences: PSNR / SSIM of the rebuilt frames."""
    r.section("Fidelity: PSNR (dB) / SSIM of rebuilt middle frames",
              "Triplets: the pair is the whole clip, so `sofp` equals `flow_midpoint` there (D = 1). Sequences: every "
              "other frame dropped and rebuilt from the kept ones (window = whole clip).")
    for name, method in methods.items():
        cells = [eval_triplets(method, t) for t in d.triplets.values()]
        seq_cells = [eval_sequence(method, clip) for clip in d.seqs.values()]
        sc.fid[name] = cells + seq_cells + [(_mean(seq_cells, 0), _mean(seq_cells, 1))]
        print(f"  fidelity {name}: done", file=sys.stderr, flush=True)
    columns = [f"{k} ({len(v)})" for k, v in d.triplets.items()] + list(d.seqs) + ["sequences mean"]
    r.table(["method/flow", *columns], [[n, *[f"{p:.2f} / {s:.4f}" for p, s in c]] for n, c in sc.fid.items()])


def pan_section(r: Report, d: Data, methods: dict[str, Method], sc: Scores) -> None:
    """Pans of paintings and a photograph: PSNR of the rebuilt frames, and each sofp's gap to its midpoint."""
    r.section(f"Pans: PSNR (dB) of rebuilt frames, {PAN_FRAMES} frames of a {PAN_SIZE}x{PAN_SIZE} window",
              f"Images: {', '.join(f'{k} = `{v}`' for k, v in PAN_IMAGES.items())}. Case `3h`: 3 px/frame horizontally "
              "(`v`: vertically); the kept frames are 2 x that apart. Last columns: sofp minus flow_midpoint with the "
              "same flow, worst case and mean.")
    for name, method in methods.items():
        sc.pan[name] = [eval_pan(method, clip) for clip in d.pans.values()]
    rows = []
    for name, cells in sc.pan.items():
        ref = sc.pan.get(name.replace("sofp/", "flow_midpoint/")) if name.startswith("sofp/") else None
        gap = None if ref is None else np.subtract(cells, ref)
        gaps = ["-", "-"] if gap is None else [f"{gap.min():+.2f}", f"{gap.mean():+.2f}"]
        rows.append([name, *[f"{p:.2f}" for p in cells], f"{np.mean(cells):.2f}", *gaps])
    r.table(["method/flow", *d.pans, "mean", "sofp - midpoint: worst", "mean"], rows)


def smoothness_section(r: Report, d: Data, methods: dict[str, Method], sc: Scores) -> None:
    """The shaken sequences: warping error and flicker of the output."""
    r.section(f"Smoothness on the sequences with a random {SHAKE_PX} px shake per kept frame (seed {SEED})",
              "warping error: mean |o_t - warp(o_t+1)| (0-255, Farneback flow, occluded pixels masked); flicker: mean "
              "|o_t-1 - 2 o_t + o_t+1| (0-255). Lower is smoother for both. Cells: warping error / flicker.")
    for name, method in methods.items():
        cells = [eval_shaken(method, kept) for kept in d.shaken.values()]
        sc.smooth[name] = cells + [(_mean(cells, 0), _mean(cells, 1))]
        print(f"  smoothness {name}: done", file=sys.stderr, flush=True)
    rows = [[n, *[f"{w:.3f} / {f:.3f}" for w, f in c]] for n, c in sc.smooth.items()]
    r.table(["method/flow", *d.seqs, "mean"], rows)


def speed_section(r: Report, d: Data, methods: dict[str, Method], flows: list[str], sc: Scores) -> None:
    """ms per interpolated frame at 256 and 512 px, and the ratio to the two-flow floor of the same flow."""
    timed = dict(methods)
    for flow in flows:
        timed[f"two-flow floor/{flow}"] = functools.partial(two_flows, flow=interp.get_flow(flow))
    source = _speed_source(d.seqs, d.triplets)
    sc.speed = {size: time_methods(timed, size, source, SPEED_REPEATS) for size in (256, 512)}
    r.section(f"Speed: ms per interpolated frame, best of {SPEED_REPEATS} rounds on 9 annarbor frames resized",
              "In each round every row runs once, in turn. x floor: time over the two-flow floor of the same flow "
              "(the two flows per interpolated frame that the flow midpoint needs too) in the same round, median "
              "over the rounds, of wall-clock time and of CPU time (all threads of this process; steadier when "
              "other jobs share the machine, but blind to how well the work spreads over the cores).")
    rows = []
    for name in timed:
        cells = [name]
        for times in sc.speed.values():
            best = min(times[name]["wall"])
            floor = f"two-flow floor/{name.split('/')[-1]}"
            has_floor = "/" in name and floor in times
            cells += [f"{best:.1f}", f"{1000 / best:.1f}",
                      "{:.2f} / {:.2f}".format(*floor_ratio(times, name, floor)) if has_floor else "-"]
        rows.append(cells)
    r.table(["method/flow", "256 ms", "256 fps", "256 x floor (wall / CPU)", "512 ms", "512 fps",
             "512 x floor (wall / CPU)"], rows)


def targets_section(r: Report, d: Data, sc: Scores) -> None:
    """The targets of issue 4 (quality and fps) and issue 12 (pans, sequences, shake, speed), `dis` flow."""
    r.say("## Targets (issues 4 and 12, `dis` flow)")
    r.say()
    checks = []
    sofp, mid = "sofp/dis", "flow_midpoint/dis"
    if "Middlebury-other" in d.triplets:
        mb = list(d.triplets).index("Middlebury-other")
        for m in (sofp, mid):
            gain = sc.fid[m][mb][0] - sc.fid["crossfade"][mb][0]
            checks.append((f"{m} >= 3 dB above crossfade on Middlebury-other", gain >= 3, f"+{gain:.2f} dB"))
    if d.pans:
        gaps = np.subtract(sc.pan[sofp], sc.pan[mid])
        worst = list(d.pans)[int(np.argmin(gaps))]
        checks.append(("sofp >= flow_midpoint - 0.3 dB on every pan", gaps.min() >= -0.3,
                       f"worst {gaps.min():+.2f} dB ({worst}), mean {gaps.mean():+.2f} dB"))
    if d.seqs:
        gap = sc.fid[sofp][-1][0] - sc.fid[mid][-1][0]
        checks.append(("sofp >= flow_midpoint - 0.1 dB on the real sequences (mean)", gap >= -0.1, f"{gap:+.3f} dB"))
        (ws, fs), (wm, fm) = sc.smooth[sofp][-1], sc.smooth[mid][-1]
        checks.append(("sofp flicker >= 8% below flow_midpoint's on the shaken sequences", fs <= 0.92 * fm,
                       f"{fs:.3f} vs {fm:.3f} ({_pct(fs, fm)})"))
        checks.append(("sofp warping error <= 5% above flow_midpoint's on the shaken sequences", ws <= 1.05 * wm,
                       f"{ws:.3f} vs {wm:.3f} ({_pct(ws, wm)})"))
    if sc.speed:
        wall, cpu = floor_ratio(sc.speed[512], sofp, "two-flow floor/dis")
        checks.append(("sofp/dis at 512x512 <= 2x the two-flow floor (wall clock, median of rounds)", wall <= 2,
                       f"{wall:.2f}x (CPU time {cpu:.2f}x)"))
        for m in (sofp, mid):
            fps256, fps512 = (1000 / min(sc.speed[s][m]["wall"]) for s in (256, 512))
            checks.append((f"{m} >= 30 fps at 256x256", fps256 >= 30, f"{fps256:.1f} fps"))
            checks.append((f"{m} >= 10 fps at 512x512", fps512 >= 10, f"{fps512:.1f} fps"))
    r.table(["target", "met", "measured"], [[t, "yes" if ok else "**no**", v] for t, ok, v in checks])


def variants_section(r: Report, d: Data) -> None:
    """SOFP's routes and options, and midpoint options, against the default flow midpoint (DIS medium)."""
    r.section("Variants (DIS medium unless named)",
              "Gaps are to `flow_midpoint (default)`. Pans: worst / mean PSNR gap over the pan cases. Sequences: mean "
              "PSNR (gap). Shaken: mean warping error and flicker (change). Speed: time per interpolated frame at "
              "512x512 over the two-flow floor timed in the same round, median over 3 rounds (wall clock / CPU).")
    source = _speed_source(d.seqs, d.triplets)
    floor = functools.partial(two_flows, flow=interp.dis_flow)
    kept = next(iter(d.seqs.values()))[0::2]
    assert np.array_equal(sofp_route(kept, "chain"), interp.sofp(kept)), "sofp_route('chain') must be interp.sofp"
    scores = {}
    for name, method in variant_table().items():
        mb = eval_triplets(method, d.triplets["Middlebury-other"])[0] if "Middlebury-other" in d.triplets else np.nan
        shaken = [eval_shaken(method, kept) for kept in d.shaken.values()]
        scores[name] = {
            "mb": mb, "pans": [eval_pan(method, clip) for clip in d.pans.values()],
            "seq": _mean([eval_sequence(method, clip) for clip in d.seqs.values()]),
            "warp": _mean(shaken, 0), "flick": _mean(shaken, 1),
            "ratio": floor_ratio(time_methods({"v": method, "floor": floor}, 512, source, 3), "v", "floor"),
        }
        print(f"  variant {name}: done", file=sys.stderr, flush=True)
    ref = scores["flow_midpoint (default)"]
    rows = []
    for name, v in scores.items():
        gaps = np.subtract(v["pans"], ref["pans"])
        rows.append([name, f"{v['mb']:.2f}", f"{gaps.min():+.2f} / {gaps.mean():+.2f}",
                     f"{v['seq']:.2f} ({v['seq'] - ref['seq']:+.3f})", f"{v['warp']:.3f} ({_pct(v['warp'], ref['warp'])})",
                     f"{v['flick']:.3f} ({_pct(v['flick'], ref['flick'])})", "{:.2f} / {:.2f}".format(*v["ratio"])])
    r.table(["variant", "Middlebury PSNR", "pans gap worst / mean", "sequences PSNR", "shaken warp error",
             "shaken flicker", "512 x floor (wall / CPU)"], rows)


def main(argv: list[str] | None = None) -> int:
    """Run everything, print the tables, write the markdown file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--variants", action="store_true", help="also score SOFP routes and options")
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"data folder {args.data} not found (pass --data)", file=sys.stderr)
        return 2
    started = time.time()
    r = Report()

    # 1. set-up: machine, versions, flows, data
    flows = available_flows()
    usable = [f for f, why in flows.items() if not why]
    methods = method_table(usable)
    seqs = load_sequences(args.data)
    rng = np.random.default_rng(SEED)
    d = Data(load_triplets(args.data), seqs, load_pans(args.data), {k: shake(c[0::2], rng) for k, c in seqs.items()})
    r.say("# Interpolation benchmark (paper Sec. III-E)")
    r.say()
    r.say(f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    r.say(f"- machine (at start): {machine()}; OpenCV threads: {cv2.getNumThreads()}")
    r.say("- note: timings depend on what else the machine runs (see the load averages at start and end), so "
          "compare ratios measured in one run; quality numbers are deterministic.")
    r.say("- versions: " + ", ".join(f"{k} {v}" for k, v in environment_versions().items()))
    r.say(f"- data: {args.data}")
    for f, why in flows.items():
        if why:
            r.say(f"- flow backend `{f}` not run: {why}")
    r.say("- sofp defaults: " + ", ".join(f"{k}={v}" for k, v in interp.SOFP_DEFAULTS.items())
          + f", DIS preset {interp.DEFAULT_DIS_PRESET}, window = whole clip")
    r.say()

    # 2. fidelity, 3. pans, 4. smoothness, 5. speed, 6. targets, 7. variants (optional)
    sc = Scores()
    fidelity_section(r, d, methods, sc)
    pan_section(r, d, methods, sc)
    smoothness_section(r, d, methods, sc)
    if not args.no_speed:
        speed_section(r, d, methods, usable, sc)
    targets_section(r, d, sc)
    if args.variants:
        variants_section(r, d)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    r.say(f"Total benchmark time: {time.time() - started:.0f} s; load average at the end: {load}.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(r.lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
