"""Speed and memory of nadm against diffusers' AnimateDiff, for generation, training and SOFP (issue 7).

Builds Stable Diffusion 1.5's published architecture with random weights (nadm.sd15; no download) plus motion
modules, and measures in one run, side by side:

1. generation: seconds per video, peak GPU memory and the UNet's achieved TFLOP/s (FLOPs counted with
   torch.utils.flop_counter) for nadm's pipeline (bf16; eager, channels-last, torch.compile, compile + CUDA graphs) and
   for diffusers' `AnimateDiffPipeline` (fp16 + SDPA) with the same weights, at the paper's setting (8 frames,
   256x256, 25 DDIM steps, guidance 8) and at 16 frames 512x512; the quality check compares every nadm variant
   with nadm's float32 eager path (one UNet pass and the whole clip) and makes the script exit 1 on failure;
2. a training step (batch 1) at 8 frames 256x256 and 16 frames 512x512: nadm's step as `nadm train` builds it
   (both losses, cached latents, bf16, fused AdamW), as is, with gradient checkpointing and compiled, against a plain
   diffusers `UNetMotionModel` step with fp16 autocast (VAE and text encoder run every step);
3. SOFP throughput: `dis` on the CPU and `raft` on the GPU where torchvision is installed, at 512x512.

    python benchmarks/speed.py                        # on a GPU machine: the real sizes -> benchmarks/results/speed.md
    python benchmarks/speed.py --only gen:paper,sofp  # a part, merged into earlier results from the same GPU
    python benchmarks/speed.py --tiny                 # proves the harness on tiny models on the CPU

On a CPU (or with --tiny) every GPU figure is written as "not yet measured": only the tiny harness proof and its
ratios are real there, and absolute CPU times say nothing about a GPU.

On a GPU machine without network whose Python has PyTorch but not diffusers or PyAV, `benchmarks/gpu_wheels.sh`
(run where PyPI is reachable) fetches those wheels into .wheels/; there: `pip install --no-deps .wheels/*.whl`,
then `PYTHONPATH=. python3 benchmarks/speed.py --only ...` part by part, each merging into the results file.
A first smoke test of every CUDA path takes a minute or two: `--tiny --device cuda --out /tmp/smoke.md`.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nadm.config import NADMConfig
from nadm.io import environment_versions

RESULTS = Path(__file__).resolve().parent / "results"

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device-name fragment.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "RTX 4090": 165.0, "RTX 3090": 71.0}  # fmt: skip


# nadm's generation variants: name -> (torch.compile mode of the video UNet or None for eager, channels-last
# UNet weights). channels-last is measured here only: the pipeline adopts it if it pays.
NADM_VARIANTS = {"eager": (None, False), "channels-last": (None, True), "compile": ("default", False),
                 "compile+cudagraphs": ("reduce-overhead", False)}  # fmt: skip
# Quality check (issue 7): the optimised path against nadm's float32 eager path with the same seed
UNET_REL_ERR_MAX = 2e-2  # one guided UNet pass: relative L2 error (bf16 keeps 8 mantissa bits)
FRAMES_MIN_PSNR = 30.0  # whole clips after 25 steps, dB
TRAIN_MEMORY_TARGET_GB = 12.0  # decimal GB, as the issue states it


@dataclass(frozen=True)
class GenSetting:
    key: str
    name: str
    frames: int
    size: int
    steps: int = 25
    guidance: float = 8.0


@dataclass(frozen=True)
class TrainSetting:
    key: str
    name: str
    frames: int
    size: int
    batch: int = 1


FULL_GEN = (GenSetting("paper", "paper (8 f, 256 px)", 8, 256), GenSetting("common", "common (16 f, 512 px)", 16, 512))
FULL_TRAIN = (TrainSetting("paper", "paper (8 f, 256 px)", 8, 256), TrainSetting("common", "16 f, 512 px", 16, 512))
TINY_GEN = (GenSetting("tiny", "tiny (4 f, 64 px)", 4, 64, steps=3),)
TINY_TRAIN = (TrainSetting("tiny", "tiny (4 f, 64 px)", 4, 64),)


# ------------------------------------------------------------------------------------------------ models


@dataclass
class Models:
    unet2d: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    config: NADMConfig
    motion: dict[str, torch.Tensor]


def build_models(tiny: bool, tokenizer_dir: Path) -> Models:
    """SD 1.5 (or the tiny stand-in) with random weights and random non-zero motion weights of matching shape."""
    from nadm import tiny as tiny_parts
    from nadm.motion import new_motion_adapter

    if tiny:
        parts = tiny_parts.tiny_components(tokenizer_dir)
        unet2d, vae, text_encoder, tokenizer = parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"]
        config = tiny_parts.TINY_MOTION
    else:
        from nadm.sd15 import build

        tokenizer = tiny_parts.save_tiny_tokenizer(tokenizer_dir)  # ids < 514 fit CLIP's vocabulary; timing only
        unet2d, vae, text_encoder = build()
        config = NADMConfig()
    adapter = new_motion_adapter(config)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained-looking motion weights: the zero output projections would hide nothing, but
        for name, p in adapter.named_parameters():  # keep the comparison honest by making the modules act
            if name.endswith("proj_out.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return Models(unet2d, vae, text_encoder, tokenizer, config, dict(adapter.state_dict()))


def nadm_pipeline(models: Models, device: str, dtype: torch.dtype, compile: str | None = None):
    """nadm's pipeline on private copies of the models (pipelines cast their modules in place)."""
    from nadm.motion import build_video_unet
    from nadm.pipeline import NADMPipeline

    video_unet = build_video_unet(copy.deepcopy(models.unet2d), models.config, models.motion)
    return NADMPipeline(video_unet, copy.deepcopy(models.vae), copy.deepcopy(models.text_encoder), models.tokenizer,
                        models.config, device=device, dtype=dtype, compile=compile, progress=False)  # fmt: skip


