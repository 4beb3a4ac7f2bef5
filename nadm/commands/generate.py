"""`nadm generate` (text -> video file, Alg. 1 inference, Sec. IV-A2) and `nadm selftest` (the offline smoke test)."""

# Each command imports torch, diffusers and the nadm modules that need them inside its function (CLI start-up time).

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import click

from nadm.base import DEFAULT_BASE, LoraSpec, check_base_source, quiet_loading
from nadm.commands.options import motion_lora_option, parse_motion_loras
from nadm.errors import NADMError
from nadm.jobs import expand_pattern, parse_seeds
from nadm.pipeline import (
    BASE_FPS, COMPILE_MODES, DEFAULT_MOTION, SCHEDULERS, check_compile, check_motion_scale, check_request,
)  # fmt: skip
from nadm.travel import INTERPOLATIONS, travel_keys
from nadm.windows import DEFAULT_SCHEDULE, SCHEDULES, check_window_options

DTYPE_CHOICES = ["auto", "float32", "float16", "bfloat16", "fp32", "fp16", "bf16"]
# options that do not change a clip (left out of its settings hash, nadm.jobs); the prompt and seed go in per job
NOT_SETTINGS = ("prompt", "output", "prompts_file", "seed", "seeds", "device", "overwrite", "quiet", "cpu_offload",
                "travel_items", "travel_file")


# ------------------------------------------------------------------------------------------------ prompts


def read_prompts(path: Path) -> list[str]:
    """Prompts from a UTF-8 text file: one a line; blank lines and lines starting with '#' are skipped."""
    if not path.is_file():
        raise NADMError(f"prompts file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise NADMError(f"cannot read the prompts file {path}: {e}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise NADMError(f"no prompts in {path} (one prompt a line; '#' starts a comment line)")
    return prompts


# ------------------------------------------------------------------------------ shared with `nadm animate`


def check_shared_options(base, base_config, loras, compile_mode, cpu_offload, fps, motion_scale) -> tuple[LoraSpec, ...]:
    """The model, output-rate and motion options generate and animate share, checked without loading anything."""
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise NADMError(f"--fps must be a positive number, got {fps}")
    check_motion_scale(motion_scale)
    lora_specs = tuple(LoraSpec.parse(spec) for spec in loras)
    check_base_source(base, base_config)
    check_compile(compile_mode, cpu_offload)
    return lora_specs


def load_pipeline(frames: int, windows: dict, base, base_config, motion, lora_specs, motion_lora_specs, device, dtype,
                  scheduler, vae_slicing, vae_tiling, cpu_offload, compile_mode, quiet):  # fmt: skip
    """Motion weights (small; they fix the context windows' limits, checked for `frames` and the `windows` options of
    `plan_windows`), then the base and the video UNet."""
    from nadm.checkpoint import load_motion_source
    from nadm.pipeline import NADMPipeline, note, resolve_device, resolve_dtype
    from nadm.windows import plan_windows, trained_frames

    resolve_dtype(dtype, resolve_device(device))  # an unavailable device fails here, before any loading
    if motion is None:
        note(f"no --motion given: using AnimateDiff's {DEFAULT_MOTION} as the baseline motion module")
    with quiet_loading():
        weights = load_motion_source(motion or DEFAULT_MOTION)
    plan_windows(frames, trained_frames(weights), weights.config.motion_max_seq_length, **windows)  # C fits the table
    pipe = NADMPipeline.from_pretrained(
        base, motion=weights, loras=lora_specs, device=device, dtype=dtype, scheduler=scheduler, base_config=base_config,
        cpu_offload=cpu_offload, vae_slicing=vae_slicing, vae_tiling=vae_tiling, compile=compile_mode, progress=not quiet,
        motion_loras=motion_lora_specs,
    )  # fmt: skip
    if pipe.compile_mode is not None and not quiet:
        note(f"--compile {pipe.compile_mode}: the first clip at each size waits while torch compiles the UNet")
    return pipe


# ----------------------------------------------------------------------------------------------- generate


@click.command()
@click.argument("prompt", required=False)
@click.option("-o", "--output", required=True, metavar="OUT",
              help="Video file (.mp4, .gif, .webp) or, without an extension, a folder of PNG frames. With --prompts or "
                   "--seeds: a pattern with {i} (prompt number, e.g. {i:03d}), {slug} and/or {seed}, e.g. "
                   "clips/{i:03d}-{seed}.mp4.")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Generate one clip per line of FILE (blank and '#' lines skipped) instead of PROMPT.")
@click.option("--negative", default="", help="Negative prompt (the unconditional branch of guidance).")
@click.option("--frames", type=int, default=16, show_default=True,
              help="Frames to generate, N (2N-1 after interpolation, 2N with --loop); beyond --context in windows.")
@click.option("--height", type=int, default=512, show_default=True, help="Height in pixels, a multiple of 8.")
@click.option("--width", type=int, default=512, show_default=True, help="Width in pixels, a multiple of 8.")
@click.option("--steps", type=int, default=25, show_default=True, help="Sampling steps (paper: 25).")
@click.option("--guidance", type=float, default=8.0, show_default=True, help="Classifier-free guidance scale (paper: 8; 1 = off).")
@click.option("--seed", type=int, help="Random seed; drawn at random (and recorded in the sidecar) when not given.")
@click.option("--seeds", metavar="LIST", help="Seeds, e.g. 0,3,7 or 0-39: every prompt is made with each (a job per "
              "prompt x seed, split between processes under accelerate launch; made ones are skipped).")
@click.option("--scheduler", type=click.Choice(SCHEDULERS), default="ddim", show_default=True, help="Sampler (paper: ddim).")
@click.option("--base", default=DEFAULT_BASE, show_default=True,
              help="Stable Diffusion 1.5: hub id, local diffusers folder, or single-file .safetensors/.ckpt.")
@click.option("--base-config", metavar="DIR",
              help="For a single-file --base: a diffusers folder (or hub id) with the same architecture's configs.")
@click.option("--motion", help=f"NADM checkpoint folder or AnimateDiff motion weights [default: {DEFAULT_MOTION}, the baseline].")
@click.option("--lora", "loras", multiple=True, metavar="FILE[:SCALE]", help="LoRA fused into the base (repeatable; scale 1 by default).")
@click.option("--motion-scale", type=float, default=1.0, show_default=True,
              help="Scale of the motion modules' output: below 1 calmer, above 1 livelier; 0 = SD's frames without temporal mixing.")
@motion_lora_option
@click.option("--interpolate/--no-interpolate", default=True, show_default=True, help="SOFP interpolation N -> 2N-1 frames.")
@click.option("--flow", type=click.Choice(["dis", "farneback", "raft"]), default="dis", show_default=True,
              help="Optical flow for interpolation (raft needs torchvision).")
@click.option("--fps", type=float, help=f"Playback rate [default: {BASE_FPS:g} x output frames / generated frames, keeping the duration].")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="auto", show_default=True,
              help="auto: bfloat16 on CUDA (float16 where the GPU lacks native bf16), float32 on MPS/CPU.")
