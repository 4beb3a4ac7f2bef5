"""The NADM motion module (Sec. III-D1, Fig. 3-4): a video UNet from a frozen SD 1.5 `UNet2DConditionModel`.

Built on diffusers' `MotionAdapter`/`UNetMotionModel`, which already put a temporal transformer after every
image layer; each of its blocks runs attn1 -> attn2 -> GEGLU feed-forward over tokens laid out as
`(batch*height*width, frames, channels)`. NADM sets attn1 to versatile attention (Eq. 7, all frames) and attn2 to
sparse-causal attention (Eq. 8, previous frame only) through attention processors, and zero-initialises each
module's output projection so an untrained module leaves SD's per-frame output unchanged.
Video layout everywhere: `(batch, channels, frames, height, width)`.
"""

# diffusers is imported inside functions (CLI start-up time of the commands that import this module).

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nadm.base import quiet_loading
from nadm.config import NADMConfig
from nadm.errors import NADMError

if TYPE_CHECKING:
    import diffusers  # the video UNet is diffusers' UNetMotionModel, the base UNet its UNet2DConditionModel


class SparseCausalAttnProcessor:
    """Sparse-causal attention (Eq. 6, 8): frame i attends only to frame i-1; frame 1 attends to itself.

    With a single key per query the softmax is exactly 1, so the output is `W_o W_v z_{i-1}`: computed directly,
    without forming queries, keys or scores (DESIGN.md section 3; the tests check it against masked softmax).
    """

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("sparse-causal attention is temporal self-attention: no encoder states or mask")
        if hidden_states.ndim != 3:
            raise ValueError(f"expected tokens (batch*h*w, frames, channels), got shape {tuple(hidden_states.shape)}")
        residual = hidden_states
        # previous[:, i] = z_{i-1}; previous[:, 0] = z_0 (the first frame has no predecessor).
        previous = torch.cat([hidden_states[:, :1], hidden_states[:, :-1]], dim=1)
        out = attn.to_out[1](attn.to_out[0](attn.to_v(previous)))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class SkipAttnProcessor:
    """An attention switched off for Table II's ablations: the block's residual branch adds nothing."""

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        return hidden_states if attn.residual_connection else torch.zeros_like(hidden_states)


def _processor(kind: str):
    """The attention processor implementing one of NADMConfig's attention types."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    return {"versatile": AttnProcessor2_0, "sparse_causal": SparseCausalAttnProcessor, "off": SkipAttnProcessor}[kind]()


def set_motion_attention(video_unet: diffusers.UNetMotionModel, config: NADMConfig) -> None:
    """Put attn1/attn2 of every motion block to the config's attention types (Eq. 7 and 8); image layers untouched."""
    processors = dict(video_unet.attn_processors)  # set_attn_processor wants every key, image layers included
    n = 0
    for key in processors:
        if "motion_modules" not in key:
            continue
        if ".attn1." in key:
            processors[key] = _processor(config.attn1)
        elif ".attn2." in key:
            processors[key] = _processor(config.attn2)
        else:
            raise ValueError(f"unexpected attention in a motion module: {key}")
        n += 1
    if n == 0:
        raise ValueError("the model has no motion-module attention layers")
    video_unet.set_attn_processor(processors)


def motion_attention_types(video_unet: diffusers.UNetMotionModel) -> dict[str, str]:
    """Which attention type each motion-module attention layer currently runs (for checks and `nadm info`)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    names = {SparseCausalAttnProcessor: "sparse_causal", SkipAttnProcessor: "off", AttnProcessor2_0: "versatile"}
    return {k: names.get(type(p), type(p).__name__) for k, p in video_unet.attn_processors.items() if "motion_modules" in k}


def new_motion_adapter(config: NADMConfig) -> diffusers.MotionAdapter:
    """A freshly initialised `MotionAdapter` with zero output projections (identity at the start of training)."""
    from diffusers import MotionAdapter

    adapter = MotionAdapter(**config.adapter_kwargs())
    zeroed = 0
    for name, module in adapter.named_modules():
        if name.split(".")[-2:-1] == ["motion_modules"]:  # e.g. down_blocks.0.motion_modules.1
            nn.init.zeros_(module.proj_out.weight)
            nn.init.zeros_(module.proj_out.bias)
            zeroed += 1
    if zeroed == 0:
        raise RuntimeError("found no motion module output projections to zero")
    return adapter


def motion_shape_of(unet2d: diffusers.UNet2DConditionModel) -> dict[str, Any]:
    """The motion-module architecture a base UNet fixes (NADMConfig fields): its block widths, layers per block and
    GroupNorm groups (SD 1.5: (320, 640, 1280, 1280), 2, 32)."""
    layers = unet2d.config.layers_per_block
    return {
        "block_out_channels": tuple(unet2d.config.block_out_channels),
        "motion_layers_per_block": layers if isinstance(layers, int) else layers[0],
        "motion_norm_num_groups": int(unet2d.config.norm_num_groups),
    }


def check_compatible(unet2d: diffusers.UNet2DConditionModel, config: NADMConfig) -> None:
    """Refuse a motion module whose shape does not fit the base UNet, naming the mismatch (ValueError)."""
    base = motion_shape_of(unet2d)
    if base["block_out_channels"] != tuple(config.block_out_channels):
        raise ValueError(
            f"motion module block_out_channels {tuple(config.block_out_channels)} do not match the base UNet's "
            f"{base['block_out_channels']}"
        )
    if base["motion_layers_per_block"] != config.motion_layers_per_block:
        raise ValueError(
            f"motion module has {config.motion_layers_per_block} layers per block, the base UNet {base['motion_layers_per_block']}"
        )
    uneven = [width for width in config.block_out_channels if width % config.motion_norm_num_groups]
    if uneven:
        raise ValueError(f"motion_norm_num_groups {config.motion_norm_num_groups} does not divide the block width {uneven[0]}")


def build_video_unet(
    unet2d: diffusers.UNet2DConditionModel, config: NADMConfig, motion_state_dict: dict[str, torch.Tensor] | None = None
) -> diffusers.UNetMotionModel:
    """SD UNet2D + NADM motion modules -> `UNetMotionModel` taking `(b, c, f, h, w)` latents (Sec. III-D1).

    Without `motion_state_dict` the motion modules are fresh (zero output projections); with one, it is loaded
    strictly (`load_motion_state_dict`).
    """
    from diffusers import UNetMotionModel


    check_compatible(unet2d, config)
    with quiet_loading():  # from_unet2d warns about a dtype cast it does itself
        video_unet = UNetMotionModel.from_unet2d(unet2d, new_motion_adapter(config))
    if (video_unet.device, video_unet.dtype) != (unet2d.device, unet2d.dtype):
        video_unet.to(device=unet2d.device, dtype=unet2d.dtype)
    if motion_state_dict is not None:
        load_motion_state_dict(video_unet, motion_state_dict)
    set_motion_attention(video_unet, config)
    return video_unet


def motion_state_dict(video_unet: diffusers.UNetMotionModel) -> dict[str, torch.Tensor]:
    """The motion-module weights of a video UNet, keyed as in diffusers' `MotionAdapter`."""
    return {k: v for k, v in video_unet.state_dict().items() if "motion_modules" in k}


