"""Options several commands share (`nadm generate`, `nadm animate`): one definition each, attached as decorators."""

from __future__ import annotations

import click

motion_lora_option = click.option(
    "--motion-lora", "motion_loras", multiple=True, metavar="SRC[:SCALE]",
    help="Motion LoRA fused into the motion modules at SCALE (default 1): a hub id, a diffusers LoRA file or folder, "
         "or an AnimateDiff release file such as v2_lora_PanLeft.ckpt. Repeatable.",
)  # fmt: skip


def parse_motion_loras(values: tuple[str, ...]):
    """`--motion-lora` values -> MotionLoraSpecs (NADMError for a missing file or a bad scale, before any loading)."""
    from nadm.motion_lora import MotionLoraSpec

    return tuple(MotionLoraSpec.parse(value) for value in values)
