"""`nadm interpolate`: double a video's frame count (paper Sec. III-E, SOFP) K times and write it with a sidecar."""

# Each command imports the nadm modules it runs inside its function (CLI start-up time).

from __future__ import annotations

from pathlib import Path

import click

from nadm.errors import NADMError

MAX_FRAMES = 2000  # output frames made without --force (16 frames --times 6 make 961; --times 12 would make 61441)


@click.command("interpolate")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output .mp4, .gif, .webp, or a path without extension for a folder of PNG frames.")
@click.option("--method", type=click.Choice(["sofp", "flow_midpoint", "crossfade"]), default="sofp",
              show_default=True, help="Interpolator: SOFP (the paper's), plain flow midpoint, or 50/50 cross-fade.")
@click.option("--flow", type=click.Choice(["dis", "farneback", "raft"]), default=None,
              help="Optical flow backend for sofp/flow_midpoint  [default: dis].")
@click.option("--dis-preset", type=click.Choice(["ultrafast", "fast", "medium"]), default=None,
              help="DIS flow quality/speed preset  [default: medium].")
@click.option("--times", "times_", type=click.IntRange(min=1), default=1, show_default=True,
              help="Repeat the doubling K times: N frames -> 2^K (N - 1) + 1.")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="sofp only: frame T for pair t is min(t + W, N - 1)  [default: the clip's last frame].")
@click.option("--loop", is_flag=True,
              help="IN is a loop: also fill the pair (last, first), N frames -> 2^K N (GIF/WebP loop forever anyway).")
@click.option("--keep-fps", is_flag=True, help="Keep the input fps (slow motion) instead of doubling it per pass.")
@click.option("--overwrite", is_flag=True, help="Replace OUT (and its .json sidecar) if nadm wrote it.")
@click.option("--force", is_flag=True, help=f"Make more than {MAX_FRAMES} output frames (refused without it).")
def interpolate(
    input_path: Path,
    output: Path,
    method: str,
    flow: str | None,
    dis_preset: str | None,
    times_: int,
    window: int | None,
    loop: bool,
    keep_fps: bool,
    overwrite: bool,
    force: bool,
) -> None:
    """Insert frames between the frames of IN (a video, GIF, or folder of images) and write OUT."""
    from nadm import interpolate as interp
    from nadm.io import check_output_path, read_sidecar, read_video, write_video
    from nadm.loops import interpolate_clip

    # 1. option consistency and the output path, before any expensive work
    if method == "crossfade" and flow is not None:
        raise NADMError("--flow does not apply to --method crossfade (it uses no optical flow)")
    if dis_preset is not None and (method == "crossfade" or (flow or "dis") != "dis"):
        raise NADMError("--dis-preset only applies with --flow dis")
    if window is not None and method != "sofp":
        raise NADMError(f"--window only applies to --method sofp, not {method}")
    out = check_output_path(output, overwrite)

    # 2. read and check the input clip
    frames, fps_in = read_video(input_path)
    try:
        frames = interp.check_clip(frames)
    except ValueError as e:
        raise NADMError(f"{input_path}: {e}") from e
    check_frame_count(frames.shape, times_, force, loop)

    # 3. interpolate
    result, record = interpolate_clip(frames, times_, method, flow, dis_preset, window, loop)

    # 4. write with the settings in the sidecar
    fps_out = fps_in if keep_fps else fps_in * 2**times_
    settings = {"command": "interpolate", **record, "keep_fps": keep_fps, "input": str(Path(input_path).resolve()),
                "fps_in": fps_in, "fps_out": fps_out}  # fmt: skip
    write_video(result, out, fps_out, metadata={"interpolation": settings, "loop": loop}, overwrite=overwrite)
    written = read_sidecar(out)["fps"]  # the rate written (a GIF's delays are whole 1/100 s)
    click.echo(f"wrote {out}: {len(frames)} -> {len(result)} frames, {fps_in:g} -> {written:g} fps ({method})")


def check_frame_count(shape: tuple[int, ...], times: int, force: bool, loop: bool = False) -> int:
    """The output frame count of `times` doublings of a `(N, H, W, 3)` clip, 2^K (N - 1) + 1 (a loop: 2^K N);
    NADMError above MAX_FRAMES unless forced, saying the count and the memory the frames take."""
    n, h, w = shape[:3]
    count = 2**times * n if loop else 2**times * (n - 1) + 1
    if count > MAX_FRAMES and not force:
        gib = count * h * w * 3 / 2**30
        raise NADMError(
            f"--times {times} would make {count:,} frames from {n} ({2**times}x, {gib:,.1f} GiB of {w}x{h} frames), "
            f"more than {MAX_FRAMES:,}: pass --force to make them anyway"
        )
    return count
