"""`nadm data prepare|check`: build and verify an LPV-HD-style dataset (Sec. III-B); layout in docs/dataset.md."""

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
    """Build (prepare) and verify (check) a video dataset: ROOT/videos/... + ROOT/captions.csv."""


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
    help="Drop clips shorter than this; training needs frames x stride (paper: 8 x 4 = 32).",
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
    from nadm.data import format_stats, prepare_dataset

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
    from nadm.data import check_dataset, format_stats

    report = check_dataset(root, frames=frames, stride=stride, captions_file=captions_file, progress=not quiet)
    click.echo(format_stats(report.infos))
    _print_problems(report.problems)
    if report.problems:
        # SystemExit, not ctx.exit: `nadm.cli.main` runs click with standalone_mode=False, which drops Exit codes
        sys.exit(1)
