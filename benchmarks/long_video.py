"""Long clips (issue 15): seconds per generated frame and peak memory of the denoising stage at 16-128 frames.

The stage is `nadm.sampling.denoise` with the context windows `nadm.windows.plan_windows` makes (C = 16, O = 4,
the default shifting schedule, one window per UNet call), guidance 8 (UNet batch 2). For comparison the same
clips run through diffusers' FreeNoise (`FreeNoiseTransformerBlock`: windows inside the motion modules only, NADM's
attention processors put back after the swap), where the spatial layers see all N frames in every UNet call.

1. **tiny** (any machine): nadm's tiny random models (nadm.tiny), 64x64, DDIM, one CPU thread. Time: CPU seconds of
   the process for the stage (`time.process_time`, less disturbed than wall time by other jobs on a shared
   machine; wall seconds are recorded too), the faster of `--repeats` runs. Memory: the peak of the bytes of all
   tensor storages the stage creates and holds at once (a TorchDispatchMode that sees every operator's outputs,
   `LiveBytes` from benchmarks/train_memory.py), in a separate run (tracking slows it down).
2. **SD 1.5 size on fake tensors** (any machine): SD 1.5's UNet architecture + NADM motion modules in bfloat16 at
   512x512 under PyTorch's FakeTensorMode (shapes without data), the same live-bytes peak for one sampler step of
   a stand-in sampler (DDIM's step cannot run on fake tensors; its few clip-sized tensors are left out). What a GPU
   adds on top (CUDA context, workspaces, allocator fragmentation) is not in it.
3. **CUDA** (`--device cuda`): SD 1.5's architecture with random weights, bf16, 512x512, 25 steps: wall seconds
   and `torch.cuda.max_memory_allocated` during the stage minus the memory allocated before it.

Targets: time per frame at 128 frames within 1.15x of that at 32, peak memory flat once N > C.

    python benchmarks/long_video.py                  # 1 and 2 -> benchmarks/results/long_video.md/.json
    python benchmarks/long_video.py --device cuda    # 3 (and 2) on a GPU machine
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import build_models, nadm_pipeline  # noqa: E402
from train_memory import LiveBytes, fake_mode, materialize  # noqa: E402
from window_seams import FreeNoise  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FRAMES = (16, 32, 64, 128)
VARIANTS = ("nadm windows", "FreeNoise")
CONTEXT, OVERLAP = 16, 4
PROMPT = "a misty Chinese ink landscape, mountains and a river, clouds drifting"
MiB = 2**20


class StandInStep:
    """A sampler for fake tensors: DDIM's arithmetic shape (x' = a x + b eps) without its data-dependent indexing."""

    def __init__(self, steps: int):
        self.timesteps = torch.linspace(981, 1, steps).round().long()

    def scale_model_input(self, x, t):
        return x

    def step(self, eps, t, x, **kw):
        return SimpleNamespace(prev_sample=x * 0.9 + eps * 0.1)


def stage(video_unet, dtype, z, text, variant: str, scheduler, device) -> None:
    """The denoising stage for one clip: nadm's windows, or one window with FreeNoise inside the motion modules."""
    from nadm.sampling import all_frames, denoise
    from nadm.windows import plan_windows

    n = z.shape[2]

    def unet(x, t, tx):  # called directly: FreeNoise's single window may exceed the position table
        hidden = tx.repeat_interleave(x.shape[2], 0)  # (b*f, tokens, dim) as predict_noise lays it out
        return video_unet(x.to(dtype), t.to(device), encoder_hidden_states=hidden).sample.float()

    windows = all_frames if variant == "FreeNoise" else plan_windows(n, CONTEXT, 32, CONTEXT, OVERLAP, window_batch=1)
    with torch.inference_mode():
        denoise(unet, scheduler, z, text, 8.0, windows=windows, progress=False)


def unet_frames_per_step(n: int, variant: str, steps: int) -> float:
    from nadm.windows import plan_windows

    if variant == "FreeNoise":
        return float(n)
    plan = plan_windows(n, CONTEXT, 32, CONTEXT, OVERLAP, window_batch=1)
    return sum(len(w.frames) for i in range(steps) for w in plan(i, n)) / steps


