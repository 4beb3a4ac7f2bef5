"""Cost of `nadm animate` against `nadm generate` at the same size, frames, steps and guidance (issue 14: <= 5% extra).

Both run the one denoising loop; animating adds reading and fitting the painting, one VAE encode, the hold after
every sampler step, and colour anchoring + compositing after decoding. This script times, in one run with the runs
of the variants interleaved (`--repeats` runs of each after one warm-up):

1. text-to-video, `pipe(prompt, ...)`;
2. `pipe.animate(painting, prompt, ...)`; and with a still mask (the left third held);
3. the parts animate adds, each on its own: reading + fitting the painting, encoding it and the holds of every step,
   colour anchoring and compositing the frames.

Whole clips count the fastest of the interleaved repeats (load only ever adds time), parts the median.

    python benchmarks/animate.py                 # tiny random models on the CPU -> benchmarks/results/animate.md/.json
    python benchmarks/animate.py --sd15          # SD 1.5's architecture with random weights, on CUDA (bf16)

The painting is a real album leaf from ../shared/data/paintings (the script stops when it is absent). With the tiny
models only the ratios mean something, and only for tiny models: their UNet is a much smaller share of the work
than SD 1.5's, so the fixed costs of animating should weigh more here than on the real model (not measured).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nadm.io import environment_versions

RESULTS = Path(__file__).resolve().parent / "results"
PAINTING = Path(__file__).resolve().parents[2] / "shared" / "data" / "paintings" / "stevenling_landscape" / "shanshui_train_068.jpg"
PROMPT = "a Chinese landscape painting, mist drifting over the mountains, water flowing"
TARGET_EXTRA = 0.05  # the bound on the extra cost of animating


@dataclass(frozen=True)
class Setting:
    name: str
    frames: int
    height: int
    width: int
    steps: int = 25
    guidance: float = 8.0
    interpolate: bool = False


TINY = (Setting("tiny, 8 f, 64x112", 8, 64, 112), Setting("tiny, 16 f, 72x128", 16, 72, 128),
        Setting("tiny, 8 f, 64x112, + SOFP", 8, 64, 112, interpolate=True))  # fmt: skip
SD15 = (Setting("SD 1.5, 16 f, 296x512 (the leaf's default size)", 16, 296, 512),
        Setting("SD 1.5, 8 f, 256x448", 8, 256, 448), Setting("SD 1.5, 16 f, 296x512, + SOFP", 16, 296, 512, interpolate=True))  # fmt: skip


def still_mask(folder: Path) -> Path:
    """A still mask of the painting's proportions: the left third white (held), the rest black (moving)."""
    from PIL import Image

    width, height = Image.open(PAINTING).size
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 3] = 255
    path = folder / "still.png"
    Image.fromarray(mask).save(path)
    return path


def timed(fn, device: str) -> float:
    """Seconds `fn` takes: wall-clock on CUDA; on the CPU the process's CPU time (one thread), which the other
    programs sharing a loaded machine disturb far less than the wall clock."""
    from speed import sync  # benchmarks/speed.py, beside this script

    clock = time.perf_counter if device.startswith("cuda") else time.process_time
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


def bench(pipe, s: Setting, mask: Path, device: str, repeats: int) -> dict:
    """Median seconds of text-to-video, animate and animate with a still mask (interleaved), and of animate's parts."""

    common = dict(num_frames=s.frames, steps=s.steps, guidance=s.guidance, seed=0, interpolate=s.interpolate)
    size = dict(height=s.height, width=s.width)
    variants = {
        "text-to-video": lambda: pipe(PROMPT, **size, **common),
        "animate": lambda: pipe.animate(PAINTING, PROMPT, **size, **common),
        "animate + still mask": lambda: pipe.animate(PAINTING, PROMPT, still=mask, **size, **common),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for name, fn in variants.items():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn, device))
    seconds = {name: min(t) for name, t in times.items()}  # the least disturbed run: load only ever adds time
    base = seconds["text-to-video"]
    parts = bench_parts(pipe, s, mask, device, repeats)
    return {"setting": asdict(s), "seconds": seconds, "extra": {k: v / base - 1 for k, v in seconds.items()},
            "spread": {k: (max(t) - min(t)) / statistics.median(t) for k, t in times.items()},
            "parts": parts, "parts_share": sum(parts.values()) / base}  # fmt: skip


