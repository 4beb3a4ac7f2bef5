"""Tiny random Stable-Diffusion-shaped components for `nadm selftest` and the tests (offline, seconds on a CPU).

The layout matches SD 1.5 (4 latent channels, VAE scale factor 8, CLIP text encoder, cross-attention UNet) at a
fraction of the width, so every code path that runs on the real model runs here too.
"""

# diffusers and transformers are imported inside functions (CLI start-up time: `nadm selftest` imports this module).

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from nadm.base import quiet_loading
from nadm.checkpoint import save_checkpoint
from nadm.config import NADMConfig
from nadm.motion import build_video_unet, motion_state_dict

TINY_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 8, 16, 16),
    latent_channels=4,
    norm_num_groups=4,
    layers_per_block=1,
    sample_size=32,
)
TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=32,
)
# The motion module matching TINY_UNET: NADM defaults (versatile + sparse-causal) at tiny width.
TINY_MOTION = NADMConfig(
    block_out_channels=(32, 64),
    motion_layers_per_block=1,
    motion_num_attention_heads=2,
    motion_norm_num_groups=8,
    adapter_grid=4,
    adapter_hidden=32,
    adapter_dim=16,
)


def _byte_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table (the alphabet of a byte-level BPE vocabulary)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def save_tiny_tokenizer(path: str | Path):
    """Write an offline byte-level CLIP tokenizer (every byte a token, no merges) and return it loaded."""
    from transformers import CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_unicode()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=77)
    tok.save_pretrained(path)
    return tok


def tiny_components(tokenizer_dir: str | Path, seed: int = 0) -> dict:
    """In-memory tiny SD components: `unet`, `vae`, `text_encoder` and a `tokenizer` saved to `tokenizer_dir`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = save_tiny_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET)
    vae = AutoencoderKL(**TINY_VAE)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), **ids, **TINY_TEXT))
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)


def build_tiny_base(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random SD-1.5-layout pipeline (diffusers folder: unet, vae, text_encoder, tokenizer, scheduler)."""
    from nadm.outputs import staged_folder

    path = Path(path)
    with quiet_loading(), staged_folder(path, overwrite=False) as staging:  # quiet: it is a tiny model
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        components = tiny_components(staging / "tokenizer", seed)
        scheduler = DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1, clip_sample=False
        )
        pipe = StableDiffusionPipeline(
            **components,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(staging)  # put in place with public file modes (safetensors writes 0600)
    return path


def tiny_unet(seed: int = 0):
    """A tiny random `UNet2DConditionModel` (in memory) of TINY_UNET's shape."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**TINY_UNET)


def tiny_motion_config(**changes) -> NADMConfig:
    """TINY_MOTION with some fields changed (e.g. attention types for the ablations)."""
    return replace(TINY_MOTION, **changes)


def build_tiny_motion(path: str | Path, config: NADMConfig = TINY_MOTION, seed: int = 0, overwrite: bool = False) -> Path:
    """Save a tiny NADM checkpoint folder for TINY_UNET with random, non-zero motion weights (as after training).

    A fresh module's zero output projections would leave SD's per-frame output unchanged; random weights make the
    motion path (versatile + sparse-causal attention, Sec. III-D1) actually change what is generated.
    """
    motion = motion_state_dict(build_video_unet(tiny_unet(seed), config))
    g = torch.Generator().manual_seed(seed)
    for key, value in motion.items():
        # linear weights and all biases random; norm scales and the sinusoidal position table (pos_embed.pe) kept
        if ".pos_embed." not in key and (value.ndim == 2 or key.endswith(".bias")):
            motion[key] = torch.randn(value.shape, generator=g) * 0.05
    return save_checkpoint(path, config, motion, overwrite=overwrite)
