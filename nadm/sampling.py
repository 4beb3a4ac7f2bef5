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
    window_batch: int = 1,
    done: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Guided noise prediction `(1, c, f, h, w)` for the whole clip, fused over windows with their weights.

    Up to `window_batch` consecutive windows of one length share a UNet call (batch `b * k`, b-major: all windows'
    negatives, then all prompts); `done(k)` is told after each call how many windows it ran.
    """
    b = 1 + (guidance > 1)
    if len(windows) == 1 and windows[0].frames == tuple(range(latents.shape[2])):  # one window: no fusion arithmetic
        eps = guided(unet(torch.cat([latents] * b), t, text(windows[0].frames)), guidance)
        if done is not None:
            done(1)
        return eps
    eps = torch.zeros_like(latents)
    for group in _window_groups(windows, window_batch):
        k, f = len(group), len(group[0].frames)
        index = torch.tensor([i for window in group for i in window.frames], device=latents.device)
        # (1, c, k*f, h, w) -> (k, c, f, h, w): the windows as a batch
        part = latents.index_select(2, index)[0].unflatten(1, (k, f)).transpose(0, 1)
        text_in = torch.stack([text(window.frames) for window in group], dim=1).flatten(0, 1)  # (b*k, ...) b-major
        eps_w = guided(unet(torch.cat([part] * b), t, text_in), guidance)  # (k, c, f, h, w)
        weights = torch.stack([window.weights for window in group]).to(eps.device, eps.dtype).view(k, 1, f, 1, 1)
        eps.index_add_(2, index, (eps_w * weights).transpose(0, 1).flatten(1, 2)[None])
        if done is not None:
            done(k)
    return eps


def _window_groups(windows: list[Window], size: int) -> list[list[Window]]:
    """Consecutive windows in groups of at most `size`, each group of one window length (one UNet batch)."""
    if size < 1:
        raise ValueError(f"window_batch must be >= 1, got {size}")
    groups: list[list[Window]] = []
    for window in windows:
        if groups and len(groups[-1]) < size and len(groups[-1][0].frames) == len(window.frames):
            groups[-1].append(window)
        else:
            groups.append([window])
    return groups


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
    window_batch: int = 1,
    start: int = 0,
) -> torch.Tensor:
    """z_T -> z_0 (Alg. 1): per timestep, fused guided noise over the windows, a sampler step (Eq. 4), then the holds.

    `unet(model_in, t, text) -> eps` takes `(b, c, f', h, w)` scaled latents; `latents` are the float32 sampler
    state at the noise level of `scheduler.timesteps[start]` (clean when `start == len(timesteps)`). `start` > 0
    skips the first timesteps (SDEdit: a partly noised image as the start); hold indices stay absolute. (Index-based
    samplers, Euler and DPM-Solver, find their place from the first timestep they are given: timesteps are distinct.)
    One progress bar counts steps x windows; up to `window_batch` windows share a UNet call.
    """
    steps = scheduler.timesteps
    if not 0 <= start <= len(steps):
        raise ValueError(f"start must be in [0, {len(steps)}] (the number of timesteps), got {start}")
    plan = {i: windows(i, latents.shape[2]) for i in range(start, len(steps))}
    unit = "step" if all(len(w) == 1 for w in plan.values()) else "window"
    for hold in holds:  # held content enters at the starting noise level
        latents = hold(latents, scheduler, start)
    with tqdm(total=sum(map(len, plan.values())), desc="denoising", unit=unit, disable=not progress, leave=False) as bar:
        for i, t in enumerate(steps[start:], start):
            model_in = scheduler.scale_model_input(latents, t)
            eps = fused_noise(unet, model_in, t, plan[i], text, guidance, window_batch, bar.update).float()
            latents = scheduler.step(eps, t, latents, **(step_kwargs or {})).prev_sample  # fp32 sampler state
            for hold in holds:
                latents = hold(latents, scheduler, i + 1)
    return latents