@click.option("--vae-slicing", is_flag=True, help="Decode one frame at a time (least VAE memory).")
@click.option("--vae-tiling", is_flag=True, help="Decode each frame in tiles (for sizes above 512 px).")
@click.option("--cpu-offload", is_flag=True, help="Keep weights on the CPU; move each model to the device only for its stage.")
@click.option("--compile", "compile_mode", type=click.Choice(["off", *COMPILE_MODES]), default="off", show_default=True,
              help="torch.compile the UNet: faster sampling after a slow first clip; reduce-overhead adds CUDA graphs.")
@click.option("--context", type=int, metavar="C",
              help="Frames the UNet sees together; longer clips run in overlapping windows of C  [default: the motion "
                   "module's training clip: 16 for AnimateDiff, recorded in NADM checkpoints].")
@click.option("--overlap", type=int, metavar="O", help="Frames shared by neighbouring windows  [default: C/4].")
@click.option("--windows", "window_schedule", type=click.Choice(SCHEDULES), default=DEFAULT_SCHEDULE, show_default=True,
              help="Window schedule: the same windows every step (static) or shifted each step (shifting).")
@click.option("--window-batch", type=int, metavar="K", help="Windows per UNet call  [default: 16/C, at least 1].")
@click.option("--loop", is_flag=True, help="A seamless loop: windows wrap around, interpolation fills (last, first).")
@click.option("--travel", "travel_items", multiple=True, metavar="'F: PROMPT'",
              help="Prompt travel instead of PROMPT: the prompt at frame F (repeatable, frames increasing).")
@click.option("--travel-file", type=click.Path(path_type=Path), metavar="FILE",
              help="Prompt travel from a YAML/JSON file: FRAME: PROMPT lines (a mapping) or [{frame, prompt}, ...].")
