"""Seams of context-window schedules (issue 15): which schedule `nadm.windows` uses by default.

A random tiny model makes frames that hardly depend on each other, so a seam cannot be told from the frames' own
changes: with independent noise per frame every pair of frames differs alike (a first run found every ratio below
within 2% of 1 for every schedule). The probe therefore gives the model *smoothly drifting* initial noise
(z_j = cos(2 pi j / P) a + sin(2 pi j / P) b, unit variance, period P frames) and motion weights scaled up (x3) so the
motion module couples frames strongly, and measures on the denoised latents z_0, per pair of neighbouring frames,
the temporal difference d_j = mean |z_{j+1} - z_j|:

- **edge excess**: with r_j = d_j / d_j(reference), the mean of r over the static schedule's window-edge pairs
  (a window's first frame entering, its last frame leaving) divided by the mean of r over the other pairs; the
  reference is the same clip made in one window of all N = 32 frames (the position table's length); 1.0 = no seam;
- **max r**: the largest r_j anywhere (a shifting schedule moves its edges, so its seams need not be at the
  static edges);
- **off reference**: mean |z_0 - z_0(reference)| / mean |z_0(reference)|: how far windows move the clip from what
  one window of all frames makes;
- **wrap/inside** (loops; noise periodic over the clip, P = N): d between the last and the first frame divided
  by the mean d inside the clip: 1.0 = the loop's wrap is as smooth as any other pair.

Compared at N = 32, context 16, overlap 4: static, shifting and diffusers' FreeNoise (windows inside the motion
modules, `FreeNoiseTransformerBlock`, pyramid weights, NADM's attention processors put back after the swap, stride
12); loops: ring windows at N = 24 and the rolled window at N = 12, against the same noise without a loop. DDIM,
guidance 8, tiny random models (nadm.tiny). A random model says where windows leave marks, not how a trained
model looks.

    python benchmarks/window_seams.py [--seeds 3] [--steps 10]   -> benchmarks/results/window_seams.md/.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from nadm.io import environment_versions

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "a misty Chinese ink landscape, mountains and a river, clouds drifting"
MOTION_SCALE = 3.0


def drifting_noise(num_frames: int, period: int, seed: int, size: int) -> torch.Tensor:
    """Unit-variance noise `(1, 4, N, size, size)` turning smoothly from field a toward b, period `period` frames."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, 1, 4, 1, size, size, generator=g)
    angle = (torch.arange(num_frames) * (2 * math.pi / period)).view(1, 1, -1, 1, 1)
    return torch.cos(angle) * a + torch.sin(angle) * b


def pair_differences(z: torch.Tensor) -> torch.Tensor:
    """d_j = mean |z_{j+1} - z_j|, `(N - 1,)`; z `(1, c, N, h, w)`."""
    return (z[:, :, 1:] - z[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4))


def edge_pairs(num_frames: int, context: int, overlap: int) -> list[int]:
    """Pair indices j (pair (j, j+1)) at the static schedule's window edges."""
    from nadm.windows import ContextPlan

    edges = set()
    for start in ContextPlan(num_frames, context, overlap).starts(0):
        if start > 0:
            edges.add(start - 1)  # the window's first frame enters
        if start + context - 1 < num_frames - 1:
            edges.add(start + context - 1)  # its last frame leaves
    return sorted(edges)


def seam_scores(z: torch.Tensor, reference: torch.Tensor, edges: list[int]) -> dict[str, float]:
    r = pair_differences(z) / pair_differences(reference)
    inside = torch.ones_like(r, dtype=torch.bool)
    inside[edges] = False
    return {
        "edge_excess": float(r[edges].mean() / r[inside].mean()),
        "max_r": float(r.max()),
        "off_reference": float((z - reference).abs().mean() / reference.abs().mean()),
    }


def wrap_score(z: torch.Tensor) -> dict[str, float]:
    wrap = (z[:, :, 0] - z[:, :, -1]).abs().mean()
    return {"wrap_inside": float(wrap / pair_differences(z).mean())}


class FreeNoise:
    """diffusers' FreeNoise motion-module windows on nadm's video UNet, switched on and off (benchmark only)."""

    def __init__(self, pipe, context: int, stride: int):
        self.pipe, self.unet = pipe, pipe.video_unet
        self._free_noise_context_length = context
        self._free_noise_context_stride = stride
        self._free_noise_weighting_scheme = "pyramid"
        self.device, self.dtype = self.unet.device, self.unet.dtype

    def _blocks(self):
        return [*self.unet.down_blocks, self.unet.mid_block, *self.unet.up_blocks]

    def __enter__(self):
        from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin

        from nadm.motion import set_motion_attention

        for block in self._blocks():
            if getattr(block, "motion_modules", None) is not None:
                AnimateDiffFreeNoiseMixin._enable_free_noise_in_block(self, block)
        set_motion_attention(self.unet, self.pipe.motion_config)  # the swap rebuilt attn1/attn2 with default processors
        return self

    def __exit__(self, *exc):
        from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin

        from nadm.motion import set_motion_attention

        for block in self._blocks():
            if getattr(block, "motion_modules", None) is not None:
                AnimateDiffFreeNoiseMixin._disable_free_noise_in_block(self, block)
        set_motion_attention(self.unet, self.pipe.motion_config)


