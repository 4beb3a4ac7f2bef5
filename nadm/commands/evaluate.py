"""`nadm evaluate`: the paper's metric tables (Sec. IV-C2, Tables I-IV) from video folders; the inputs, options,
table and JSON report it shares with `nadm compare` (`nadm.commands.compare`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nadm.errors import NADMError

if TYPE_CHECKING:
    from nadm.evaluation import EvalOptions, VideoSet

VIDEO_FILE_SUFFIXES = (".mp4", ".gif", ".webp", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# column title and number format per metric, in the paper's order (Table I), then the weight-free ones
COLUMNS = {
    "fvd": ("FVD16 ↓", "{:.1f}"),
    "kvd": ("KVD16 ↓", "{:.2f}"),
    "clip_text": ("CLIP-text ↑", "{:.3f}"),
    "clip_temp": ("CLIP-temp ↑", "{:.3f}"),
    "is": ("IS ↑", "{:.2f}"),
    "warp": ("warp ↓", "{:.5f}"),
    "flicker": ("flicker ↓", "{:.2f}"),
}

METRIC_HELP = """\b
Metrics (--metrics, comma-separated, default all):
  fvd, kvd   FVD16 / KVD16: Frechet distance and unbiased polynomial-kernel MMD^2
             between I3D (Kinetics-400) features of real and generated clips.
             Needs --real.
  clip_text  100 x cosine(CLIP frame embedding, CLIP prompt embedding), mean
             over every frame, then over videos. Needs prompts.
  clip_temp  cosine between CLIP embeddings of consecutive frames, mean over
             every pair, then over videos.
  is         Inception Score from C3D (UCF-101) class probabilities: mean ±
             std over --is-splits splits of the shuffled clips (default 10,
             as StyleGAN-V; with --trials, over the splits of every trial).
  warp       flow warping error (Lai et al. 2018): frame t+1 warped back onto
             frame t with the flow t->t+1, squared RGB error in [0, 1] over
             non-occluded pixels (forward-backward check), mean over pairs.
  flicker    mean absolute difference of consecutive frames, in grey levels.

\b
Clips: FVD16, KVD16 and IS use ONE clip per video: its first 16 frames taken
every --real-stride / --fake-stride frames (default 1: frames 0..15); videos
too short for that are an error. Frames are centre-cropped to a square; I3D
resizes to 224x224 itself, C3D gets 128x128 and uses the centre 112x112.
CLIP, warp and flicker use every frame of each generated video.

\b
Interpolated videos: a generated video made with SOFP (2N-1 frames at twice
the frame rate) is scored on its 16 generated keyframes by default, not on
its first 16 frames: its sidecar (VIDEO.json, from nadm generate, compare or
interpolate) says which frames those are (every 2nd; every 2^K-th after
--times K), and --fake-stride counts keyframes. --all-frames scores the first
16 output frames instead. Videos without such a sidecar use their frames.

\b
Trials: with --trials 1 (default) FVD/KVD/IS use the full sets. With T > 1 each
trial draws a random subset without replacement (--subset-size videos, default
half of each set) of the real and of the generated clips, and the table shows
FVD/KVD as mean ± std over the T trials, as the paper's tables do (IS: over the
splits of every trial). FVD depends on the number of clips: compare only
numbers computed with the same sizes.
"""


# ------------------------------------------------------------------------------------------- inputs


def list_videos(folder: str | os.PathLike) -> list[Path]:
    """The videos in a folder, naturally sorted: video files, and sub-folders of frames (one per video)."""
    from nadm.io import natural_key

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise NADMError(f"{root} is not a folder of videos")
    entries = sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    videos = [p for p in entries if p.is_dir() or p.suffix.lower() in VIDEO_FILE_SUFFIXES]
    if not videos:
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries):
            raise NADMError(f"{root} holds image files but no videos: put each video's frames in its own sub-folder")
        raise NADMError(f"no videos ({', '.join(VIDEO_FILE_SUFFIXES)} or frame folders) in {root}")
    return videos


def read_prompt_file(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a prompt file, stripped."""
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise NADMError(f"cannot read the prompt file {path}: {e}") from e
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise NADMError(f"the prompt file {path} has no prompts")
    return prompts