def check_state_dict(expected: dict[str, torch.Size], got: dict[str, torch.Tensor], what: str) -> None:
    """Strict key/shape check: a missing, unexpected or mis-shaped key fails with an error naming it."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(k for k in set(expected) & set(got) if tuple(got[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing key {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        problems.append(f"unexpected key {unexpected[0]}" + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    if shapes:
        k = shapes[0]
        problems.append(f"key {k} has shape {tuple(got[k].shape)}, expected {tuple(expected[k])}")
    if problems:
        raise NADMError(f"{what}: " + "; ".join(problems))


def load_motion_state_dict(video_unet: diffusers.UNetMotionModel, state_dict: dict[str, torch.Tensor]) -> None:
    """Load motion-module weights strictly into a video UNet (the image layers are not touched)."""
    expected = {k: v.shape for k, v in motion_state_dict(video_unet).items()}
    check_state_dict(expected, state_dict, "motion module weights")
    missing, unexpected = video_unet.load_state_dict(state_dict, strict=False)
    assert not unexpected and set(missing).isdisjoint(expected), "strict check above guarantees this"


def freeze_for_training(video_unet: diffusers.UNetMotionModel, noise_adapter: nn.Module | None = None) -> None:
    """Freeze everything but the motion modules (and the noise adapter): Sec. III-D3."""
    for name, param in video_unet.named_parameters():
        param.requires_grad_("motion_modules" in name)
    if noise_adapter is not None:
        noise_adapter.requires_grad_(True)


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """Trainable, frozen and motion-module parameter counts."""
    counts = {"trainable": 0, "frozen": 0, "motion": 0, "total": 0}
    for name, p in module.named_parameters():
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
        counts["total"] += p.numel()
        if "motion_modules" in name:
            counts["motion"] += p.numel()
    return counts


def predict_noise(
    video_unet: diffusers.UNetMotionModel, latents: torch.Tensor, timesteps: torch.Tensor, text_embeddings: torch.Tensor
) -> torch.Tensor:
    """epsilon_theta(z_t^{1:N}, t, tau(y)) (Eq. 12): latents `(b, c, f, h, w)`, text `(b, tokens, dim)` for all frames or
    `(b, f, tokens, dim)` per frame (prompt travel) -> `(b, c, f, h, w)`."""
    if latents.ndim != 5:
        raise ValueError(f"latents must be (batch, channels, frames, height, width), got shape {tuple(latents.shape)}")
    b, _, f = latents.shape[:3]
    per_frame = text_embeddings.ndim == 4
    if text_embeddings.shape[0] != b or text_embeddings.ndim not in (3, 4) or (per_frame and text_embeddings.shape[1] != f):
        want = f"({b}, tokens, dim) or ({b}, {f}, tokens, dim)"
        raise ValueError(f"text embeddings must be {want}, got shape {tuple(text_embeddings.shape)}")
    limit = video_unet.config.motion_max_seq_length
    if f > limit:
        raise ValueError(f"{f} frames exceed the motion module's position encoding length ({limit})")
    # diffusers' UNetMotionModel wants one text embedding per frame: (b*f, tokens, dim), frame-major per video.
    text = text_embeddings.flatten(0, 1) if per_frame else text_embeddings.repeat_interleave(f, dim=0)
    return video_unet(latents, timesteps, encoder_hidden_states=text).sample


def motion_output_layers(video_unet) -> list[nn.Module]:
    """The output projection (`proj_out`) of every motion module: what each adds to its residual stream (Fig. 3)."""
    return [m for name, m in video_unet.named_modules() if re.fullmatch(r".*motion_modules\.\d+\.proj_out", name)]


@contextmanager
def scaled_motion(video_unet, scale: float = 1.0):
    """While open, every motion module adds `scale` times its output to the image features (1: as trained; 0: no
    temporal mixing, SD's per-frame output). Forward hooks on the output projections, removed on exit."""
    if scale == 1:
        yield video_unet
        return
    layers = motion_output_layers(video_unet)
    if not layers:
        raise ValueError("the model has no motion-module output projections to scale")
    handles = [layer.register_forward_hook(lambda module, args, output: output * scale) for layer in layers]
    try:
        yield video_unet
    finally:
        for handle in handles:
            handle.remove()