def run(args) -> dict:
    from nadm.motion import predict_noise
    from nadm.pipeline import NADMPipeline, make_scheduler
    from nadm.sampling import OnePrompt, denoise
    from nadm.tiny import build_tiny_base, build_tiny_motion
    from nadm.windows import ContextPlan

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="nadm-seams-"))
    pipe = NADMPipeline.from_pretrained(build_tiny_base(root / "base"), motion=build_tiny_motion(root / "motion"), progress=False)
    with torch.no_grad():  # stronger temporal coupling than the selftest's 0.05-std random motion weights
        for name, p in pipe.video_unet.named_parameters():
            if "motion_modules" in name and p.ndim == 2:
                p.mul_(MOTION_SCALE)
    text = OnePrompt(pipe.encode_prompt(["", PROMPT]))
    size, c, o = args.size // 8, 16, 4

    def sample(z, plan):
        scheduler = make_scheduler("ddim")
        scheduler.set_timesteps(args.steps)
        with torch.inference_mode():
            unet = lambda x, t, tx: predict_noise(pipe.video_unet, x, t, tx)  # noqa: E731
            return denoise(unet, scheduler, z * scheduler.init_noise_sigma, text, 8.0, windows=plan, progress=False)

    rows: dict[str, dict[str, list[float]]] = {}

    def add(name, scores):
        for key, value in scores.items():
            rows.setdefault(name, {}).setdefault(key, []).append(value)

    start = time.perf_counter()
    n, edges = 32, edge_pairs(32, c, o)
    for seed in range(args.seeds):
        z = drifting_noise(n, 64, seed, size)
        reference = sample(z, ContextPlan(n, n, 0))
        for schedule in ("static", "shifting"):
            add(f"N=32 {schedule}", seam_scores(sample(z, ContextPlan(n, c, o, schedule)), reference, edges))
        with FreeNoise(pipe, c, c - o):
            add("N=32 FreeNoise (motion-module windows)", seam_scores(sample(z, ContextPlan(n, n, 0)), reference, edges))
        for frames, name in ((24, "ring windows (static)"), (12, "rolled window")):
            looped = drifting_noise(frames, frames, seed, size)
            add(f"loop N={frames}: {name}", wrap_score(sample(looped, ContextPlan(frames, c, o, loop=True))))
            add(f"loop N={frames}: same noise, no loop", wrap_score(sample(looped, ContextPlan(frames, c, o))))
        print(f"seed {seed} done, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return {
        "rows": {name: {k: {"mean": statistics.fmean(v), "stdev": statistics.stdev(v) if len(v) > 1 else 0.0}
                        for k, v in cols.items()} for name, cols in rows.items()},  # fmt: skip
        "settings": {"frames": n, "context": c, "overlap": o, "seeds": args.seeds, "steps": args.steps, "size": args.size,
                     "guidance": 8.0, "scheduler": "ddim", "threads": args.threads, "motion_scale": MOTION_SCALE},  # fmt: skip
        "machine": f"{platform.machine()} CPU (2-core AMD EPYC, shared), {args.threads} threads, no GPU",
        "date": datetime.date.today().isoformat(),
        "seconds": time.perf_counter() - start,
        "versions": environment_versions(),
    }


def table(result: dict) -> str:
    keys = ("edge_excess", "max_r", "off_reference", "wrap_inside")
    lines = ["| schedule | edge excess | max r | off reference | wrap/inside |", "|---|---:|---:|---:|---:|"]
    for name, cols in result["rows"].items():
        cell = lambda k: f"{cols[k]['mean']:.3f} ± {cols[k]['stdev']:.3f}" if k in cols else ""  # noqa: E731
        lines.append(f"| {name} | " + " | ".join(cell(k) for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "window_seams.md")
    args = parser.parse_args()
    result = run(args)
    text = table(result)
    print(text)
    s = result["settings"]
    header = (
        "# Seams of context-window schedules\n\n"
        f"Written by `python benchmarks/window_seams.py` on {result['date']} ({result['seconds']:.0f} s). "
        f"Machine: {result['machine']}. Tiny random models (nadm.tiny, motion weights x{s['motion_scale']:g}), "
        f"{s['size']}x{s['size']}, DDIM {s['steps']} steps, guidance 8, context {s['context']}, overlap {s['overlap']}, "
        f"drifting initial noise, mean ± stdev over {s['seeds']} seeds. Measures on the denoised latents, defined in "
        "the script's docstring; 1.0 = no seam (edge excess, wrap/inside).\n\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
