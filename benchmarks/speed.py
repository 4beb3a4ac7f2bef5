"""Speed and memory of nadm against diffusers' AnimateDiff, for generation, training and SOFP (issue 7).

Builds Stable Diffusion 1.5's published architecture with random weights (nadm.sd15; no download) plus motion
modules, and measures in one run, side by side:

1. generation: seconds per video, peak GPU memory and the UNet's achieved TFLOP/s (FLOPs counted with
   torch.utils.flop_counter) for nadm's pipeline and for diffusers' `AnimateDiffPipeline` (fp16 + SDPA) with the
   same weights, at the paper's setting (8 frames, 256x256, 25 DDIM steps, guidance 8) and at 16 frames 512x512;
   a quality check compares nadm's frames with its unoptimised fp32 path;
2. a training step (batch 1) at 8 frames 256x256 and 16 frames 512x512: nadm's step (both losses, cached latents)
   against a plain diffusers `UNetMotionModel` step with fp16 autocast (VAE and text encoder run every step);
3. SOFP throughput: `dis` on the CPU and `raft` on the GPU where torchvision is installed, at 512x512.

    python benchmarks/speed.py                 # on a GPU machine: the real sizes -> benchmarks/results/speed.md
    python benchmarks/speed.py --tiny          # proves the harness on tiny models on the CPU

On a CPU (or with --tiny) every GPU figure is written as "not yet measured": only the tiny harness proof and its
ratios are real there, and absolute CPU times say nothing about a GPU.
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


@dataclass(frozen=True)
class GenSetting:
    name: str
    frames: int
    size: int
    steps: int = 25
    guidance: float = 8.0


@dataclass(frozen=True)
class TrainSetting:
    name: str
    frames: int
    size: int
    batch: int = 1


FULL_GEN = (GenSetting("paper (8 f, 256 px)", 8, 256), GenSetting("common (16 f, 512 px)", 16, 512))
FULL_TRAIN = (TrainSetting("paper (8 f, 256 px)", 8, 256), TrainSetting("16 f, 512 px", 16, 512))
TINY_GEN = (GenSetting("tiny (4 f, 64 px)", 4, 64, steps=3),)
TINY_TRAIN = (TrainSetting("tiny (4 f, 64 px)", 4, 64),)


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


def nadm_pipeline(models: Models, device: str, dtype: torch.dtype, config: NADMConfig | None = None):
    """nadm's pipeline on private copies of the models (pipelines cast their modules in place)."""
    from nadm.motion import build_video_unet
    from nadm.pipeline import NADMPipeline

    config = config or models.config
    video_unet = build_video_unet(copy.deepcopy(models.unet2d), config, models.motion)
    return NADMPipeline(video_unet, copy.deepcopy(models.vae), copy.deepcopy(models.text_encoder), models.tokenizer,
                        config, device=device, dtype=dtype, progress=False)  # fmt: skip


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


def free(*objs) -> None:
    del objs
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ 1. generation


