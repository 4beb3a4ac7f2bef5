"""`nadm compare`: generate with several motion checkpoints, then score them in one table (Sec. IV-C2, Tables
I-IV); inputs, options and report as `nadm evaluate` (`nadm.commands.evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nadm.commands.evaluate import (
    METRIC_HELP,
    eval_options,
    list_videos,
    options_from,
    read_prompt_file,
    score_and_report,
)
from nadm.commands.options import parse_named

if TYPE_CHECKING:
    from nadm.jobs import Job, Plan


@click.command(epilog=METRIC_HELP + """
\b
Videos go to OUT/NAME/PPPP_seedS.mp4 (prompt index, seed) with a sidecar holding
the prompt, seed, motion checkpoint and generation settings, and each finished
video gets a line in OUT/manifest.jsonl. An existing video made with the same
settings is reused (an interrupted run resumes); one made with other settings
is an error unless --overwrite. Under accelerate launch the videos are split
between the processes (docs/scale_out.md).
""")
@click.option("--motion", "motions", multiple=True, required=True,
              help="NAME=CHECKPOINT of a motion module (repeat: NADM, the AnimateDiff baseline, ablations).")
@click.option("--prompts", "prompts_file", required=True, type=click.Path(dir_okay=False), help="One prompt per line.")
@click.option("--seeds", default="0", show_default=True, help="Seeds, e.g. 0,1,2 or 0-9; every prompt runs with each.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the videos.")
@click.option("--real", "real_dir", type=click.Path(), default=None, help="Folder of real videos (FVD/KVD).")
@click.option("--base", default=None,
              help="Stable Diffusion base (hub id, folder or .safetensors) [default: the pipeline's].")
@click.option("--frames", "num_frames", type=int, default=16, show_default=True, help="Generated frames per video.")
@click.option("--height", type=int, default=256, show_default=True)
@click.option("--width", type=int, default=256, show_default=True)
@click.option("--steps", type=int, default=25, show_default=True, help="DDIM steps (Sec. IV-A2).")
@click.option("--guidance", type=float, default=8.0, show_default=True,
              help="Classifier-free guidance scale (Sec. IV-A2).")
@click.option("--interpolate/--no-interpolate", default=True, show_default=True, help="SOFP interpolation N -> 2N-1.")
@click.option("--fps", type=float, default=8.0, show_default=True, help="Frame rate of the written videos.")
@eval_options
def compare(motions: tuple[str, ...], prompts_file: str, seeds: str, out_dir: str, real_dir: str | None,
            base: str | None, num_frames: int, height: int, width: int, steps: int, guidance: float,
            interpolate: bool, fps: float, **kw: Any) -> None:
    """Generate with several motion checkpoints and score them in one table.

    Every checkpoint gets the same prompts and seeds, like the paper's Tables I-IV."""
    from nadm.devices import AUTO, resolve_device, resolve_dtype
    from nadm.evaluation import NEEDS_REAL, VideoSet, check_request
    from nadm.jobs import job_device, job_grid, make_jobs, parse_seeds, plan_jobs, process_state
    from nadm.metric_networks import C3D_WEIGHTS, I3D_WEIGHTS, resolve_weights
    from nadm.outputs import check_output_file, check_writable

    # 1. check every input, and fetch the metric networks, before hours of generation
    json_out = check_output_file(kw["json_out"], kw["overwrite"])
    opt = options_from(kw)
    checkpoints = parse_named(motions, "--motion", "CHECKPOINT", "motion", plain=True)  # names become folders
    prompts = read_prompt_file(prompts_file)
    seed_list = parse_seeds(seeds)
    real = list_videos(real_dir) if real_dir else None
    root = Path(out_dir).expanduser()
    # every checkpoint gets the same jobs (nadm.jobs): prompt x seed, the settings that determine a video hashed
    device = job_device(None if opt.device in AUTO else opt.device)  # under accelerate launch: this process's
    call = dict(num_frames=num_frames, height=height, width=width, steps=steps, guidance=guidance, interpolate=interpolate)
    common = {"base": base, **call, "fps": fps, "dtype": str(resolve_dtype(None, resolve_device(device))).removeprefix("torch.")}
    grid = job_grid(prompts, seed_list)
    jobs = {name: make_jobs([root / name / f"{i - 1:04d}_seed{s}.mp4" for i, _, s in grid], grid, {"motion": ckpt, **common})
            for name, ckpt in checkpoints.items()}  # fmt: skip
    sets = [VideoSet(name, [job.path for job in js], [job.prompt for job in js]) for name, js in jobs.items()]
    check_request(sets, real, opt)
    check_writable(root)
    main_process = process_state().is_main_process  # scores and reports (the others only generate)
    if main_process and set(opt.metrics) & NEEDS_REAL:
        resolve_weights(I3D_WEIGHTS, opt.weights_dir)
    if main_process and "is" in opt.metrics:
        resolve_weights(C3D_WEIGHTS, opt.weights_dir)
    plans: dict[str, Plan] = {}  # what is made, what is left; one run id for all
    for name, js in jobs.items():
        plans[name] = plan_jobs(js, kw["overwrite"], root, next(iter(plans.values())).run_id if plans else None)

    # 2. generate, one checkpoint at a time, the videos left split between the processes
    for vs in sets:
        _generate_set(plans[vs.label], vs.label, checkpoints[vs.label], base, device, kw["overwrite"], not kw["quiet"],
                      call, fps)  # fmt: skip
    if not main_process:
        return

    # 3. score all sets against the same real features, 4. print and save
    generation = {"base": base, "motions": checkpoints, "prompts": prompts, "seeds": seed_list,
                  "num_frames": num_frames, "height": height, "width": width, "steps": steps,
                  "guidance": guidance, "interpolate": interpolate, "out": str(root)}
    score_and_report(sets, real, real_dir, opt, json_out, {"generation": generation}, kw["overwrite"])


def _generate_set(plan: Plan, name: str, checkpoint: str, base: str | None, device: str | None, overwrite: bool,
                  progress: bool, call: dict[str, Any], fps: float) -> None:  # fmt: skip
    """Generate this process's share of the videos left of one motion checkpoint with NADMPipeline (nadm.jobs)."""
    from nadm.io import write_video
    from nadm.jobs import run_jobs
    from nadm.pipeline import NADMPipeline

    kwargs = {"motion": checkpoint, "device": device, "progress": False}  # one bar of videos (nadm.jobs)
    if base is not None:
        kwargs["base"] = base

    def make(pipe, job: Job) -> None:
        result = pipe(job.prompt, seed=job.seed, **call)
        meta = {"prompt": job.prompt, "seed": job.seed, "motion": checkpoint, "settings": dict(result.settings),
                "job": job.record()}  # fmt: skip
        write_video(result.frames, job.path, fps=fps, metadata=meta, overwrite=overwrite)

    run_jobs(plan, lambda: NADMPipeline.from_pretrained(**kwargs), make, progress, desc=f"generating {name}")