@click.option("--travel-interp", type=click.Choice(INTERPOLATIONS), default="linear", show_default=True,
              help="Text embeddings between travel keys: linear or spherical (slerp).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def generate(prompt, output, prompts_file, negative, frames, height, width, steps, guidance, seed, scheduler, base,
             base_config, motion, loras, motion_loras, motion_scale, interpolate, flow, fps, device, dtype, vae_slicing,
             vae_tiling, cpu_offload, compile_mode, context, overlap, window_schedule, window_batch, loop, travel_items,
             travel_file, travel_interp, overwrite, quiet, seeds) -> None:  # fmt: skip
    """Generate a landscape-painting video from PROMPT (Alg. 1: DDIM + guidance, then SOFP interpolation)."""
    from nadm.io import read_sidecar

    # 1. everything that can be checked without loading a model
    travel = travel_keys(travel_items, travel_file, frames, travel_interp)
    if (prompt is not None) + (prompts_file is not None) + (travel is not None) != 1:
        raise NADMError("give a PROMPT, --prompts FILE or --travel/--travel-file (one of the three)")
    prompts = read_prompts(prompts_file) if prompts_file is not None else [prompt if travel is None else travel]
    if travel is None and not all(p.strip() for p in prompts):
        raise NADMError("the prompt is empty")
    check_request(frames, height, width, steps, guidance, seed, interpolate)
    windows = dict(context=context, overlap=overlap, loop=loop, schedule=window_schedule, window_batch=window_batch)
    check_window_options(frames, **windows)
    lora_specs = check_shared_options(base, base_config, loras, compile_mode, cpu_offload, fps, motion_scale)
    motion_lora_specs = parse_motion_loras(motion_loras)
    # 2. the jobs (prompt x seed), where each goes, which are made already (skipped): refused now if an output exists
    #    with other settings (without --overwrite) or has an unknown extension (nadm.jobs)
    from nadm.devices import resolve_device, resolve_dtype
    from nadm.jobs import Share, common_folder, job_device, job_grid, make_jobs, plan_jobs

    if seeds is not None and seed is not None:
        raise NADMError("give --seed or --seeds, not both")
    seed_list, batch = parse_seeds(seeds) if seeds is not None else [seed], prompts_file is not None or seeds is not None
    grid = job_grid(prompts, seed_list)
    paths = expand_pattern(output, prompts, seed_list) if batch else [Path(output)]
    device = job_device(device)  # under accelerate launch: this process's device
    settings = {k: v for k, v in click.get_current_context().params.items() if k not in NOT_SETTINGS}
    settings["dtype"] = str(resolve_dtype(dtype, resolve_device(device))).removeprefix("torch.")  # fails before loading
    plan = plan_jobs(make_jobs(paths, grid, settings), overwrite, common_folder(paths) if batch else None)
    share = Share(plan, progress=not quiet and batch)  # this process's share of the jobs left
    if not share.jobs:
        return share.finish()

    # 3. motion weights (small; they fix the frame limit), then the base and the video UNet (a batch shows one bar of
    #    clips, nadm.jobs)
    from nadm.pipeline import save_result

    pipe = load_pipeline(frames, windows, base, base_config, motion, lora_specs, motion_lora_specs, device, dtype,
                         scheduler, vae_slicing, vae_tiling, cpu_offload, compile_mode, quiet or batch)  # fmt: skip

    # 4. generate and write each clip of this process's share (its sidecar keeps the job's settings and hash)
    def make(pipe, job) -> None:
        start = time.perf_counter()
        result = pipe(job.prompt, negative or None, num_frames=frames, height=height, width=width, steps=steps,
                      guidance=guidance, seed=job.seed, interpolate=interpolate, flow=flow, motion_scale=motion_scale,
                      context=context, overlap=overlap, loop=loop, window_schedule=window_schedule,
                      window_batch=window_batch, travel_interp=travel_interp)  # fmt: skip
        result.settings["job"] = job.record()
        written = save_result(result, job.path, fps=fps or result.fps, overwrite=overwrite)
        rate = read_sidecar(written)["fps"]  # the rate written (a GIF's delays are whole 1/100 s)
        click.echo(
            f"wrote {written}: {len(result.frames)} frames ({len(result.keyframes)} generated), {width}x{height}, "
            f"{rate:g} fps, seed {result.settings['seed']}, {time.perf_counter() - start:.1f} s"
        )

    share.run(pipe, make)


# ----------------------------------------------------------------------------------------------- selftest

SELFTEST_PROMPT = "a misty Chinese ink landscape, mountains and a river, clouds drifting"
SELFTEST_FRAMES, SELFTEST_SIZE = 16, 64


class _Stages:
    """Runs named stages, timing each and printing one line per stage; remembers the stage that failed."""

    def __init__(self):
        self.current = ""

    @contextmanager
    def __call__(self, name: str):
        self.current = name
        start = time.perf_counter()
        info: list[str] = []
        yield info
        click.echo(f"  {name:<40s} {time.perf_counter() - start:7.2f} s   {' '.join(info)}")


