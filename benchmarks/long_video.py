"""Long clips (issue 15): seconds per generated frame and peak memory of the denoising stage at 16-128 frames.

Each clip length runs in a fresh child process (so one length's memory cannot hide another's): the models are
built, the prompt encoded and z_T drawn, then only the denoising stage (`nadm.sampling.denoise` with the context
windows `nadm.windows.plan_windows` makes: C = 16, O = 4, static, one window per UNet call) is timed, twice, the
faster run kept. Peak memory of the stage:

- CPU: the process's resident set size (RSS, /proc/self/statm) sampled every millisecond while the stage runs,
  minus the RSS just before it (the models and inputs); tracemalloc cannot see torch's allocations;
- CUDA: `torch.cuda.max_memory_allocated` during the stage minus the allocation before it.

For comparison the same clips run through diffusers' FreeNoise (`FreeNoiseTransformerBlock`: windows inside the
motion modules only, NADM's attention processors put back after the swap): the spatial layers then see all N frames
in every UNet call. Targets: time per frame at 128 frames within 1.15x of that at 32 (linear cost), and the
stage's peak memory flat once N > C.

    python benchmarks/long_video.py                  # tiny models on the CPU -> benchmarks/results/long_video.md/.json
    python benchmarks/long_video.py --device cuda    # SD 1.5's architecture with random weights, 512 px, bf16
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FRAMES = (16, 32, 64, 128)
VARIANTS = ("nadm windows", "FreeNoise")
PROMPT = "a misty Chinese ink landscape, mountains and a river, clouds drifting"


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples RSS every millisecond in a thread while the `with` block runs; `.peak` is the highest seen."""

    def __enter__(self):
        self.peak, self._stop = rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def build_pipeline(device: str):
    """Tiny random models on the CPU; SD 1.5's architecture with random weights (bf16) on CUDA."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed import build_models, nadm_pipeline

    tiny = device == "cpu"
    models = build_models(tiny, Path(tempfile.mkdtemp(prefix="nadm-long-tok-")))
    return nadm_pipeline(models, device, torch.float32 if tiny else torch.bfloat16)


def child(n: int, variant: str, args) -> dict:
    """Time and peak memory of the denoising stage for one clip length (run in its own process)."""
    import torch

    from nadm.pipeline import make_scheduler
    from nadm.sampling import OnePrompt, all_frames, denoise
    from nadm.windows import plan_windows

    torch.set_num_threads(args.threads)
    pipe = build_pipeline(args.device)
    dev = pipe.device
    text = OnePrompt(pipe.encode_prompt(["", PROMPT]).to(dev))
    latent = args.size // pipe.vae_scale
    z = torch.randn(1, pipe.latent_channels, n, latent, latent, generator=torch.Generator().manual_seed(0)).to(dev)
    plan = plan_windows(n, 16, pipe.max_frames, context=16, overlap=4, window_batch=1)

    def unet(x, t, tx):  # the UNet called directly: FreeNoise's one window may exceed the position table
        return pipe.video_unet(x.to(pipe.dtype), t, encoder_hidden_states=tx.repeat_interleave(x.shape[2], 0)).sample.float()

    def stage() -> tuple[float, int]:
        scheduler = make_scheduler("ddim")
        scheduler.set_timesteps(args.steps, device=dev)
        windows = all_frames if variant == "FreeNoise" else plan
        if dev.type == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.inference_mode(), PeakRSS() as rss:
            rss_before = rss.peak
            denoise(unet, scheduler, z * scheduler.init_noise_sigma, text, 8.0, windows=windows, progress=False)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() - before if dev.type == "cuda" else rss.peak - rss_before
        return seconds, peak

    if variant == "FreeNoise":
        from window_seams import FreeNoise

        with FreeNoise(pipe, 16, 12):
            runs = [stage() for _ in range(args.repeats)]
    else:
        runs = [stage() for _ in range(args.repeats)]
    seconds = min(s for s, _ in runs)
    return {"frames": n, "variant": variant, "seconds": seconds, "s_per_frame": seconds / n,
            "peak_mib": max(p for _, p in runs) / 2**20, "windows_per_step": len(plan(0, n)),
            "unet_frames_per_step": n if variant == "FreeNoise" else sum(len(w.frames) for w in plan(0, n))}  # fmt: skip


def run_all(args) -> list[dict]:
    rows = []
    for variant in VARIANTS:
        for n in FRAMES:
            cmd = [sys.executable, __file__, "--child", str(n), "--variant", variant, "--device", args.device,
                   "--steps", str(args.steps), "--size", str(args.size), "--threads", str(args.threads),
                   "--repeats", str(args.repeats)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if done.returncode != 0:
                sys.exit(f"{variant} at {n} frames failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{variant:>13s} {n:4d} frames: {r['s_per_frame']:.4f} s/frame, peak {r['peak_mib']:.1f} MiB", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| denoising | frames | windows/step | UNet frames/step | s/frame | vs 32 frames | peak MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for variant in VARIANTS:
        base = next(r for r in rows if r["variant"] == variant and r["frames"] == 32)["s_per_frame"]
        for r in (r for r in rows if r["variant"] == variant):
            windows = r["windows_per_step"] if variant != "FreeNoise" else "1 (motion: windows)"
            lines.append(f"| {variant} | {r['frames']} | {windows} | {r['unet_frames_per_step']} | {r['s_per_frame']:.4f} | "
                         f"{r['s_per_frame'] / base:.2f}x | {r['peak_mib']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=None, help="default: 5 on the CPU, 25 on CUDA")
    parser.add_argument("--size", type=int, default=None, help="default: 64 on the CPU, 512 on CUDA")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "long_video.md")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default=VARIANTS[0], help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device == "cuda"
    args.steps = args.steps or (25 if gpu else 5)
    args.size = args.size or (512 if gpu else 64)
    if args.child:
        print(json.dumps(child(args.child, args.variant, args)))
        return
    start = time.perf_counter()
    rows = run_all(args)
    ours = {r["frames"]: r for r in rows if r["variant"] == VARIANTS[0]}
    ratio = ours[128]["s_per_frame"] / ours[32]["s_per_frame"]
    flat = max(ours[n]["peak_mib"] for n in (32, 64, 128)) / min(ours[n]["peak_mib"] for n in (32, 64, 128))
    text = table(rows)
    from nadm.io import environment_versions

    machine = (f"{platform.machine()} CPU, 2-core AMD EPYC shared with other jobs, {args.threads} threads, no GPU"
               if not gpu else "CUDA GPU")  # fmt: skip
    models = "tiny random models (nadm.tiny), float32" if not gpu else "SD 1.5 architecture, random weights, bfloat16"
    memory = "RSS sampled every 1 ms minus RSS before the stage" if not gpu else "torch.cuda.max_memory_allocated"
    summary = (f"Time per frame at 128 frames / at 32: **{ratio:.2f}x** (target <= 1.15x). Peak memory at 32, 64, 128 "
               f"frames: max/min **{flat:.2f}x** (flat: the UNet sees one window of C = 16 frames at a time).")  # fmt: skip
    header = (
        "# Long clips: time and memory of the denoising stage\n\n"
        f"Written by `python benchmarks/long_video.py{' --device cuda' if gpu else ''}` on {datetime.date.today()} "
        f"({time.perf_counter() - start:.0f} s). Machine: {machine}. {models}, {args.size}x{args.size}, DDIM "
        f"{args.steps} steps, guidance 8 (batch 2), context 16, overlap 4, static windows, one window per UNet call. "
        f"Seconds: the faster of {args.repeats} runs of the stage in one child process per row. Peak memory: {memory}.\n\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + text + "\n\n" + summary + "\n")
    result = {"rows": rows, "ratio_128_vs_32": ratio, "peak_max_over_min_32_128": flat, "machine": machine,
              "models": models, "memory": memory, "settings": vars(args) | {"out": str(args.out)},
              "date": datetime.date.today().isoformat(), "versions": environment_versions()}  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(text + "\n\n" + summary)


if __name__ == "__main__":
    main()
