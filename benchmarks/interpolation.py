"""Benchmark of frame interpolation (paper Sec. III-E): fidelity, smoothness and speed of every method x flow.

Run: `python benchmarks/interpolation.py [--data ../shared/data] [--variants] [--out benchmarks/results/interpolation.md]`

1. Fidelity: PSNR / SSIM of rebuilt middle frames on the Middlebury-other and UCF101 triplets (ground-truth
   middle frames), and on whole sequences (sky time-lapse tiles, the annarbor moving-camera clip, the
   Animating-Landscape sky frames) with every other frame dropped and rebuilt.
2. Smoothness: the same sequences with a seeded random 1.5 px shake added to every kept frame; flow warping
   error (Farneback flow between consecutive output frames, occluded pixels masked out) and flicker (mean
   absolute second difference over time) of the output.
3. Speed: milliseconds per interpolated frame at 256x256 and 512x512.
With --variants, SOFP/midpoint variants (how D_t weighs the warp, smoothing of D_t, occlusion weights, DIS
preset, window) are scored on the sequences too: the numbers behind sofp's defaults.
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
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nadm import interpolate as interp  # noqa: E402
from nadm.io import environment_versions, read_video  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "interpolation.md"
SHAKE_PX = 1.5
SEED = 0
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
    h, w = clip.shape[1:3]
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
    errors = []
    for a, b in zip(clip[:-1], clip[1:]):
        fab, fba = _farneback(a, b), _farneback(b, a)
        warped = cv2.remap(b, grid + fab, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        back = cv2.remap(fba, grid + fab, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        err = np.sum((fab + back) ** 2, -1)
        visible = err <= 0.01 * (np.sum(fab**2, -1) + np.sum(back**2, -1)) + 0.5
        inside = (grid[..., 0] + fab[..., 0] >= 0) & (grid[..., 0] + fab[..., 0] <= w - 1)
        inside &= (grid[..., 1] + fab[..., 1] >= 0) & (grid[..., 1] + fab[..., 1] <= h - 1)
        mask = visible & inside
        diff = np.abs(a.astype(np.float32) - warped.astype(np.float32)).mean(-1)
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


def method_table(flows: list[str]) -> dict[str, Method]:
    """Every method with every usable flow backend (crossfade needs none)."""
    methods: dict[str, Method] = {"crossfade": interp.crossfade}
    for flow in flows:
        fn = interp.get_flow(flow)
        methods[f"flow_midpoint/{flow}"] = functools.partial(interp.flow_midpoint, flow=fn)
        methods[f"sofp/{flow}"] = functools.partial(interp.sofp, flow=fn)
    return methods


def variant_table() -> dict[str, Method]:
    """SOFP and midpoint variants (all DIS) that decided sofp's defaults; the first is DESIGN.md's reading."""
    p = functools.partial
    v: dict[str, Method] = {
        "crossfade": interp.crossfade,
        "flow_midpoint (default)": interp.flow_midpoint,
        "flow_midpoint, no occlusion weights": p(interp.flow_midpoint, occlusion=False),
        "sofp DESIGN.md reading: scale, smooth 0, no reliability": p(
            interp.sofp, mode="scale", smooth=0.0, reliability=False
        ),
        "sofp scale, smooth 6, no reliability": p(interp.sofp, mode="scale", smooth=6.0, reliability=False),
        "sofp blend, smooth 6, no reliability": p(interp.sofp, mode="blend", smooth=6.0, reliability=False),
        "sofp scale, smooth 6, reliability": p(interp.sofp, mode="scale", smooth=6.0, reliability=True),
        "sofp blend, smooth 0, reliability": p(interp.sofp, mode="blend", smooth=0.0, reliability=True),
        "sofp blend, smooth 6, reliability (default)": interp.sofp,
        "sofp default, no occlusion weights": p(interp.sofp, occlusion=False),
        "sofp default, window 2": p(interp.sofp, window=2),
        "sofp default, window 4": p(interp.sofp, window=4),
    }
    for preset in ("ultrafast", "fast"):
        fn = p(interp.dis_flow, preset=preset)
        v[f"flow_midpoint, DIS {preset}"] = p(interp.flow_midpoint, flow=fn)
        v[f"sofp default, DIS {preset}"] = p(interp.sofp, flow=fn)
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


def eval_shaken(method: Method, kept: Clip) -> tuple[float, float]:
    """Warping error and flicker of the output built from already-shaken kept frames."""
    out = method(kept)
    return warping_error(out), flicker(out)


def time_method(method: Method, size: int, frames: Clip, repeats: int = 5) -> float:
    """Best-of-repeats milliseconds per interpolated frame on frames resized to size x size."""
    clip = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    method(clip[:2])  # warm-up (DIS objects, caches)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        method(clip)
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best / (len(clip) - 1)


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


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *[_row(r) for r in rows]]


def main(argv: list[str] | None = None) -> int:
    """Run everything, print the tables, write the markdown file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--variants", action="store_true", help="also score SOFP/midpoint variants")
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"data folder {args.data} not found (pass --data)", file=sys.stderr)
        return 2
    started = time.time()
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    # 1. set-up: machine, versions, flows, data
    versions = environment_versions()
    flows = available_flows()
    usable = [f for f, why in flows.items() if not why]
    methods = method_table(usable)
    triplets = load_triplets(args.data)
    seqs = load_sequences(args.data)
    rng = np.random.default_rng(SEED)
    shaken = {name: shake(clip[0::2], rng) for name, clip in seqs.items()}
    say("# Interpolation benchmark (paper Sec. III-E)")
    say()
    say(f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    say(f"- machine (at start): {machine()}; OpenCV threads: {cv2.getNumThreads()}")
    say("- note: timings depend on what else the machine runs (see the load averages at start and end); "
        "quality numbers are deterministic.")
    say("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    say(f"- data: {args.data}")
    for f, why in flows.items():
        if why:
            say(f"- flow backend `{f}` not run: {why}")
    say("- sofp defaults: " + ", ".join(f"{k}={v}" for k, v in interp.SOFP_DEFAULTS.items())
        + f", DIS preset {interp.DEFAULT_DIS_PRESET}, window = whole clip")
    say()

    # 2. fidelity
    say("## Fidelity: PSNR (dB) / SSIM of rebuilt middle frames")
    say()
    say("Triplets: the pair is the whole clip, so `sofp` equals `flow_midpoint` there (D = 1). Sequences: every "
        "other frame dropped and rebuilt from the kept ones (window = whole clip).")
    say()
    columns = [f"{k} ({len(v)})" for k, v in triplets.items()] + list(seqs) + ["sequences mean"]
    fid: dict[str, list[tuple[float, float]]] = {}
    for name, method in methods.items():
        cells = [eval_triplets(method, t) for t in triplets.values()]
        seq_cells = [eval_sequence(method, clip) for clip in seqs.values()]
        mean = (float(np.mean([c[0] for c in seq_cells])), float(np.mean([c[1] for c in seq_cells])))
        fid[name] = cells + seq_cells + [mean]
        print(f"  fidelity {name}: done", file=sys.stderr, flush=True)
    for line in _table(["method/flow", *columns], [[n, *[f"{p:.2f} / {s:.4f}" for p, s in c]] for n, c in fid.items()]):
        say(line)
    say()

    # 3. smoothness on shaken sequences
    say(f"## Smoothness on the sequences with a random {SHAKE_PX} px shake per kept frame (seed {SEED})")
    say()
    say("warping error: mean |o_t - warp(o_t+1)| (0-255, Farneback flow, occluded pixels masked); flicker: mean "
        "|o_t-1 - 2 o_t + o_t+1| (0-255). Lower is smoother for both. Cells: warping error / flicker.")
    say()
    smooth: dict[str, list[tuple[float, float]]] = {}
    for name, method in methods.items():
        cells = [eval_shaken(method, kept) for kept in shaken.values()]
        cells.append((float(np.mean([c[0] for c in cells])), float(np.mean([c[1] for c in cells]))))
        smooth[name] = cells
        print(f"  smoothness {name}: done", file=sys.stderr, flush=True)
    for line in _table(["method/flow", *seqs, "mean"], [[n, *[f"{w:.3f} / {f:.3f}" for w, f in c]] for n, c in smooth.items()]):
        say(line)
    say()

    # 4. speed
    speed: dict[str, dict[int, float]] = {}
    if not args.no_speed:
        say("## Speed: ms per interpolated frame (fps = interpolated frames per second), best of 5 runs of 9 annarbor frames resized")
        say()
        source = _speed_source(seqs, triplets)
        for name, method in methods.items():
            speed[name] = {s: time_method(method, s, source) for s in (256, 512)}
        for line in _table(
            ["method/flow", "256x256 ms", "256x256 fps", "512x512 ms", "512x512 fps"],
            [[n, f"{v[256]:.1f}", f"{1000 / v[256]:.1f}", f"{v[512]:.1f}", f"{1000 / v[512]:.1f}"] for n, v in speed.items()],
        ):
            say(line)
        say()

    # 5. targets (DIS, as set by issue 4)
    say("## Targets (issue 4, `dis` flow)")
    say()
    mb = list(triplets).index("Middlebury-other") if "Middlebury-other" in triplets else None
    seq_mean = len(triplets) + len(seqs)
    checks = []
    if mb is not None:
        for m in ("sofp/dis", "flow_midpoint/dis"):
            gain = fid[m][mb][0] - fid["crossfade"][mb][0]
            checks.append((f"{m} >= 3 dB above crossfade on Middlebury-other", gain >= 3, f"+{gain:.2f} dB"))
    if seqs:
        gap = fid["sofp/dis"][seq_mean][0] - fid["flow_midpoint/dis"][seq_mean][0]
        checks.append(("sofp within 0.5 dB of flow_midpoint on the sequences (mean)", gap >= -0.5, f"{gap:+.2f} dB"))
        fs, fm = smooth["sofp/dis"][-1][1], smooth["flow_midpoint/dis"][-1][1]
        checks.append(("sofp flickers less than flow_midpoint on the shaken sequences", fs < fm,
                       f"{fs:.3f} vs {fm:.3f} ({100 * (fs - fm) / fm:+.1f}%)"))
        ws, wm = smooth["sofp/dis"][-1][0], smooth["flow_midpoint/dis"][-1][0]
        checks.append(("(not a target) sofp warping error vs flow_midpoint on the shaken sequences", None,
                       f"{ws:.3f} vs {wm:.3f} ({100 * (ws - wm) / wm:+.1f}%)"))
    for m in ("sofp/dis", "flow_midpoint/dis"):
        if m in speed:
            checks.append((f"{m} >= 30 fps at 256x256", 1000 / speed[m][256] >= 30, f"{1000 / speed[m][256]:.1f} fps"))
            checks.append((f"{m} >= 10 fps at 512x512", 1000 / speed[m][512] >= 10, f"{1000 / speed[m][512]:.1f} fps"))
    for line in _table(["target", "met", "measured"],
                       [[t, "-" if ok is None else ("yes" if ok else "**no**"), v] for t, ok, v in checks]):
        say(line)
    say()

    # 6. variants (optional): the evidence behind sofp's defaults
    if args.variants:
        say("## Variants (DIS medium unless named)")
        say()
        say("Middlebury-other PSNR; sequences mean PSNR / SSIM; shaken sequences mean warping error / flicker; "
            "ms per interpolated frame at 512x512 (best of 3; noisy on the shared machine).")
        say()
        rows = []
        source = _speed_source(seqs, triplets)
        for name, method in variant_table().items():
            mb_psnr = eval_triplets(method, triplets["Middlebury-other"])[0] if "Middlebury-other" in triplets else float("nan")
            f_cells = [eval_sequence(method, clip) for clip in seqs.values()]
            s_cells = [eval_shaken(method, kept) for kept in shaken.values()]
            rows.append([
                name,
                f"{mb_psnr:.2f}",
                f"{np.mean([c[0] for c in f_cells]):.2f} / {np.mean([c[1] for c in f_cells]):.4f}",
                f"{np.mean([c[0] for c in s_cells]):.3f} / {np.mean([c[1] for c in s_cells]):.3f}",
                f"{time_method(method, 512, source, repeats=3):.1f}",
            ])
            print(f"  variant {name}: done", file=sys.stderr, flush=True)
        for line in _table(["variant", "Middlebury PSNR", "sequences PSNR / SSIM", "shaken warp err / flicker",
                            "512 ms"], rows):
            say(line)
        say()

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    say(f"Total benchmark time: {time.time() - started:.0f} s; load average at the end: {load}.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
