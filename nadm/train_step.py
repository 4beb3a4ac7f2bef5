"""Alg. 1's training step (Sec. III-D3): the trained module (video UNet + noise adapter g) and one step's losses.

`trainable_module` builds what nadm trains (SD frozen; the motion modules, or a LoRA on them, and the noise adapter
learn),
`cast_frozen` puts SD's frozen weights in the half type, and `training_step` is Alg. 1's loop body on one
micro-batch, its noise and timesteps drawn from `step_generator(seed, step, micro-batch, rank)`; nadm.train
runs it.
"""

# diffusers is imported inside functions: `nadm train` reports a config mistake before it loads.

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from nadm.losses import NoiseAdapter, diffusion_loss, noise_contrastive_loss, total_loss
from nadm.motion import freeze_for_training, predict_noise
from nadm.motion_lora import has_lora, is_lora_key

if TYPE_CHECKING:
    import diffusers  # the video UNet is diffusers' UNetMotionModel; the forward process its DDPMScheduler

    from nadm.config import LossConfig, NoiseScheduleConfig


class NADMTrainModule(nn.Module):
    """epsilon_theta (SD's UNet + the motion module) and the noise adapter g as one module, so DDP syncs both."""

    def __init__(self, unet: diffusers.UNetMotionModel, adapter: NoiseAdapter):
        super().__init__()
        self.unet, self.adapter = unet, adapter
        self.lora = has_lora(unet)  # a motion LoRA is trained instead of the motion modules (nadm.motion_lora)
        self.base_fingerprint: str | None = None  # with a LoRA: the fingerprint of the motion weights it adapts

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor):
        """(b, c, f, h, w) latents -> (predicted noise (b, c, f, h, w), adapter embeddings (b, f, d))."""
        noise_pred = predict_noise(self.unet, noisy_latents, timesteps, text)
        return noise_pred, self.adapter(noise_pred)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Motion-module (or motion-LoRA) and noise-adapter weights (keys `unet.<...motion_modules...>`, `adapter.<...>`)."""
        return {k: v for k, v in self.state_dict().items() if is_trainable_key(k, self.lora)}


def is_trainable_key(key: str, lora: bool = False) -> bool:
    """Whether a key of `NADMTrainModule.state_dict()` names a trained weight: the noise adapter's, and the motion
    modules' (with `lora`, only the LoRA factors on them)."""
    if key.startswith("adapter."):
        return True
    return key.startswith("unet.") and "motion_modules" in key and (is_lora_key(key) or not lora)


@dataclass
class StepLosses:
    """The three losses of one micro-batch (Eq. 12, 11, 13), as float32 tensors with their graph."""

    diffusion: torch.Tensor
    contrastive: torch.Tensor
    total: torch.Tensor


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """A CPU generator for one micro-batch's noise and timesteps: a function of (seed, step, micro-batch, rank)."""
    state = np.random.SeedSequence([seed, step, micro, rank]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def training_step(
    module: nn.Module,
    latents: torch.Tensor,
    text: torch.Tensor,
    generator: torch.Generator,
    noise_scheduler: diffusers.DDPMScheduler,
    loss_cfg: LossConfig,
) -> StepLosses:
    """One training step of Alg. 1 (Sec. III-D3) on clean latents z_0 `(b, c, f, h, w)` and text `(b, tokens, dim)`."""
    if latents.ndim != 5:
        raise ValueError(f"latents must be (batch, channels, frames, height, width), got {tuple(latents.shape)}")
    b = latents.shape[0]
    # 1. eps ~ N(0, I) per frame and t ~ Uniform{0..T-1}, one t per video, from this step's own generator
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator).to(latents.device)
    # 2. forward diffusion z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps (Eq. 2)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    # 3. eps_theta(z_t, t, tau(y)) through the video UNet, and g(eps_theta^i) for every frame (Sec. III-D2)
    noise_pred, embeddings = module(noisy, timesteps, text)
    # 4. L_diff: MSE between eps and eps_theta (Eq. 12)
    l_diff = diffusion_loss(noise_pred, noise)
    # 5. L_con: InfoNCE over each video's frames, anchors 1..N-1, never across videos (Eq. 9-11)
    l_con = noise_contrastive_loss(embeddings, tau=loss_cfg.tau, m=loss_cfg.m, positive=loss_cfg.positive)
    # 6. L = lambda_diff * L_diff + lambda_con * L_con (Eq. 13)
    return StepLosses(l_diff, l_con, total_loss(l_diff, l_con, loss_cfg.lambda_diff, loss_cfg.lambda_con))