@click.command()
@click.option("--keep", type=click.Path(path_type=Path), metavar="DIR",
              help="Keep the models and video in DIR: DIR/base and DIR/motion work as --base and --motion.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="auto", show_default=True)
def selftest(keep: Path | None, device: str, dtype: str) -> None:
    """Generate a short video offline with tiny random models, end to end, and time each stage."""
    if keep is not None:
        from nadm.outputs import check_writable

        clash = [keep / name for name in ("base", "motion", "selftest.mp4") if (keep / name).exists()]
        if clash:
            raise NADMError(f"{clash[0]} already exists: give --keep an empty or new folder")
        check_writable(keep)
        keep.mkdir(parents=True, exist_ok=True)
    work = keep if keep is not None else Path(tempfile.mkdtemp(prefix="nadm-selftest-"))
    stage = _Stages()
    start = time.perf_counter()
    try:
        _run_selftest(work, device, dtype, stage)
    except NADMError:
        raise
    except Exception as e:  # noqa: BLE001 - the selftest reports any failure, with its traceback, and exits 1
        traceback.print_exc()
        click.echo(f"selftest FAILED during '{stage.current}': {e.__class__.__name__}: {e}", err=True)
        sys.exit(1)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    click.echo(f"selftest passed in {time.perf_counter() - start:.1f} s")
    if keep is not None:
        click.echo(f"kept: {keep / 'base'} (use as --base), {keep / 'motion'} (--motion), {keep / 'selftest.mp4'}")


def _run_selftest(work: Path, device: str, dtype: str, stage: _Stages) -> None:
    """The selftest's stages; any failed check raises."""
    import numpy as np

    from nadm.io import read_video
    from nadm.motion import motion_attention_types
    from nadm.pipeline import NADMPipeline, save_result
    from nadm.tiny import build_tiny_base, build_tiny_motion

    n, size = SELFTEST_FRAMES, SELFTEST_SIZE
    click.echo("nadm selftest: tiny random Stable Diffusion + NADM motion module, offline")
    with stage("build tiny base (diffusers folder)") as info:
        build_tiny_base(work / "base")
        info.append(str(work / "base"))
    with stage("build tiny NADM checkpoint") as info:
        build_tiny_motion(work / "motion")
        info.append(str(work / "motion"))
    with stage("load pipeline") as info:
        pipe = NADMPipeline.from_pretrained(work / "base", motion=work / "motion", device=device, dtype=dtype, progress=False)
        kinds = set(motion_attention_types(pipe.video_unet).values())
        if kinds != {"versatile", "sparse_causal"}:
            raise AssertionError(f"motion attention types are {sorted(kinds)}, expected versatile + sparse_causal")
        info.append(f"{pipe.device} {str(pipe.dtype).removeprefix('torch.')}, versatile + sparse-causal attention")
    with stage(f"generate {n} frames {size}x{size}, DDIM 25 steps") as info:
        result = pipe(SELFTEST_PROMPT, num_frames=n, height=size, width=size, seed=0)
        info.append(", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
        if result.frames.shape != (2 * n - 1, size, size, 3) or result.frames.dtype != np.uint8:
            raise AssertionError(f"got frames {result.frames.shape} {result.frames.dtype}, expected ({2 * n - 1}, {size}, {size}, 3) uint8")
        if not np.array_equal(result.frames[::2], result.keyframes) or result.keyframes.std() < 1:
            raise AssertionError("interpolation changed the generated frames, or the frames are blank")
    with stage("write mp4") as info:
        path = save_result(result, work / "selftest.mp4")
        info.append(f"{path} ({path.stat().st_size} bytes)")
    with stage("read back") as info:
        frames, fps = read_video(path)
        if frames.shape != result.frames.shape or fps != result.fps:
            raise AssertionError(f"read back {frames.shape} at {fps} fps, wrote {result.frames.shape} at {result.fps} fps")
        error = np.abs(frames.astype(np.int16) - result.frames).mean()
        if error > 20:
            raise AssertionError(f"decoded video differs from the frames by {error:.1f} levels on average")
        info.append(f"{len(frames)} frames at {fps:g} fps, mean H.264 error {error:.1f}/255")
    with stage("same seed again") as info:
        again = pipe(SELFTEST_PROMPT, num_frames=n, height=size, width=size, seed=0, interpolate=False)
        if not np.array_equal(again.keyframes, result.keyframes):
            raise AssertionError("the same seed gave different frames")
        info.append("identical frames")