def measure_real(args) -> list[dict]:
    """Tiny models on the CPU, or SD 1.5 size on CUDA: time and peak memory per clip length and variant."""
    from nadm.pipeline import make_scheduler

    gpu = args.device == "cuda"
    torch.set_num_threads(args.threads)
    models = build_models(not gpu, Path(tempfile.mkdtemp(prefix="nadm-long-tok-")))
    pipe = nadm_pipeline(models, args.device, torch.bfloat16 if gpu else torch.float32)
    from nadm.sampling import OnePrompt

    text = OnePrompt(pipe.encode_prompt(["", PROMPT]))
    rows = []
    for variant in VARIANTS:
        for n in FRAMES:
            z = torch.randn(1, 4, n, args.size // 8, args.size // 8, generator=torch.Generator().manual_seed(0))
            z = z.to(pipe.device)

            def run():
                scheduler = make_scheduler("ddim")
                scheduler.set_timesteps(args.steps, device=pipe.device)
                stage(pipe.video_unet, pipe.dtype, z * scheduler.init_noise_sigma, text, variant, scheduler, pipe.device)

            with FreeNoise(pipe, CONTEXT, CONTEXT - OVERLAP) if variant == "FreeNoise" else nullcontext():
                row = {"variant": variant, "frames": n, "unet_frames_per_step": unet_frames_per_step(n, variant, args.steps)}
                row.update(_time_and_memory(run, gpu, args.repeats))
            row["s_per_frame"] = row["seconds"] / n
            rows.append(row)
            print(f"{variant:>13s} {n:4d} frames: {row['s_per_frame']:.4f} s/frame, peak {row['peak_mib']:.1f} MiB", flush=True)
    return rows


def _time_and_memory(run, gpu: bool, repeats: int) -> dict:
    """Seconds (CPU seconds on the CPU, wall seconds on CUDA; the faster of `repeats`) and the stage's peak MiB."""
    if gpu:
        runs = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            run()
            torch.cuda.synchronize()
            runs.append((time.perf_counter() - start, torch.cuda.max_memory_allocated() - before))
        return {"seconds": min(s for s, _ in runs), "wall_seconds": min(s for s, _ in runs),
                "peak_mib": max(m for _, m in runs) / MiB}  # fmt: skip
    times = []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        run()
        times.append((time.process_time() - cpu, time.perf_counter() - wall))
    tracker = LiveBytes()
    with tracker:
        run()
    return {"seconds": min(c for c, _ in times), "wall_seconds": min(w for _, w in times), "peak_mib": tracker.peak / MiB}


def measure_fake(size: int = 512) -> list[dict]:
    """SD 1.5's UNet + NADM motion modules in bf16 on fake tensors: the stage's live-bytes peak, one step."""
    from diffusers import UNet2DConditionModel

    from nadm.base import quiet_loading
    from nadm.config import NADMConfig
    from nadm.motion import build_video_unet
    from nadm.sampling import OnePrompt
    from nadm.sd15 import UNET

    rows = []
    for variant in VARIANTS:
        with torch.device("meta"), quiet_loading():  # FreeNoise's block swap on the meta model (fake ones cannot swap)
            video = build_video_unet(UNet2DConditionModel(**UNET), NADMConfig()).to(torch.bfloat16)
            if variant == "FreeNoise":
                FreeNoise(SimpleNamespace(video_unet=video, motion_config=NADMConfig()), CONTEXT, CONTEXT - OVERLAP).__enter__()
        with fake_mode():
            materialize(video)
            text = OnePrompt(torch.randn(2, 77, UNET["cross_attention_dim"], dtype=torch.bfloat16))
            for n in FRAMES:
                z = torch.randn(1, 4, n, size // 8, size // 8)
                tracker = LiveBytes()
                with tracker:
                    stage(video, torch.bfloat16, z, text, variant, StandInStep(1), torch.device("cpu"))
                rows.append({"variant": variant, "frames": n, "peak_mib": tracker.peak / MiB,
                             "unet_frames_per_step": unet_frames_per_step(n, variant, 1)})  # fmt: skip
                print(f"fake SD 1.5 {variant:>13s} {n:4d} frames: peak {tracker.peak / MiB:.0f} MiB", flush=True)
    return rows


def table(rows: list[dict], timed: bool) -> str:
    head = "| denoising | frames | UNet frames/step | " + ("s/frame | vs 32 frames | " if timed else "") + "peak MiB |"
    lines = [head, "|---|---:|---:|" + ("---:|---:|" if timed else "") + "---:|"]
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        base = next(r for r in mine if r["frames"] == 32)
        for r in mine:
            timing = f"{r['s_per_frame']:.4f} | {r['s_per_frame'] / base['s_per_frame']:.2f}x | " if timed else ""
            lines.append(f"| {variant} | {r['frames']} | {r['unet_frames_per_step']:g} | {timing}{r['peak_mib']:.1f} |")
    return "\n".join(lines)


def verdict(rows: list[dict], timed: bool) -> dict:
    ours = {r["frames"]: r for r in rows if r["variant"] == VARIANTS[0]}
    peaks = [ours[n]["peak_mib"] for n in (32, 64, 128)]
    out = {"peak_max_over_min_32_to_128": max(peaks) / min(peaks)}
    if timed:
        out["s_per_frame_128_over_32"] = ours[128]["s_per_frame"] / ours[32]["s_per_frame"]
    return out


def main() -> None:
    from nadm.io import environment_versions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=None, help="default: 5 on the CPU, 25 on CUDA")
    parser.add_argument("--size", type=int, default=None, help="default: 64 on the CPU, 512 on CUDA")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-fake", action="store_true", help="skip the SD 1.5-size fake-tensor memory rows")
    parser.add_argument("--only-fake", action="store_true", help=argparse.SUPPRESS)  # a quick check of part 2
    parser.add_argument("--out", type=Path, default=RESULTS / "long_video.md")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    args.steps = args.steps or (25 if gpu else 5)
    args.size = args.size or (512 if gpu else 64)
    start = time.perf_counter()
    real = [] if args.only_fake else measure_real(args)
    fake = [] if args.no_fake else measure_fake()
    machine = ("CUDA " + torch.cuda.get_device_name()) if gpu else (
        f"{platform.machine()} CPU (2-core AMD EPYC, shared with other jobs), {args.threads} thread(s), no GPU")  # fmt: skip
    models = "SD 1.5 architecture, random weights, bfloat16" if gpu else "tiny random models (nadm.tiny), float32"
    seconds = "wall seconds" if gpu else "CPU seconds of the process (time.process_time)"
    memory = "torch.cuda.max_memory_allocated minus before" if gpu else "peak live bytes of the tensors the stage creates"
    real_verdict, fake_verdict = verdict(real, True), (verdict(fake, False) if fake else {})
    text = [
        "# Long clips: time and memory of the denoising stage\n",
        f"Written by `python benchmarks/long_video.py{' --device cuda' if gpu else ''}` on {datetime.date.today()} "
        f"({time.perf_counter() - start:.0f} s). Machine: {machine}. Context 16, overlap 4, shifting windows (the "
        "default), one window per UNet call, guidance 8 (UNet batch 2). FreeNoise: diffusers' motion-module windows "
        "(context 16, stride 12) with all frames in one UNet call.\n",
        f"## {models}, {args.size}x{args.size}, DDIM {args.steps} steps\n",
        f"Time: {seconds}, the faster of {args.repeats} runs. Peak memory: {memory}.\n",
        table(real, True) + "\n",
        f"Time per frame at 128 frames / at 32 (nadm windows): **{real_verdict['s_per_frame_128_over_32']:.2f}x** "
        f"(target <= 1.15x). Peak memory at 32, 64, 128 frames: max/min **{real_verdict['peak_max_over_min_32_to_128']:.2f}x**.\n",
    ]
    if fake:
        text += [
            "## SD 1.5 size on fake tensors: UNet + NADM motion modules, bfloat16, 512x512, one step\n",
            "Peak live bytes of the tensors one sampler step creates (activations, noise predictions, fusion), "
            "weights not counted (2.45 GiB in bf16); a lower bound of what a GPU needs on top of the weights.\n",
            table(fake, False) + "\n",
            f"Peak at 32, 64, 128 frames (nadm windows): max/min **{fake_verdict['peak_max_over_min_32_to_128']:.3f}x**.\n",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    result = {"real": real, "fake_sd15": fake, "verdict": real_verdict, "fake_verdict": fake_verdict,
              "machine": machine, "models": models, "seconds": seconds, "memory": memory,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "date": datetime.date.today().isoformat(), "versions": environment_versions()}  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