def match_prompts(videos: list[Path], prompts_file: str | None) -> list[str]:
    """One prompt per video: line i of --prompts for sorted video i, else the "prompt" of each video's sidecar."""
    from nadm.io import read_sidecar

    if prompts_file:
        prompts = read_prompt_file(prompts_file)
        if len(prompts) != len(videos):
            raise NADMError(
                f"{prompts_file} has {len(prompts)} prompts for {len(videos)} videos in {videos[0].parent}: "
                "give one line per video, in the videos' sorted order"
            )
        return prompts
    out = []
    for video in videos:
        side = read_sidecar(video) or {}
        prompt = side.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise NADMError(f"{video} has no sidecar {video.name}.json with a \"prompt\": pass --prompts FILE")
        out.append(prompt)
    return out


def _labels(folders: list[str]) -> list[str]:
    """Table labels: folder names, or the full paths where two names collide."""
    names = [Path(f).expanduser().resolve().name for f in folders]
    return names if len(set(names)) == len(names) else [str(Path(f).expanduser()) for f in folders]


def parse_metrics(text: str) -> tuple[str, ...]:
    """'all' or a comma-separated subset of the metric names, in the table's order."""
    from nadm.evaluation import METRICS

    if text.strip().lower() == "all":
        return METRICS
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise NADMError(f"unknown metric(s) {', '.join(unknown) or '(none)'}: choose from all, {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in names)


# ------------------------------------------------------------------------------------------ outputs


def write_json(path: Path, data: dict[str, Any], overwrite: bool) -> None:
    """Write JSON atomically (a temporary file in the same folder, then `safe_replace`)."""
    from nadm.outputs import write_text_atomic

    try:
        write_text_atomic(path, json.dumps(data, indent=2) + "\n", overwrite=overwrite)
    except OSError as e:
        raise NADMError(f"could not write {path}: {e.strerror or e}") from e


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table like the paper's: one row per set, mean ± std where there are several values."""
    metrics = [m for m in COLUMNS if any(m in r for r in results.values())]
    header = ["videos"] + [COLUMNS[m][0] for m in metrics]
    rows = []
    for label, res in results.items():
        row = [label]
        for m in metrics:
            if m not in res:
                row.append("-")
                continue
            fmt = COLUMNS[m][1]
            cell = fmt.format(res[m]["mean"])
            if m in ("fvd", "kvd", "is") and len(res[m]["values"]) > 1:
                cell += " ± " + fmt.format(res[m]["std"])
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    return "\n".join(lines)


def score_and_report(sets: list[VideoSet], real: list[Path] | None, real_dir: str | None, opt: EvalOptions,
                     json_out: Path | None, inputs: dict[str, Any], overwrite: bool = False) -> None:
    """Score the sets (`evaluate_sets`), print the table and, with --json, write the report: versions,
    settings, the real videos, the generated ones (`inputs`) and the results."""
    from dataclasses import asdict

    from nadm.evaluation import evaluate_sets
    from nadm.io import environment_versions

    results = evaluate_sets(sets, real, opt)
    click.echo(format_table(results))
    if json_out:
        settings = {k: list(v) if k == "metrics" else v for k, v in asdict(opt).items() if k != "progress"}
        real_info = {"dir": real_dir, "videos": [p.name for p in real]} if real else None
        write_json(json_out, {"versions": environment_versions(), "settings": settings, "real": real_info,
                              **inputs, "results": results}, overwrite)
        click.echo(f"wrote {json_out}")


# --------------------------------------------------------------------------------------- shared options


def eval_options(f: Callable) -> Callable:
    """The options `evaluate` and `compare` share (metric choice, trials, networks, device)."""
    shown = dict(show_default=True)
    options = [
        click.option("--metrics", "metrics_text", default="all", **shown, help="Comma-separated metrics, or all."),
        click.option("--trials", type=int, default=1, **shown, help="FVD/KVD/IS trials (random subsets when > 1)."),
        click.option("--subset-size", type=int, default=None,
                     help="Videos per set in each trial [default: half of each set]."),
        click.option("--seed", type=int, default=0, **shown, help="Seed of the trials' subsets."),
        click.option("--is-splits", type=int, default=10, **shown, help="Inception Score splits (mean ± std)."),
        click.option("--real-stride", type=int, default=1, **shown, help="Frame step of the real 16-frame clips."),
        click.option("--fake-stride", type=int, default=1, **shown, help="Frame step of the generated clips."),
        click.option("--keyframes/--all-frames", default=True, **shown,
                     help="Interpolated generated videos: clips of their generated keyframes, or of all frames."),
        click.option("--flow", type=click.Choice(["dis", "farneback", "raft"]), default="dis", **shown,
                     help="Optical flow for the warping error."),
        click.option("--weights-dir", type=click.Path(file_okay=False), default=None,
                     help="Folder with i3d_torchscript.pt / c3d_ucf101.pt [default: the cache, "
                          "~/.cache/nadm/metrics]."),
        click.option("--clip-model", default=None,
                     help="CLIP hub id or local folder [default: openai/clip-vit-large-patch14]."),
        click.option("--device", default="auto", **shown, help="auto, cpu, cuda or cuda:N."),
        click.option("--batch-size", type=int, default=8, **shown, help="Clips per network batch (CLIP: 4x frames)."),
        click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
                     help="Also write the results here."),
        click.option("--overwrite", is_flag=True, help="Replace an existing --json file (and, for compare, videos)."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def options_from(kw: dict[str, Any]) -> EvalOptions:
    """EvalOptions from the shared click options."""
    from nadm.evaluation import EvalOptions
    from nadm.metric_networks import DEFAULT_CLIP_MODEL

    return EvalOptions(
        metrics=parse_metrics(kw["metrics_text"]),
        trials=kw["trials"],
        subset_size=kw["subset_size"],
        seed=kw["seed"],
        is_splits=kw["is_splits"],
        real_stride=kw["real_stride"],
        fake_stride=kw["fake_stride"],
        keyframes=kw["keyframes"],
        weights_dir=kw["weights_dir"],
        clip_model=kw["clip_model"] or DEFAULT_CLIP_MODEL,
        flow=kw["flow"],
        device=kw["device"],
        batch_size=kw["batch_size"],
        progress=not kw["quiet"],
    )


# ------------------------------------------------------------------------------------------ evaluate


@click.command(epilog=METRIC_HELP + """
\b
Prompts (clip_text): line i of --prompts (non-empty lines) belongs to the i-th
video of each --fake folder in natural sort order (video2 before video10);
without --prompts each video's sidecar VIDEO.json (written by nadm generate)
must hold a "prompt".
""")
@click.option("--fake", "fake_dirs", multiple=True, required=True, type=click.Path(),
              help="Folder of generated videos (repeat for several rows).")
@click.option("--real", "real_dir", type=click.Path(), default=None, help="Folder of real videos (FVD/KVD).")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), default=None, help="One prompt per line.")
@eval_options
def evaluate(fake_dirs: tuple[str, ...], real_dir: str | None, prompts_file: str | None, **kw: Any) -> None:
    """Score generated videos: FVD16, KVD16, CLIP-text, CLIP-temp, IS, warp, flicker.

    The paper's metrics (Sec. IV-C2) plus two weight-free temporal ones. Each folder holds one video per
    file (mp4/gif/webp/avi/mov/mkv/webm) or per sub-folder of frames."""
    from nadm.evaluation import NEEDS_PROMPTS, VideoSet
    from nadm.outputs import check_output_file

    # 1. check every input before any network is loaded
    json_out = check_output_file(kw["json_out"], kw["overwrite"])
    opt = options_from(kw)
    real = list_videos(real_dir) if real_dir else None
    sets = []
    for label, folder in zip(_labels(list(fake_dirs)), fake_dirs):
        videos = list_videos(folder)
        prompts = match_prompts(videos, prompts_file) if set(opt.metrics) & NEEDS_PROMPTS else None
        sets.append(VideoSet(label, videos, prompts))

    # 2. score, 3. print, 4. save
    fake = {s.label: {"dir": d, "videos": [p.name for p in s.paths]} for s, d in zip(sets, fake_dirs)}
    score_and_report(sets, real, real_dir, opt, json_out, {"fake": fake}, kw["overwrite"])