def bench_generation(models: Models, s: GenSetting, device: str, repeats: int) -> dict:
    """nadm vs AnimateDiffPipeline at one setting: seconds/video, peak memory, UNet TFLOP/s, quality check."""
    from nadm.motion import predict_noise

    on_gpu = device.startswith("cuda")
    fast_dtype = torch.bfloat16 if on_gpu else torch.float32
    row: dict = {"setting": s.name}
    prompt, seed = "a misty Chinese ink landscape, clouds drifting over mountains", 0

    # 1. nadm, its default fast path (bf16 on the GPU), no interpolation (timed separately in section 3)
    pipe = nadm_pipeline(models, device, fast_dtype)
    call = lambda: pipe(prompt, num_frames=s.frames, height=s.size, width=s.size, steps=s.steps,  # noqa: E731
                        guidance=s.guidance, seed=seed, interpolate=False)  # fmt: skip
    row["nadm_s"], row["nadm_peak_gib"], fast = measure(call, device, repeats)
    latents_hw = s.size // pipe.vae_scale
    x = torch.randn(2, 4, s.frames, latents_hw, latents_hw, device=device, dtype=fast_dtype)
    text = torch.randn(2, 77, models.text_encoder.config.hidden_size, device=device, dtype=fast_dtype)
    t = torch.tensor(500, device=device)
    flops = unet_flops(lambda *a: predict_noise(pipe.video_unet, *a), (x, t, text), {})
    with torch.no_grad():
        unet_s, _, eps_fast = measure(lambda: predict_noise(pipe.video_unet, x, t, text), device, repeats)
    row["unet_tflops"] = flops / unet_s / 1e12
    row["unet_gflop_per_step"] = flops / 1e9
    free(pipe)

    # 2. quality: the same seed through nadm's unoptimised path (fp32) gives the same frames within bf16 tolerance
    ref_pipe = nadm_pipeline(models, device, torch.float32)
    ref = ref_pipe(prompt, num_frames=s.frames, height=s.size, width=s.size, steps=s.steps, guidance=s.guidance,
                   seed=seed, interpolate=False)  # fmt: skip
    with torch.no_grad():
        eps_ref = predict_noise(ref_pipe.video_unet, x.float(), t, text.float())
    row["unet_rel_err"] = ((eps_fast.float() - eps_ref).norm() / eps_ref.norm()).item()
    diff = np.abs(fast.frames.astype(np.float32) - ref.frames.astype(np.float32))
    row["frames_mae"] = float(diff.mean())
    mse = float((diff**2).mean())
    row["frames_psnr"] = None if mse == 0 else float(10 * np.log10(255.0**2 / mse))  # None: bitwise identical
    free(ref_pipe)

    # 3. diffusers' AnimateDiffPipeline, fp16 + SDPA (its standard GPU recipe; fp32 on the CPU, where fp16 is slow)
    base_dtype = torch.float16 if on_gpu else torch.float32
    dpipe = diffusers_pipeline(models, device, base_dtype)
    generator = lambda: torch.Generator("cpu").manual_seed(seed)  # noqa: E731
    dcall = lambda: dpipe(prompt, num_frames=s.frames, height=s.size, width=s.size, num_inference_steps=s.steps,  # noqa: E731
                          guidance_scale=s.guidance, generator=generator(), output_type="np")  # fmt: skip
    row["diffusers_s"], row["diffusers_peak_gib"], _ = measure(dcall, device, repeats)
    xd, textd = x.to(base_dtype), text.to(base_dtype)
    text_per_frame = textd.repeat_interleave(s.frames, dim=0)
    dflops = unet_flops(dpipe.unet, (xd, t), {"encoder_hidden_states": text_per_frame})
    with torch.no_grad():
        dunet_s, _, _ = measure(lambda: dpipe.unet(xd, t, encoder_hidden_states=text_per_frame), device, repeats)
    row["diffusers_unet_tflops"] = dflops / dunet_s / 1e12
    free(dpipe)
    row["speedup"] = row["diffusers_s"] / row["nadm_s"]
    return row


# ------------------------------------------------------------------------------------------------ 2. training


