"""`nadm data prepare|check|cache`: build, verify and pre-encode an LPV-HD-style dataset (Sec. III-B); docs/dataset.md."""

# Each command imports torch, diffusers and the nadm modules that need them inside its function (CLI start-up time).

from __future__ import annotations

import sys
from pathlib import Path

import click


def _print_problems(problems: list[tuple[str, str]]) -> None:
    """One line per problem: `  file: message`."""
    click.echo(f"problems: {len(problems)}")
    for name, message in problems:
        click.echo(f"  {name}: {message}")


@click.group()
def data() -> None:
    """Build (prepare), verify (check) and pre-encode (cache) a video dataset: ROOT/videos/... + captions."""


@data.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--detector",
    type=click.Choice(["content", "adaptive"]),
    default="content",
    show_default=True,
    help="PySceneDetect detector: content (hard cuts) or adaptive (fewer false cuts in fast motion).",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Cut threshold; lower finds more cuts. [default: content 27, adaptive 3]",
)
@click.option(
    "--min-frames",
    type=int,
    default=32,
    show_default=True,
    help="Drop clips shorter than this; a training clip needs (frames - 1) x stride + 1 (paper: 29).",
)
@click.option("--overwrite", is_flag=True, help="Replace DST's contents if DST is not empty.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare(
    src: Path, dst: Path, detector: str, threshold: float | None, min_frames: int, overwrite: bool, quiet: bool
) -> None:
    """Cut the videos under SRC at scene changes into single-scene clips in DST.

    Videos are read from SRC/videos if it exists, else from SRC (any nesting). Captions in SRC/captions.csv
    or SRC/captions.jsonl are inherited by every clip of their video; other clips get an empty caption in
    DST/captions.csv to fill in. Unreadable videos are reported and skipped.
    """
    from nadm.curate import format_stats, prepare_dataset

    report = prepare_dataset(
        src, dst, detector=detector, threshold=threshold, min_frames=min_frames, overwrite=overwrite, progress=not quiet
    )
    click.echo(
        f"videos: {report.videos}, scenes: {report.scenes}, dropped shorter than {min_frames} frames: "
        f"{report.dropped_short}, clips written: {len(report.clips)} to {dst / 'videos'}"
    )
    click.echo(format_stats(report.clips))
    if report.problems:
        _print_problems(report.problems)
    if report.uncaptioned:
        click.echo(f"{report.uncaptioned} clip(s) have an empty caption: write them in {dst / 'captions.csv'}")


@data.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--frames", type=int, default=8, show_default=True, help="Frames per training clip.")
@click.option("--stride", type=int, default=4, show_default=True, help="Frame stride of training clips.")
@click.option("--captions", "captions_file", type=click.Path(path_type=Path), default=None,
              help="Captions file other than ROOT/captions.csv|jsonl (e.g. a WebVid CSV).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def check(root: Path, frames: int, stride: int, captions_file: Path | None, quiet: bool) -> None:
    """Check that every clip decodes, has a caption and is long enough; exit 1 if any problem is found."""
    from nadm.curate import check_dataset, format_stats

    report = check_dataset(root, frames=frames, stride=stride, captions_file=captions_file, progress=not quiet)
    click.echo(format_stats(report.infos))
    _print_problems(report.problems)
    if report.problems:
        # SystemExit, not ctx.exit: `nadm.cli.main` runs click with standalone_mode=False, which drops Exit codes
        sys.exit(1)


@data.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--base", default=None, help="Stable Diffusion 1.5 whose VAE and text encoder encode the clips "
              "(hub id, diffusers folder or single file). [default: stable-diffusion-v1-5/stable-diffusion-v1-5]")
@click.option("--base-config", default=None, help="Component configs for a single-file --base (diffusers folder).")
@click.option("--frames", type=int, default=8, show_default=True, help="Frames per training clip.")
@click.option("--stride", type=int, default=4, show_default=True, help="Frame stride of training clips.")
@click.option("--resolution", type=int, default=256, show_default=True, help="Square training resolution.")
@click.option("--clips-per-video", type=int, default=1, show_default=True,
              help="Random clips cached per video (clip k is the one training epoch k would draw).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the clip sampling (use the run's).")
@click.option("--captions", "captions_file", type=click.Path(path_type=Path), default=None,
              help="Captions file other than ROOT/captions.csv|jsonl (e.g. a WebVid CSV).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def cache(root: Path, out: Path, base: str | None, base_config: str | None, frames: int, stride: int, resolution: int,
          clips_per_video: int, seed: int, captions_file: Path | None, device: str, overwrite: bool, quiet: bool) -> None:
    """Encode ROOT's training clips once with the frozen VAE and text encoder into OUT (for `nadm train
    --latent-cache OUT`); both encoders are frozen in training (Sec. III-D3), so this saves their work every step."""
    from nadm.base import DEFAULT_BASE, load_base
    from nadm.data import DataConfig, VideoClipDataset
    from nadm.errors import NADMError
    from nadm.latent_cache import cache_latents
    from nadm.outputs import check_replaceable, check_writable
    from nadm.pipeline import resolve_device

    # 1. everything about the request before the models load (OUT: new, empty, or with --overwrite an earlier cache)
    check_replaceable(out, overwrite or (out.is_dir() and not any(out.iterdir())))
    check_writable(out.parent)
    try:
        config = DataConfig(root=root, frames=frames, stride=stride, resolution=resolution,
                            captions_file=None if captions_file is None else str(captions_file))  # fmt: skip
    except ValueError as e:
        raise NADMError(str(e)) from None
    dataset = VideoClipDataset(config, seed=seed)
    dev = resolve_device(device)
    # 2. the frozen encoders, in float32 (latents are cached in float32)
    model = load_base(base or DEFAULT_BASE, config=base_config)
    model.vae.to(dev)
    model.text_encoder.to(dev)
    # 3. encode
    path = cache_latents(dataset, model.vae, model.text_encoder, model.tokenizer, out,
                         clips_per_video=clips_per_video, overwrite=overwrite, progress=not quiet)  # fmt: skip
    click.echo(f"cached {len(dataset)} video(s) x {clips_per_video} clip(s) to {path}")