def diffusers_pipeline(models: Models, device: str, dtype: torch.dtype):
    """diffusers' AnimateDiffPipeline with the same weights, in its standard recipe (SDPA attention, given dtype)."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter

    from nadm.pipeline import PAPER_SCHEDULE

    adapter = MotionAdapter(**models.config.adapter_kwargs())
    adapter.load_state_dict(models.motion, strict=True)
    scheduler = DDIMScheduler(**PAPER_SCHEDULE, clip_sample=False)
    pipe = AnimateDiffPipeline(vae=copy.deepcopy(models.vae), text_encoder=copy.deepcopy(models.text_encoder),
                               tokenizer=models.tokenizer, unet=copy.deepcopy(models.unet2d), motion_adapter=adapter,
                               scheduler=scheduler)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------ measuring


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn, device: str, repeats: int) -> tuple[float, float | None, object]:
    """(median seconds over `repeats` after one warm-up, peak GPU memory in GiB or None on CPU, last result)."""
    result = fn()  # warm-up (allocator, kernels, compile caches)
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return statistics.median(times), peak, result


def unet_flops(unet, inputs: tuple, kwargs: dict) -> int:
    """FLOPs of one UNet call, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(*inputs, **kwargs)
    return counter.get_total_flops()


def bf16_peak(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    for fragment, peak in BF16_PEAK_TFLOPS.items():
        if fragment in name:
            return peak
    return None


def release() -> None:
    """Once the caller has dropped its references: drop compiled graphs (and their CUDA-graph memory pools) and cached GPU memory, so
    the next measurement's peak holds only its own models."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ 1. generation


def bench_generation(models: Models, s: GenSetting, device: str, repeats: int, variants: list[str]) -> dict:
    """nadm (each variant) vs AnimateDiffPipeline at one setting: seconds/video, peak memory, UNet TFLOP/s, quality."""
    from nadm.motion import predict_noise

    on_gpu = device.startswith("cuda")
    fast_dtype = torch.bfloat16 if on_gpu else torch.float32
    result: dict = {"setting": s.name, "nadm": []}
    prompt, seed = "a misty Chinese ink landscape, clouds drifting over mountains", 0
    kwargs = dict(num_frames=s.frames, height=s.size, width=s.size, steps=s.steps, guidance=s.guidance, seed=seed, interpolate=False)
    h = s.size // 8
    x = torch.randn(2, 4, s.frames, h, h, generator=torch.Generator().manual_seed(0)).to(device)  # one guided pass
    text = torch.randn(2, 77, models.text_encoder.config.hidden_size, generator=torch.Generator().manual_seed(1)).to(device)
    t = torch.tensor(500, device=device)

    # 1. the reference: nadm's unoptimised path (eager, float32); its UNet FLOPs are every variant's FLOPs
    ref_pipe = nadm_pipeline(models, device, torch.float32)
    ref = ref_pipe(prompt, **kwargs)
    flops = unet_flops(lambda *a: predict_noise(ref_pipe.video_unet, *a), (x, t, text), {})
    with torch.inference_mode():
        eps_ref = predict_noise(ref_pipe.video_unet, x, t, text).float()
    result["unet_gflop_per_step"] = flops / 1e9
    ref_pipe = None
    release()

    # 2. nadm's variants (bf16 on the GPU): seconds per video, peak memory, UNet throughput, and the quality check
    for name in variants:
        compile_mode, channels_last = NADM_VARIANTS[name]
        pipe = nadm_pipeline(models, device, fast_dtype, compile=compile_mode)
        if channels_last:
            pipe.video_unet.to(memory_format=torch.channels_last)
        call = lambda: pipe(prompt, **kwargs)  # noqa: E731
        row: dict = {"variant": name, "dtype": str(fast_dtype).removeprefix("torch.")}
        row["s"], row["peak_gib"], fast = measure(call, device, repeats)  # the warm-up call compiles
        xf, textf = x.to(fast_dtype), text.to(fast_dtype)
        with torch.inference_mode():  # as the pipeline samples (a grad-mode change would recompile)
            unet_s, _, _ = measure(lambda: predict_noise(pipe.video_unet, xf, t, textf), device, repeats)
            eps = predict_noise(pipe.video_unet, xf, t, textf).float().clone()  # cloned: CUDA graphs reuse outputs
        row["unet_tflops"] = flops / unet_s / 1e12
        row["unet_rel_err"] = ((eps - eps_ref).norm() / eps_ref.norm()).item()
        mse = float(((fast.frames.astype(np.float32) - ref.frames.astype(np.float32)) ** 2).mean())
        row["frames_psnr"] = None if mse == 0 else float(10 * np.log10(255.0**2 / mse))  # None: bitwise identical
        row["quality_ok"] = quality_ok(row)
        result["nadm"].append(row)
        pipe = call = fast = None  # the closures above see None: nothing keeps the models alive
        release()

    # 3. diffusers' AnimateDiffPipeline, fp16 + SDPA (its standard GPU recipe; fp32 on the CPU, where fp16 is slow)
    base_dtype = torch.float16 if on_gpu else torch.float32
    dpipe = diffusers_pipeline(models, device, base_dtype)
    generator = lambda: torch.Generator("cpu").manual_seed(seed)  # noqa: E731
    dcall = lambda: dpipe(prompt, num_frames=s.frames, height=s.size, width=s.size, num_inference_steps=s.steps,  # noqa: E731
                          guidance_scale=s.guidance, generator=generator(), output_type="np")  # fmt: skip
    d: dict = {"dtype": str(base_dtype).removeprefix("torch.")}
    d["s"], d["peak_gib"], _ = measure(dcall, device, repeats)
    xd, textd = x.to(base_dtype), text.to(base_dtype).repeat_interleave(s.frames, dim=0)  # diffusers: text per frame
    d["unet_gflop_per_step"] = unet_flops(dpipe.unet, (xd, t), {"encoder_hidden_states": textd}) / 1e9
    with torch.inference_mode():
        dunet_s, _, _ = measure(lambda: dpipe.unet(xd, t, encoder_hidden_states=textd), device, repeats)
    d["unet_tflops"] = d["unet_gflop_per_step"] / 1e3 / dunet_s
    result["diffusers"] = d
    dpipe = dcall = None
    release()
    for row in result["nadm"]:
        row["diffusers_s"], row["speedup"] = d["s"], d["s"] / row["s"]
    return result


def quality_ok(row: dict) -> bool:
    """The optimised path matches the float32 eager one within bf16 tolerance (issue 7: quality does not move)."""
    return row["unet_rel_err"] <= UNET_REL_ERR_MAX and (row["frames_psnr"] is None or row["frames_psnr"] >= FRAMES_MIN_PSNR)


# ------------------------------------------------------------------------------------------------ 2. training


def bench_training(models: Models, s: TrainSetting, device: str, repeats: int) -> dict:
    """nadm's training step as `nadm train` builds it (with and without gradient checkpointing) vs a plain fp16
    UNetMotionModel step: seconds per step and peak memory."""
    from types import SimpleNamespace

    from diffusers import DDPMScheduler, MotionAdapter, UNetMotionModel

    from nadm.losses import NoiseAdapter
    from nadm.motion import build_video_unet
    from nadm.pipeline import PAPER_SCHEDULE
    from nadm.train_step import cast_frozen, trainable_module, training_step

    on_gpu = device.startswith("cuda")
    kind = device.split(":")[0]
    result: dict = {"setting": s.name, "nadm": []}
    scheduler = DDPMScheduler(**{k: v for k, v in PAPER_SCHEDULE.items() if k not in ("timestep_spacing", "steps_offset")})
    h = s.size // 8
    latents = torch.randn(s.batch, 4, s.frames, h, h, device=device)
    text = torch.randn(s.batch, 77, models.text_encoder.config.hidden_size, device=device)
    pixels = torch.rand(s.batch * s.frames, 3, s.size, s.size, device=device) * 2 - 1
    ids = models.tokenizer(["a landscape"] * s.batch, padding="max_length", max_length=77, return_tensors="pt").input_ids.to(device)
    losses = SimpleNamespace(tau=0.07, m=4, positive="next", lambda_diff=1.0, lambda_con=0.07)
    dtype = torch.bfloat16 if on_gpu else torch.float32

    # 1. nadm: cached latents and text embeddings, frozen SD in bf16 with bf16 autocast on the GPU, fused AdamW;
    #    as is, with gradient checkpointing, and torch.compiled (`nadm train --compile`)
    for checkpointing, compiled in ((False, False), (True, False), (False, True)):
        video = build_video_unet(copy.deepcopy(models.unet2d), models.config, models.motion).to(device)
        adapter = NoiseAdapter.from_config(models.config).to(device)
        module, _ = trainable_module(video, adapter, checkpointing, compiled)
        if on_gpu:
            cast_frozen(module.unet, dtype)
        module.train()
        params = [p for p in module.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5, fused=True)

        def nadm_step():
            with torch.autocast(kind, dtype=dtype, enabled=on_gpu):
                out = training_step(module, latents, text, torch.Generator().manual_seed(0), scheduler, losses)
            out.total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return out.total.item()

        row = {"checkpointing": checkpointing, "compile": compiled}
        row["s"], row["peak_gib"], _ = measure(nadm_step, device, repeats)
        result["nadm"].append(row)
        module = video = adapter = opt = params = nadm_step = None
        release()

    # 2. plain diffusers: VAE + text encoder every step, UNetMotionModel forward/backward in fp16 autocast, AdamW
    adapter_d = MotionAdapter(**models.config.adapter_kwargs())
    adapter_d.load_state_dict(models.motion, strict=True)
    unet = UNetMotionModel.from_unet2d(copy.deepcopy(models.unet2d), adapter_d).to(device)
    unet.freeze_unet2d_params()
    vae, text_encoder = copy.deepcopy(models.vae).to(device), copy.deepcopy(models.text_encoder).to(device)
    plain_params = [p for p in unet.parameters() if p.requires_grad]
    opt_d = torch.optim.AdamW(plain_params, lr=1e-5)
    scaler = torch.amp.GradScaler(enabled=on_gpu)

    def plain_step():
        g = torch.Generator().manual_seed(0)
        with torch.no_grad(), torch.autocast(kind, dtype=torch.float16, enabled=on_gpu):
            z = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor  # (b*f, 4, h, w)
            z = z.reshape(s.batch, s.frames, 4, h, h).permute(0, 2, 1, 3, 4).float()
            emb = text_encoder(ids).last_hidden_state
        noise = torch.randn(z.shape, generator=g).to(device)
        tt = torch.randint(0, 1000, (s.batch,), generator=g).to(device)
        with torch.autocast(kind, dtype=torch.float16, enabled=on_gpu):
            pred = unet(scheduler.add_noise(z, noise, tt), tt, encoder_hidden_states=emb.repeat_interleave(s.frames, 0)).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
        scaler.scale(loss).backward()
        scaler.unscale_(opt_d)
        torch.nn.utils.clip_grad_norm_(plain_params, 1.0)
        scaler.step(opt_d)
        scaler.update()
        opt_d.zero_grad(set_to_none=True)
        return loss.item()

    plain: dict = {}
    plain["s"], plain["peak_gib"], _ = measure(plain_step, device, repeats)
    result["plain"] = plain
    unet = vae = text_encoder = opt_d = plain_params = plain_step = None
    release()
    for row in result["nadm"]:
        row["throughput_ratio"] = plain["s"] / row["s"]
    return result


# ------------------------------------------------------------------------------------------------ 3. SOFP


def bench_sofp(size: int, device: str, repeats: int) -> list[dict]:
    """Interpolated frames per second of SOFP at `size`: dis on the CPU, raft on the GPU when torchvision is there."""
    from nadm.interpolate import sofp

    rng = np.random.default_rng(0)
    texture = (rng.random((size + 64, size + 64, 3)) * 255).astype(np.uint8)
    import cv2

    texture = cv2.GaussianBlur(texture, (0, 0), 2.0)
    frames = np.stack([texture[2 * i : 2 * i + size, 3 * i : 3 * i + size] for i in range(9)])  # drifting texture
    rows = []
    backends = [("dis", "cpu")] + ([("raft", device)] if device.startswith("cuda") else [])
    for flow, where in backends:
        try:
            seconds, _, out = measure(lambda: sofp(frames, flow=flow, progress=False), "cpu" if where == "cpu" else device, repeats)
        except Exception as e:  # noqa: BLE001 - a missing backend is reported in the table, not hidden
            rows.append({"flow": flow, "where": where, "size": size, "error": str(e).splitlines()[0]})
            continue
        inserted = len(out) - len(frames)
        rows.append({"flow": flow, "where": where, "size": size, "fps": inserted / seconds, "ms_per_frame": 1000 * seconds / inserted})
    return rows


# ------------------------------------------------------------------------------------------------ report


def fmt(value, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def machine(device: str) -> str:
    """The CPU (as the interpolation benchmark describes it) and, on CUDA, the GPU, its CUDA and driver versions."""
    from interpolation import machine as cpu_description  # benchmarks/interpolation.py, beside this script

    text = f"CPU: {cpu_description()}"
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        text += f"; GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
        try:
            import subprocess

            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=30).stdout.strip()  # fmt: skip
            text += f", driver {driver}"
        except (OSError, subprocess.SubprocessError):
            pass
    return text


def pct(value: float | None, peak: float | None) -> str:
    return "n/a" if value is None or peak is None else f"{100 * value / peak:.1f}%"


def psnr_text(value: float | None) -> str:
    return "identical" if value is None else f"{value:.1f} dB"


def report(results: dict) -> str:
    """The markdown report of everything measured so far on this machine (partial runs merge, see main)."""
    meta, on_gpu = results["meta"], results["meta"]["device"].startswith("cuda")
    peak = meta.get("bf16_peak_tflops")
    lines = [
        "# Speed: nadm vs diffusers' AnimateDiff",
        "",
        f"Written by `python benchmarks/speed.py{' --tiny' if meta['tiny'] else ''}`; sections last run on: "
        + ", ".join(f"{k} {v}" for k, v in sorted(results["dates"].items())) + ".",
        f"Machine: {meta['machine']}. Device used: {meta['device']}.",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v),
        f"Models: {'tiny random stand-ins (nadm.tiny)' if meta['tiny'] else 'SD 1.5 published architecture, random weights (nadm.sd15)'}"
        f"; median of {meta['repeats']} runs after one warm-up (the warm-up compiles).",
        "",
    ]  # fmt: skip
    if not on_gpu:
        lines += [NOT_MEASURED, "## Harness proof on the CPU (tiny models)", "",
                  "These runs only show that every measurement executes and that the quality check holds; CPU "
                  "seconds say nothing about GPU speed. Everything runs in float32 here (bf16 and fp16 are GPU recipes).", ""]  # fmt: skip
    else:
        missing = [f"`--only {k}`" for k in EXPECTED_GPU if k not in results["dates"]]
        if missing:
            lines += ["Not yet measured on this GPU: " + ", ".join(missing) + ".", ""]
    lines += ["### Generation (no interpolation)", "",
              "| setting | pipeline | dtype | s/video | speed-up | peak GiB | UNet GFLOP/pass | UNet TFLOP/s | % of bf16 peak "
              "| UNet rel. err vs fp32 | frames PSNR vs fp32 | quality |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for g in results["generation"].values():
        for r in g["nadm"]:
            lines.append(f"| {g['setting']} | nadm {r['variant']} | {r['dtype']} | {r['s']:.3f} | {r['speedup']:.2f}x "
                         f"| {fmt(r['peak_gib'])} | {g['unet_gflop_per_step']:.1f} | {r['unet_tflops']:.3f} | {pct(r['unet_tflops'], peak)} "
                         f"| {r['unet_rel_err']:.2e} | {psnr_text(r['frames_psnr'])} | {'pass' if r['quality_ok'] else 'FAIL'} |")  # fmt: skip
        d = g["diffusers"]
        lines.append(f"| {g['setting']} | AnimateDiffPipeline | {d['dtype']} | {d['s']:.3f} | 1.00x | {fmt(d['peak_gib'])} "
                     f"| {d['unet_gflop_per_step']:.1f} | {d['unet_tflops']:.3f} | {pct(d['unet_tflops'], peak)} | | | |")  # fmt: skip
    lines += ["", "### Training step (batch 1)", "",
              "| setting | step | s/step | throughput vs plain | peak GiB | within 12 GB |", "|---|---|---:|---:|---:|---|"]  # fmt: skip
    for t in results["training"].values():
        for r in t["nadm"]:
            fits = "n/a" if r["peak_gib"] is None else ("yes" if r["peak_gib"] * 2**30 <= TRAIN_MEMORY_TARGET_GB * 1e9 else "no")
            step = "nadm" + (" + checkpointing" if r["checkpointing"] else "") + (" + compile" if r.get("compile") else "")
            lines.append(f"| {t['setting']} | {step} | {r['s']:.3f} | {r['throughput_ratio']:.2f}x | {fmt(r['peak_gib'])} | {fits} |")
        pl = t["plain"]
        lines.append(f"| {t['setting']} | plain UNetMotionModel (fp16 autocast) | {pl['s']:.3f} | 1.00x | {fmt(pl['peak_gib'])} | |")
    lines += ["", "### SOFP interpolation (9 frames -> 17)", "", "| flow | where | size | interpolated frames/s | ms/frame |", "|---|---|---:|---:|---:|"]
    for r in results["sofp"]:
        if "error" in r:
            lines.append(f"| {r['flow']} | {r['where']} | {r['size']} | unavailable: {r['error']} | |")
        else:
            lines.append(f"| {r['flow']} | {r['where']} | {r['size']} | {r['fps']:.1f} | {r['ms_per_frame']:.1f} |")
    lines += ["", "Notes: nadm runs sparse-causal attention on attn2 (NADM), diffusers versatile on both (AnimateDiff): the "
              "same weights, each model's own attention (hence the different UNet FLOPs). The speed-up is AnimateDiffPipeline's "
              "seconds over nadm's. Quality compares each nadm variant with nadm's float32 eager path and the same seed: "
              f"one guided UNet pass (relative L2 error <= {UNET_REL_ERR_MAX:g}) and the whole clip (PSNR >= {FRAMES_MIN_PSNR:g} dB). "
              "nadm's training step is the one `nadm train --mixed-precision bf16` runs (cached latents and text, "
              "frozen SD in bf16, fused AdamW); the plain step encodes with the VAE and text encoder every step. "
              "Memory before any GPU exists: `benchmarks/results/train_memory.md` (fake-tensor estimate).", ""]  # fmt: skip
    return "\n".join(lines)


NOT_MEASURED = """## GPU figures: not yet measured

No GPU was available to the session that wrote this file, so none of the figures the targets need exist yet:

| figure | setting | status |
|---|---|---|
| generation seconds/video, nadm (eager, channels-last, compile, compile+cudagraphs) vs AnimateDiffPipeline | 8 f 256 px and 16 f 512 px, 25 DDIM steps, guidance 8 | not yet measured |
| peak GPU memory, generation | both settings | not yet measured |
| UNet achieved TFLOP/s and % of bf16 peak | both settings | not yet measured |
| training seconds/step and peak memory, nadm (as is, + checkpointing, + compile) vs plain UNetMotionModel | 8 f 256 px, 16 f 512 px | not yet measured |
| SOFP with `raft` on the GPU | 512 px | not yet measured |

Run `python benchmarks/speed.py` on a CUDA machine to fill them in (it replaces this file; `--only` runs a part and merges).
"""

EXPECTED_GPU = ("gen:paper", "gen:common", "train:paper", "train:common", "sofp")


def merge_variants(old: dict | None, new: dict) -> dict:
    """A setting's new generation results, keeping earlier rows of variants not run this time (--variants); each row
    keeps the speed-up against the AnimateDiffPipeline time of its own run."""
    if old is None:
        return new
    rows = {r["variant"]: r for r in old["nadm"]} | {r["variant"]: r for r in new["nadm"]}
    return {**new, "nadm": [rows[name] for name in NADM_VARIANTS if name in rows]}


def load_previous(path: Path, meta: dict) -> dict | None:
    """Earlier results from the same device and model size, to merge a partial run into; else None."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = old.get("meta", {}).get("device_name") == meta["device_name"] and old.get("meta", {}).get("tiny") == meta["tiny"]
    return old if same and "dates" in old else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models (the CPU harness proof)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="report file (default benchmarks/results/speed.md)")
    parser.add_argument("--only", default="", help="comma list of parts to run, merged into earlier results from the same "
                        "device: gen:paper, gen:common, train:paper, train:common, sofp (default: all)")  # fmt: skip
    parser.add_argument("--variants", default=None, help=f"nadm generation variants, comma list of {', '.join(NADM_VARIANTS)} "
                        "(default: all on CUDA; all but compile+cudagraphs elsewhere, where there are no CUDA graphs)")  # fmt: skip
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    if not on_gpu and not args.tiny:
        print("no CUDA device: running the tiny harness proof on the CPU", file=sys.stderr)
        args.tiny = True
    variants = (args.variants or ",".join(v for v in NADM_VARIANTS if on_gpu or v != "compile+cudagraphs")).split(",")
    unknown = [v for v in variants if v not in NADM_VARIANTS]
    gen_settings, train_settings = (TINY_GEN, TINY_TRAIN) if args.tiny else (FULL_GEN, FULL_TRAIN)
    parts = [f"gen:{g.key}" for g in gen_settings] + [f"train:{t.key}" for t in train_settings] + ["sofp"]
    only = [p for p in args.only.split(",") if p] or parts
    if unknown or any(p not in parts for p in only):
        parser.error(f"unknown variant or part: {', '.join(unknown + [p for p in only if p not in parts])}; parts here: {', '.join(parts)}")

    out = args.out or RESULTS / "speed.md"
    meta = {"device": args.device, "device_name": torch.cuda.get_device_name() if on_gpu else "cpu", "tiny": args.tiny,
            "machine": machine(args.device), "versions": environment_versions(), "repeats": args.repeats,
            "bf16_peak_tflops": bf16_peak(args.device)}  # fmt: skip
    results = load_previous(out.with_suffix(".json"), meta) if args.only else None
    results = results or {"generation": {}, "training": {}, "sofp": [], "dates": {}}
    results["meta"] = meta
    today = str(datetime.date.today())
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args.tiny, Path(tmp) / "tokenizer")
        for g in gen_settings:
            if f"gen:{g.key}" in only:
                results["generation"][g.key] = merge_variants(results["generation"].get(g.key),
                                                              bench_generation(models, g, args.device, args.repeats, variants))  # fmt: skip
                results["dates"][f"gen:{g.key}"] = today
        for t in train_settings:
            if f"train:{t.key}" in only:
                results["training"][t.key] = bench_training(models, t, args.device, args.repeats)
                results["dates"][f"train:{t.key}"] = today
    if "sofp" in only:
        results["sofp"] = bench_sofp(512, args.device, args.repeats)
        results["dates"]["sofp"] = today
    text = report(results)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    failed = [f"{g['setting']} {r['variant']}" for g in results["generation"].values() for r in g["nadm"] if not r["quality_ok"]]
    if failed:
        print(f"quality check FAILED (frames moved beyond bf16 tolerance): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