def bench_parts(pipe, s: Setting, mask: Path, device: str, repeats: int) -> dict[str, float]:
    """Median seconds of each thing animating adds to text-to-video, timed alone (with a still mask: the most work)."""
    from nadm.animate import PaintingCondition, prepare_painting
    from nadm.pipeline import make_scheduler

    painting = prepare_painting(PAINTING, mask, height=s.height, width=s.width)
    condition = PaintingCondition(painting)
    frames = np.repeat(painting.pixels[None], s.frames, axis=0)[..., ::-1].copy()  # stand-in decoded frames, off-colour
    if s.interpolate:  # SOFP's in-between frames are anchored and composited too
        frames = np.repeat(frames, 2, axis=0)[:-1]
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(s.steps, device=pipe.device)
    latent = (1, pipe.latent_channels, s.frames, s.height // pipe.vae_scale, s.width // pipe.vae_scale)
    noise = torch.randn(latent, generator=torch.Generator().manual_seed(0)).to(pipe.device)

    def holds():  # the start and the hold after every step, as the loop runs them
        latents, start, (hold,) = condition.start(pipe, scheduler, noise, noise)
        for index in range(start, s.steps + 1):
            latents = hold(latents, scheduler, index)

    work = {
        "read + fit painting and mask": lambda: prepare_painting(PAINTING, mask, height=s.height, width=s.width),
        "encode painting + holds at every step": holds,
        "colour anchoring + compositing": lambda: condition.finish(frames, range(1, len(frames))),
    }
    with torch.inference_mode():
        return {name: statistics.median(timed(fn, device) for _ in range(repeats)) for name, fn in work.items()}


def report(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Animate a painting: cost against text-to-video",
        "",
        f"Written by `python benchmarks/animate.py{' --sd15' if meta['sd15'] else ''}` on {meta['date']}.",
        f"Machine: {meta['machine']}. Device: {meta['device']}, {meta['dtype']}.",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v),
        f"Models: {'SD 1.5 published architecture, random weights (nadm.sd15)' if meta['sd15'] else 'tiny random stand-ins (nadm.tiny)'}; "
        f"painting {meta['painting']}; DDIM, 25 steps, guidance 8, seed 0; whole clips: the fastest of {meta['repeats']} "
        f"interleaved runs after a warm-up, parts: the median{'' if meta['device'].startswith('cuda') else '; one thread, seconds of CPU time (the machine is shared)'}.",
        "",
        "Whole clips (seconds), and what animating adds, each part timed alone:",
        "",
        "| setting | text-to-video | animate | extra | animate + still mask | extra | run-to-run spread | "
        + " | ".join(results["rows"][0]["parts"]) + " | parts / text-to-video | within 5% |",
        "|---|" + "---:|" * (6 + len(results["rows"][0]["parts"])) + "---|",
    ]  # fmt: skip
    for r in results["rows"]:
        s, e = r["seconds"], r["extra"]
        ok = max(e["animate"], e["animate + still mask"], r["parts_share"]) <= TARGET_EXTRA
        lines.append(f"| {r['setting']['name']} | {s['text-to-video']:.3f} | {s['animate']:.3f} | {100 * e['animate']:+.1f}% "
                     f"| {s['animate + still mask']:.3f} | {100 * e['animate + still mask']:+.1f}% "
                     f"| {100 * max(r['spread'].values()):.0f}% | " + " | ".join(f"{v:.4f}" for v in r["parts"].values())
                     + f" | {100 * r['parts_share']:.1f}% | {'yes' if ok else 'NO'} |")  # fmt: skip
    lines += ["", "Run-to-run spread: (slowest - fastest) / median over the repeats of a variant, the largest of the three: "
              "differences between whole clips smaller than it are noise. The parts are deterministic work and add up to "
              "the cost animating adds (with a still mask and, in the SOFP row, the in-between frames too)."]  # fmt: skip
    if not meta["sd15"]:
        lines += ["", "## SD 1.5 on a GPU: not yet measured", "",
                  "No GPU was available to the session that wrote this file. What animating adds grows with the pixels "
                  "(fitting, one VAE encode, finishing the frames on the CPU), not with the UNet, so its share should be "
                  "smaller next to SD 1.5's far heavier UNet than next to the tiny one above; that is not measured. Run "
                  "`python benchmarks/animate.py --sd15` on a CUDA machine for the real figure."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from speed import build_models, machine, nadm_pipeline  # benchmarks/speed.py, beside this script

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true", help="SD 1.5's architecture with random weights (a GPU job)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "animate.md")
    args = parser.parse_args(argv)
    if not PAINTING.is_file():
        parser.error(f"the painting {PAINTING} is not here (../shared/data)")
    if args.sd15 and not args.device.startswith("cuda"):
        parser.error("--sd15 needs a CUDA device: on a CPU run the tiny models (no --sd15)")
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    if not args.device.startswith("cuda"):  # tiny models on a shared CPU: one thread avoids OpenMP oversubscription stalls
        torch.set_num_threads(1)
    meta = {"sd15": args.sd15, "device": args.device, "dtype": str(dtype).removeprefix("torch."), "machine": machine(args.device),
            "versions": environment_versions(), "repeats": args.repeats, "date": str(datetime.date.today()),
            "painting": str(PAINTING.relative_to(PAINTING.parents[3]))}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(not args.sd15, Path(tmp) / "tokenizer")
        pipe = nadm_pipeline(models, args.device, dtype)
        mask = still_mask(Path(tmp))
        for s in SD15 if args.sd15 else TINY:
            rows.append(bench(pipe, s, mask, args.device, args.repeats))
            print(f"{s.name}: " + ", ".join(f"{k} {v:.3f} s" for k, v in rows[-1]["seconds"].items()), file=sys.stderr)
    results = {"meta": meta, "rows": rows}
    text = report(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