def make_noise_scheduler(noise_cfg: NoiseScheduleConfig) -> diffusers.DDPMScheduler:
    """The training forward process: DDPM with linear betas 0.00085-0.012 over 1000 steps (Sec. IV-A1)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=noise_cfg.num_train_timesteps,
        beta_start=noise_cfg.beta_start,
        beta_end=noise_cfg.beta_end,
        beta_schedule=noise_cfg.beta_schedule,
        prediction_type=noise_cfg.prediction_type,
    )


def unused_trainable_parameters(module: NADMTrainModule) -> list[str]:
    """Trainable parameters no gradient can reach under the configured attention types (e.g. sparse-causal
    attention never uses its query/key projections, Eq. 8): found by one tiny forward/backward pass."""
    unet = module.unet
    param = next(unet.parameters())
    side = 2 ** (len(unet.config.block_out_channels) - 1)  # the smallest latent every down block can halve
    latents = torch.zeros(1, unet.config.in_channels, 2, side, side, device=param.device, dtype=param.dtype)
    text = torch.zeros(1, 1, unet.config.cross_attention_dim, device=param.device, dtype=param.dtype)
    module.zero_grad(set_to_none=True)
    noise_pred, embeddings = module(latents, torch.zeros(1, dtype=torch.long, device=param.device), text)
    (noise_pred.float().sum() + embeddings.float().sum()).backward()
    unused = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    module.zero_grad(set_to_none=True)
    return unused


def trainable_module(
    video_unet: diffusers.UNetMotionModel, adapter: NoiseAdapter, gradient_checkpointing: bool = False, compile: bool = False
) -> tuple[NADMTrainModule, list[str]]:
    """The module nadm trains (Sec. III-D3): SD frozen, motion modules (or, when `video_unet` carries a motion LoRA,
    only its factors) and noise adapter trainable, except the parameters no gradient reaches under the configured
    attention types. Returns (module, their names).

    compile: torch.compile the module in place (its state-dict keys, checkpoints and DDP wrapping stay as they are).
    """
    module = NADMTrainModule(video_unet, adapter)
    freeze_for_training(video_unet, adapter)
    if module.lora:  # the motion module stays as --init-motion gave it; its LoRA learns
        for name, p in video_unet.named_parameters():
            p.requires_grad_(is_lora_key(name))
    unused = unused_trainable_parameters(module)
    for name, p in module.named_parameters():
        if name in unused:
            p.requires_grad_(False)
    if gradient_checkpointing:
        enable_checkpointing(video_unet)
    if compile:
        module.compile()
    return module, unused


def enable_checkpointing(video_unet: diffusers.UNetMotionModel) -> None:
    """Recompute activations in the backward pass: diffusers' checkpointing (ResNets, spatial transformers) plus
    every motion module, which diffusers leaves out and which holds most of what a step keeps (Sec. III-D1)."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

    video_unet.enable_gradient_checkpointing()
    # torch's checkpoint wrapper keeps state-dict keys as they were (it strips and restores its own prefix)
    apply_activation_checkpointing(video_unet, check_fn=lambda m: isinstance(m, AnimateDiffTransformer3D))


def cast_frozen(module: nn.Module, dtype: torch.dtype) -> None:
    """SD's frozen weights to `dtype` in place; the motion module (trainable, or frozen as unused, but exported
    either way) and the adapter stay float32, the master copy autocast computes from. Under a motion LoRA the motion
    module is frozen and not exported: it is cast too, and only the LoRA stays float32."""
    keep_motion = not has_lora(module)
    for name, p in module.named_parameters():
        if not p.requires_grad and not ("motion_modules" in name and keep_motion) and p.is_floating_point():
            p.data = p.data.to(dtype)