def bench_training(models: Models, s: TrainSetting, device: str, repeats: int) -> dict:
    """nadm's training step (cached latents, bf16, checkpointing, fused AdamW) vs a plain fp16 UNetMotionModel step."""
    from types import SimpleNamespace

    from diffusers import DDPMScheduler, MotionAdapter, UNetMotionModel

    from nadm.losses import NoiseAdapter
    from nadm.motion import build_video_unet, freeze_for_training
    from nadm.pipeline import PAPER_SCHEDULE
    from nadm.train import NADMTrainModule, training_step

    on_gpu = device.startswith("cuda")
    row: dict = {"setting": s.name}
    scheduler = DDPMScheduler(**{k: v for k, v in PAPER_SCHEDULE.items() if k not in ("timestep_spacing", "steps_offset")})
    h = s.size // 8
    latents = torch.randn(s.batch, 4, s.frames, h, h, device=device)
    text = torch.randn(s.batch, 77, models.text_encoder.config.hidden_size, device=device)
    pixels = torch.rand(s.batch * s.frames, 3, s.size, s.size, device=device) * 2 - 1
    ids = models.tokenizer(["a landscape"] * s.batch, padding="max_length", max_length=77, return_tensors="pt").input_ids.to(device)
    losses = SimpleNamespace(tau=0.07, m=4, positive="next", lambda_diff=1.0, lambda_con=0.07)

    # 1. nadm: cached latents and text embeddings, bf16 autocast on the GPU, gradient checkpointing, fused AdamW
    video = build_video_unet(copy.deepcopy(models.unet2d), models.config, models.motion).to(device)
    adapter = NoiseAdapter.from_config(models.config).to(device)
    freeze_for_training(video, adapter)
    video.enable_gradient_checkpointing()
    module = NADMTrainModule(video, adapter).train()
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=on_gpu)
    dtype = torch.bfloat16 if on_gpu else torch.float32

    def nadm_step():
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=on_gpu):
            out = training_step(module, latents, text, torch.Generator().manual_seed(0), scheduler, losses)
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.total.item()

    row["nadm_s"], row["nadm_peak_gib"], _ = measure(nadm_step, device, repeats)
    free(module, video, adapter, opt)

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
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.float16, enabled=on_gpu):
            z = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor  # (b*f, 4, h, w)
            z = z.reshape(s.batch, s.frames, 4, h, h).permute(0, 2, 1, 3, 4).float()
            emb = text_encoder(ids).last_hidden_state
        noise = torch.randn(z.shape, generator=g).to(device)
        tt = torch.randint(0, 1000, (s.batch,), generator=g).to(device)
        with torch.autocast(device.split(":")[0], dtype=torch.float16, enabled=on_gpu):
            pred = unet(scheduler.add_noise(z, noise, tt), tt, encoder_hidden_states=emb.repeat_interleave(s.frames, 0)).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
        scaler.scale(loss).backward()
        scaler.unscale_(opt_d)
        torch.nn.utils.clip_grad_norm_(plain_params, 1.0)
        scaler.step(opt_d)
        scaler.update()
        opt_d.zero_grad(set_to_none=True)
        return loss.item()

    row["plain_s"], row["plain_peak_gib"], _ = measure(plain_step, device, repeats)
    free(unet, vae, text_encoder, opt_d)
    row["throughput_ratio"] = row["plain_s"] / row["nadm_s"]
    return row


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


NOT_MEASURED = """## GPU figures: not yet measured

No GPU was available to the session that wrote this file, so none of the figures the targets need exist yet:

| figure | setting | status |
|---|---|---|
| generation seconds/video, nadm vs AnimateDiffPipeline | 8 f 256 px and 16 f 512 px, 25 DDIM steps, guidance 8 | not yet measured |
| peak GPU memory, generation | both settings | not yet measured |
| UNet achieved TFLOP/s and % of bf16 peak | both settings | not yet measured |
| training seconds/step and peak memory, nadm vs plain UNetMotionModel | 8 f 256 px, 16 f 512 px | not yet measured |
| SOFP with `raft` on the GPU | 512 px | not yet measured |

Run `python benchmarks/speed.py` on a CUDA machine to fill them in (it replaces this file).
"""


