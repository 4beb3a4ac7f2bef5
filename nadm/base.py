"""The frozen Stable Diffusion 1.5 base (Sec. III-C): loading its components from a hub id or a local folder."""

from __future__ import annotations

from pathlib import Path

from nadm.errors import NADMError

DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def _offline_error(src: str, what: str, err: Exception) -> NADMError:
    if Path(src).exists():
        return NADMError(f"cannot load the {what} from {src}: {err.__class__.__name__}: {str(err).splitlines()[0]}")
    return NADMError(
        f"cannot load {src!r} from the Hugging Face hub (offline or not found); pass a local path to a diffusers folder instead"
    )


def load_unet(src: str = DEFAULT_BASE, **kwargs):
    """The base `UNet2DConditionModel` from a diffusers folder (its `unet/` subfolder) or a hub id."""
    from diffusers import UNet2DConditionModel

    if src.endswith((".safetensors", ".ckpt")) and not Path(src).exists():
        raise NADMError(f"base checkpoint not found: {src}")
    try:
        return UNet2DConditionModel.from_pretrained(src, subfolder="unet", **kwargs)
    except (OSError, ValueError) as e:
        raise _offline_error(src, "base UNet", e) from None
