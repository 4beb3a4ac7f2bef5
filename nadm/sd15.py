"""Stable Diffusion 1.5's published architecture (the `unet`, `vae` and `text_encoder` configs of
stable-diffusion-v1-5), for building the real-size model with random weights where nothing can be downloaded."""

# torch, diffusers and transformers are imported inside `build`: the configs above need none of them.

from __future__ import annotations

UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
    norm_eps=1e-5,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
)
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    act_fn="silu",
)
TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
    hidden_act="quick_gelu",
)


def build(device: str = "cpu", dtype=None, seed: int = 0):
    """SD 1.5 UNet, VAE and CLIP text encoder with random weights: `(unet, vae, text_encoder)`."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET)
    vae = AutoencoderKL(**VAE)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER))
    models = (unet, vae, text_encoder)
    if device != "cpu" or dtype is not None:
        models = tuple(m.to(device=device, dtype=dtype) for m in models)
    return models
