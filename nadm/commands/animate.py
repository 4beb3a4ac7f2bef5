"""`nadm animate IMAGE [PROMPT] -o OUT`: bring a still landscape painting to life, the painting as the exact first frame."""

from __future__ import annotations

import time
from pathlib import Path

import click

from nadm.animate import DEFAULT_PROMPT, FEATHER, check_animation, prepare_painting
from nadm.errors import NADMError
from nadm.image import FITS, LONG_SIDE

# `nadm generate`'s own options (flags, defaults, help) that animate shares, in --help order
SHARED_OPTIONS = ("negative", "frames", "steps", "guidance", "seed", "scheduler", "motion_scale", "base", "base_config",
                  "motion", "loras", "motion_loras", "interpolate", "flow", "fps", "device", "dtype", "vae_slicing", "vae_tiling",
                  "cpu_offload", "compile_mode", "context", "overlap", "window_schedule", "window_batch", "loop",
                  "travel_items", "travel_file", "travel_interp", "overwrite", "quiet")  # fmt: skip


def generate_options(names: tuple[str, ...]) -> list[click.Parameter]:
    """The options of `nadm generate` with these parameter names (one definition for both commands)."""
    from nadm.commands.generate import generate

    options = {param.name: param for param in generate.params}
    return [options[name] for name in names]


@click.command(epilog=f"Without PROMPT the prompt is: {DEFAULT_PROMPT!r}.")
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("prompt", required=False)
@click.option("-o", "--output", required=True, metavar="OUT",
              help="Video file (.mp4, .gif, .webp) or, without an extension, a folder of PNG frames.")
@click.option("--still", "still_mask", type=click.Path(path_type=Path), metavar="MASK",
              help="An image of IMAGE's proportions: white regions stay exactly the painting in every frame (feathered "
                   f"{FEATHER} px edge); black regions move.")
@click.option("--fit", type=click.Choice(FITS), default="crop", show_default=True,
              help="How IMAGE meets another aspect ratio: crop it, pad it with its paper colour (the padding stays "
                   "still), or stretch it.")
@click.option("--height", type=int, help=f"Height in pixels, a multiple of 8 [default: IMAGE's aspect ratio, long side {LONG_SIDE}].")
@click.option("--width", type=int, help="Width in pixels, a multiple of 8 [default: as --height].")
@click.option("--strength", type=float, default=1.0, show_default=True,
              help="How far the later frames may depart from the painting, 0 to 1: below 1 they start from the noised "
                   "painting (SDEdit), less motion; 0 gives copies of the painting.")
@click.option("--color-anchor/--no-color-anchor", default=True, show_default=True,
              help="Match each later frame's colour (Lab mean and spread per channel, moving region) to the painting's.")
def animate(image, prompt, output, still_mask, fit, height, width, strength, color_anchor, **shared) -> None:
    """Bring the painting IMAGE to life: mist drifts, water runs, and frame 0 is IMAGE itself, pixel for pixel."""
    from nadm.commands.generate import check_shared_options, load_pipeline
    from nadm.commands.options import parse_motion_loras
    from nadm.io import check_output_path, read_sidecar
    from nadm.pipeline import check_request
    from nadm.travel import travel_keys
    from nadm.windows import check_window_options

    o = shared
    # 1. the painting, the mask and everything else that can be checked without loading a model
    travel = travel_keys(o["travel_items"], o["travel_file"], o["frames"], o["travel_interp"])
    if prompt is not None and travel is not None:
        raise NADMError("give PROMPT or --travel/--travel-file, not both")
    if prompt is not None and not prompt.strip():
        raise NADMError("the prompt is empty (leave PROMPT out for the default prompt)")
    check_animation(strength)
    painting = prepare_painting(image, still_mask, fit, height, width)
    height, width = painting.size
    check_request(o["frames"], height, width, o["steps"], o["guidance"], o["seed"], o["interpolate"])
    windows = dict(context=o["context"], overlap=o["overlap"], loop=o["loop"], schedule=o["window_schedule"],
                   window_batch=o["window_batch"])  # fmt: skip
    check_window_options(o["frames"], **windows)
    lora_specs = check_shared_options(o["base"], o["base_config"], o["loras"], o["compile_mode"], o["cpu_offload"], o["fps"],
                                      o["motion_scale"])  # fmt: skip
    motion_lora_specs = parse_motion_loras(o["motion_loras"])
    # 2. where the clip goes: refused now if it exists (without --overwrite) or has an unknown extension
    path = check_output_path(output, o["overwrite"])

    # 3. motion weights, then the base and the video UNet
    from nadm.animate import PaintingCondition
    from nadm.pipeline import save_result

    pipe = load_pipeline(o["frames"], windows, o["base"], o["base_config"], o["motion"], lora_specs, motion_lora_specs,
                         o["device"], o["dtype"], o["scheduler"], o["vae_slicing"], o["vae_tiling"], o["cpu_offload"],
                         o["compile_mode"], o["quiet"])  # fmt: skip

    # 4. animate (the painting held in the one denoising loop) and write the clip with its sidecar
    start = time.perf_counter()
    condition = PaintingCondition(painting, strength, color_anchor, o["loop"])
    result = pipe(travel or prompt or DEFAULT_PROMPT, o["negative"] or None, num_frames=o["frames"], height=height,
                  width=width, steps=o["steps"], guidance=o["guidance"], seed=o["seed"], interpolate=o["interpolate"],
                  flow=o["flow"], motion_scale=o["motion_scale"], context=o["context"], overlap=o["overlap"],
                  loop=o["loop"], window_schedule=o["window_schedule"], window_batch=o["window_batch"],
                  travel_interp=o["travel_interp"], condition=condition)  # fmt: skip
    written = save_result(result, path, fps=o["fps"] or result.fps, overwrite=o["overwrite"])
    rate = read_sidecar(written)["fps"]  # the rate written (a GIF's delays are whole 1/100 s)
    click.echo(
        f"wrote {written}: {len(result.frames)} frames ({len(result.keyframes)} generated), {width}x{height}, "
        f"{rate:g} fps, seed {result.settings['seed']}, {time.perf_counter() - start:.1f} s"
    )


animate.params.extend(generate_options(SHARED_OPTIONS))