def report(args, device: str, gen: list[dict], train: list[dict], sofp_rows: list[dict]) -> str:
    peak = bf16_peak(device)
    lines = [
        "# Speed: nadm vs diffusers' AnimateDiff",
        "",
        f"Written by `python benchmarks/speed.py{' --tiny' if args.tiny else ''}` on {datetime.date.today()}.",
        f"Machine: {machine(device)}. Device used: {device}.",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in environment_versions().items() if v),
        f"Models: {'tiny random stand-ins (nadm.tiny)' if args.tiny else 'SD 1.5 published architecture, random weights (nadm.sd15)'}"
        f"; median of {args.repeats} runs after one warm-up.",
        "",
    ]
    if not device.startswith("cuda"):
        lines += [NOT_MEASURED, "## Harness proof on the CPU (tiny models)", "",
                  "These runs only show that every measurement executes and that the quality check holds; CPU "
                  "seconds say nothing about GPU speed. nadm runs fp32 here; diffusers runs fp32 too (its fp16 "
                  "recipe is for GPUs).", ""]  # fmt: skip
    lines += ["### Generation (no interpolation)", "",
              "| setting | nadm s/video | AnimateDiffPipeline s/video | speed-up | nadm peak GiB | diffusers peak GiB "
              "| nadm UNet TFLOP/s | diffusers UNet TFLOP/s | % of bf16 peak (nadm) | UNet GFLOP/step | UNet rel. err vs fp32 | frames PSNR vs fp32 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in gen:
        share = None if peak is None else 100 * r["unet_tflops"] / peak
        lines.append(f"| {r['setting']} | {fmt(r['nadm_s'], '.3f')} | {fmt(r['diffusers_s'], '.3f')} | {fmt(r['speedup'], '.2f', 'x')} "
                     f"| {fmt(r['nadm_peak_gib'])} | {fmt(r['diffusers_peak_gib'])} | {fmt(r['unet_tflops'], '.3f')} "
                     f"| {fmt(r['diffusers_unet_tflops'], '.3f')} | {fmt(share, '.1f', '%')} | {fmt(r['unet_gflop_per_step'], '.1f')} "
                     f"| {r['unet_rel_err']:.2e} | {'identical' if r['frames_psnr'] is None else format(r['frames_psnr'], '.1f') + ' dB'} |")  # fmt: skip
    lines += ["", "### Training step (batch 1)", "",
              "| setting | nadm s/step | plain UNetMotionModel s/step | throughput ratio | nadm peak GiB | plain peak GiB |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in train:
        lines.append(f"| {r['setting']} | {fmt(r['nadm_s'], '.3f')} | {fmt(r['plain_s'], '.3f')} | {fmt(r['throughput_ratio'], '.2f', 'x')} "
                     f"| {fmt(r['nadm_peak_gib'])} | {fmt(r['plain_peak_gib'])} |")  # fmt: skip
    lines += ["", "### SOFP interpolation (9 frames -> 17)", "", "| flow | where | size | interpolated frames/s | ms/frame |", "|---|---|---:|---:|---:|"]
    for r in sofp_rows:
        if "error" in r:
            lines.append(f"| {r['flow']} | {r['where']} | {r['size']} | unavailable: {r['error']} | |")
        else:
            lines.append(f"| {r['flow']} | {r['where']} | {r['size']} | {r['fps']:.1f} | {r['ms_per_frame']:.1f} |")
    lines += ["", "Notes: nadm runs sparse-causal attention on attn2 (NADM), diffusers versatile on both (AnimateDiff): "
              "the same weights, each model's own attention. 'UNet rel. err' compares one guided UNet pass of the fast "
              "path with fp32; 'frames PSNR' compares whole generated clips with the same seed.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models (the CPU harness proof)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="report file (default benchmarks/results/speed.md)")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: gen,train,sofp")
    args = parser.parse_args(argv)
    tiny = args.tiny or not args.device.startswith("cuda")
    if tiny and not args.tiny:
        print("no CUDA device: running the tiny harness proof on the CPU", file=sys.stderr)
        args.tiny = True
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(tiny, Path(tmp) / "tokenizer")
        gen = [] if "gen" in skip else [bench_generation(models, s, args.device, args.repeats) for s in (TINY_GEN if tiny else FULL_GEN)]
        train = [] if "train" in skip else [bench_training(models, s, args.device, args.repeats) for s in (TINY_TRAIN if tiny else FULL_TRAIN)]
    sofp_rows = [] if "sofp" in skip else bench_sofp(512, args.device, args.repeats)
    text = report(args, args.device, gen, train, sofp_rows)
    print(text)
    out = args.out or RESULTS / "speed.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"generation": gen, "training": train, "sofp": sofp_rows}, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
