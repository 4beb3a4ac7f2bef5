"""The one denoising loop (Alg. 1 inference, Sec. IV-A2) and the small pieces that condition it (DESIGN.md section 6).

Every way of making a clip runs `denoise`; what differs is the pieces it is given:

- a window schedule (`step -> windows`): which frames the video UNet sees together, and the weights that fuse the
  noise predictions of overlapping windows per frame (one window of all frames for an ordinary clip);
- a text schedule (`frames -> embeddings`): the prompt embedding of every frame (one prompt for all frames, or a
  prompt that travels over time);
- holds (`latents, step -> latents`): parts of the latents held to known content after every sampler step (the
  painting's first frame, still regions).

Layouts: latents `(1, c, f, h, w)`; text `(b, tokens, dim)` shared by all frames or `(b, f, tokens, dim)` per frame,
b = 2 [negative, prompt] with classifier-free guidance, else 1 [prompt]; window weights `(len(frames),)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from diffusers import SchedulerMixin


@dataclass(frozen=True)
class Window:
    """Frames the video UNet denoises together, and their per-frame fusion weights (weights of a frame sum to 1)."""

    frames: tuple[int, ...]  # clip frame indices, in the order the motion module sees them
    weights: torch.Tensor  # (len(frames),) float32


class WindowSchedule(Protocol):
    """Which windows cover the clip at sampler step `step` (0-based); every frame's weights sum to 1 over them."""

    def __call__(self, step: int, num_frames: int) -> list[Window]: ...


class TextSchedule(Protocol):
    """Text embeddings for the given clip frames: `(b, tokens, dim)` (the same for all) or `(b, len(frames), tokens, dim)`."""

    def __call__(self, frames: Sequence[int]) -> torch.Tensor: ...


class Hold(Protocol):
    """Latents after a sampler step, with held content put back at the noise level of `scheduler.timesteps[index]`
    (`index == len(timesteps)`: clean)."""

    def __call__(self, latents: torch.Tensor, scheduler: "SchedulerMixin", index: int) -> torch.Tensor: ...


def all_frames(step: int, num_frames: int) -> list[Window]:
    """The trivial window schedule: one window of the whole clip, weight 1 (an ordinary clip)."""
    return [Window(tuple(range(num_frames)), torch.ones(num_frames))]


@dataclass(frozen=True)
class OnePrompt:
    """The trivial text schedule: one embedding `(b, tokens, dim)` for every frame."""

    embeddings: torch.Tensor

    def __call__(self, frames: Sequence[int]) -> torch.Tensor:
        return self.embeddings


def guided(eps: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance over the batched pass `[negative, prompt]` (Sec. IV-A2); batch 1 passes through."""
    if eps.shape[0] == 1:
        return eps
    eps_negative, eps_prompt = eps.chunk(2)
    return eps_negative + guidance * (eps_prompt - eps_negative)


def fused_noise(
    unet: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    t: torch.Tensor,
    windows: list[Window],
    text: TextSchedule,
    guidance: float,
) -> torch.Tensor:
    """Guided noise prediction `(1, c, f, h, w)` for the whole clip, fused over windows with their weights."""
    b = 1 + (guidance > 1)
    if len(windows) == 1 and windows[0].frames == tuple(range(latents.shape[2])):  # one window: no fusion arithmetic
        return guided(unet(torch.cat([latents] * b), t, text(windows[0].frames)), guidance)
    eps = torch.zeros_like(latents)
    for window in windows:
        index = torch.tensor(window.frames, device=latents.device)
        part = latents.index_select(2, index)  # (1, c, len(window), h, w)
        eps_w = guided(unet(torch.cat([part] * b), t, text(window.frames)), guidance)
        weights = window.weights.to(eps.device, eps.dtype).view(1, 1, -1, 1, 1)
        eps.index_add_(2, index, eps_w * weights)
    return eps


def denoise(
    unet: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: "SchedulerMixin",
    latents: torch.Tensor,
    text: TextSchedule,
    guidance: float,
    windows: WindowSchedule = all_frames,
    holds: Sequence[Hold] = (),
    step_kwargs: dict | None = None,
    progress: bool = True,
    start: int = 0,
) -> torch.Tensor:
    """z_T -> z_0 (Alg. 1): per timestep, fused guided noise over the windows, a sampler step (Eq. 4), then the holds.

    `unet(model_in, t, text) -> eps` takes `(b, c, f', h, w)` scaled latents; `latents` are the float32 sampler
    state at the noise level of `scheduler.timesteps[start]` (clean when `start == len(timesteps)`). `start` > 0
    skips the first timesteps (SDEdit: a partly noised image as the start); hold indices stay absolute. (Index-based
    samplers, Euler and DPM-Solver, find their place from the first timestep they are given: timesteps are distinct.)
    """
    steps = scheduler.timesteps
    if not 0 <= start <= len(steps):
        raise ValueError(f"start must be in [0, {len(steps)}] (the number of timesteps), got {start}")
    for hold in holds:  # held content enters at the starting noise level
        latents = hold(latents, scheduler, start)
    for i, t in enumerate(tqdm(steps[start:], desc="denoising", disable=not progress, leave=False), start):
        model_in = scheduler.scale_model_input(latents, t)
        eps = fused_noise(unet, model_in, t, windows(i, latents.shape[2]), text, guidance).float()
        latents = scheduler.step(eps, t, latents, **(step_kwargs or {})).prev_sample  # fp32 sampler state
        for hold in holds:
            latents = hold(latents, scheduler, i + 1)
    return latents
