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


def parse_named(items: tuple[str, ...], option: str, value: str, what: str, plain: bool = False) -> dict[str, str]:
    """`NAME=VALUE` options (`--motion`, `--system`) -> {name: value} in the order given; NADMError for a malformed
    item or a name given twice, and with `plain` for a name that cannot be a folder name."""
    import re

    from nadm.errors import NADMError

    out: dict[str, str] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        name = name.strip()
        if not sep or not name or not rest.strip():
            raise NADMError(f"{option} takes NAME={value}, got '{item}'")
        if plain and (not re.fullmatch(r"[A-Za-z0-9._+-]+", name) or name in (".", "..")):
            raise NADMError(f"{what} name '{name}' must be a plain folder name (letters, digits, . _ + -)")
        if name in out:
            raise NADMError(f"{what} name '{name}' is given twice")
        out[name] = rest.strip()
    return out
