"""`nadm compare`: generate with several motion checkpoints, then score them in one table (Sec. IV-C2, Tables
I-IV); inputs, options and report as `nadm evaluate` (`nadm.commands.evaluate`)."""

from __future__ import annotations

import re
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
from nadm.errors import NADMError

if TYPE_CHECKING:
    from nadm.evaluation import VideoSet


def _parse_motion(items: tuple[str, ...]) -> dict[str, str]:
    """NAME=CHECKPOINT pairs -> {name: checkpoint}; names become folder names, so they must be plain."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, ckpt = item.partition("=")
        name = name.strip()
        if not sep or not name or not ckpt.strip():
            raise NADMError(f"--motion takes NAME=CHECKPOINT, got '{item}'")
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", name) or name in (".", ".."):
            raise NADMError(f"motion name '{name}' must be a plain folder name (letters, digits, . _ + -)")
        if name in out:
            raise NADMError(f"motion name '{name}' is given twice")
        out[name] = ckpt.strip()
    return out


def _parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise NADMError(f"--seeds takes comma-separated integers, got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise NADMError(f"--seeds needs distinct integers, got '{text}'")
    return seeds


def _reusable(path: Path, prompt: str, seed: int, motion: str) -> bool:
    """True when path is a video compare made before with this prompt, seed and motion checkpoint."""
    from nadm.io import read_sidecar

    side = read_sidecar(path) or {}
    return side.get("prompt") == prompt and side.get("seed") == seed and side.get("motion") == motion


@click.command(epilog=METRIC_HELP + """
\b
Videos go to OUT/NAME/PPPP_seedS.mp4 (prompt index, seed) with a sidecar holding
the prompt, seed, motion checkpoint and generation settings. An existing video
with the same prompt, seed and checkpoint is reused (an interrupted run
resumes); any other existing file is an error unless --overwrite.
""")
@click.option("--motion", "motions", multiple=True, required=True,
              help="NAME=CHECKPOINT of a motion module (repeat: NADM, the AnimateDiff baseline, ablations).")
@click.option("--prompts", "prompts_file", required=True, type=click.Path(dir_okay=False), help="One prompt per line.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds; every prompt runs with each.")
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
    from nadm.evaluation import NEEDS_REAL, VideoSet, check_request
    from nadm.io import check_output_file, check_replaceable, check_writable
    from nadm.metric_networks import C3D_WEIGHTS, I3D_WEIGHTS, resolve_weights

    # 1. check every input, and fetch the metric networks, before hours of generation
    json_out = check_output_file(kw["json_out"], kw["overwrite"])
    opt = options_from(kw)
    checkpoints = _parse_motion(motions)
    prompts = read_prompt_file(prompts_file)
    seed_list = _parse_seeds(seeds)
    real = list_videos(real_dir) if real_dir else None
    root = Path(out_dir).expanduser()
    jobs = [(i, p, s) for i, p in enumerate(prompts) for s in seed_list]
    sets = [VideoSet(name, [root / name / f"{i:04d}_seed{s}.mp4" for i, _, s in jobs], [p for _, p, _ in jobs])
            for name in checkpoints]
    check_request(sets, real, opt)
    check_writable(root)
    for vs in sets:
        for path, (_, prompt, seed) in zip(vs.paths, jobs):
            if path.exists() and not kw["overwrite"] and not _reusable(path, prompt, seed, checkpoints[vs.label]):
                raise NADMError(f"{path} exists and was not made with this prompt/seed/checkpoint: pass --overwrite")
            check_replaceable(path, True)  # only a video nadm wrote is reused or replaced
    if set(opt.metrics) & NEEDS_REAL:
        resolve_weights(I3D_WEIGHTS, opt.weights_dir)
    if "is" in opt.metrics:
        resolve_weights(C3D_WEIGHTS, opt.weights_dir)

    # 2. generate, one checkpoint at a time
    for vs in sets:
        _generate_set(vs, checkpoints[vs.label], jobs, base, opt.device, kw["overwrite"], not kw["quiet"],
                      dict(num_frames=num_frames, height=height, width=width, steps=steps, guidance=guidance,
                           interpolate=interpolate), fps)

    # 3. score all sets against the same real features, 4. print and save
    generation = {"base": base, "motions": checkpoints, "prompts": prompts, "seeds": seed_list,
                  "num_frames": num_frames, "height": height, "width": width, "steps": steps,
                  "guidance": guidance, "interpolate": interpolate, "out": str(root)}
    score_and_report(sets, real, real_dir, opt, json_out, {"generation": generation}, kw["overwrite"])


def _generate_set(vs: VideoSet, checkpoint: str, jobs: list[tuple[int, str, int]], base: str | None, device: str | None,
                  overwrite: bool, progress: bool, call: dict[str, Any], fps: float) -> None:
    """Generate (or reuse) every video of one motion checkpoint with NADMPipeline."""
    from tqdm.auto import tqdm

    from nadm.io import write_video
    from nadm.pipeline import NADMPipeline

    todo = [(path, prompt, seed) for path, (_, prompt, seed) in zip(vs.paths, jobs) if overwrite or not path.exists()]
    if not todo:
        return
    kwargs = {"motion": checkpoint, "device": None if device in (None, "", "auto") else device}
    if base is not None:
        kwargs["base"] = base
    pipe = NADMPipeline.from_pretrained(**kwargs)
    for path, prompt, seed in tqdm(todo, desc=f"generating {vs.label}", unit="video", disable=not progress):
        result = pipe(prompt, seed=seed, **call)
        meta = {"prompt": prompt, "seed": seed, "motion": checkpoint, "settings": dict(result.settings)}
        write_video(result.frames, path, fps=fps, metadata=meta, overwrite=overwrite)
    del pipe
