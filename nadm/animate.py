"""Holding a painting in the one denoising loop (DESIGN.md section 6): `nadm animate` brings a still painting to life.

The pieces the loop (`nadm.sampling.denoise`) and the pipeline call, and nothing else:

- `PaintingHold` (a hold): frame 0's latent, and the still regions of every frame, are put back to the encoded
  painting re-noised to the sampler's current level with fixed noise after every step (RePaint's replacement), so
  the motion module always sees a clip that starts at the painting;
- `sdedit_start`: with `strength` < 1 the frames after the first start from the painting noised to the level of
  a later timestep (SDEdit) and the loop skips the earlier timesteps;
- `PaintingCondition.finish`, after decoding: colour anchoring of the later frames to frame 0 (mean and spread per
  channel in Lab, over the moving region), then the input pixels composited back: frame 0 is the fitted painting
  pixel for pixel and the still regions come from the input with a feathered edge, so no VAE round trip blurs them.

Layouts: latents `(1, c, f, h, w)`; frames `(f, H, W, 3) uint8`; masks `(H, W)` (True / 1 = still).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from nadm.errors import InvalidRequest, NADMError
from nadm.image import FITS, describe, fitted, output_size, read_mask, read_picture

if TYPE_CHECKING:
    import torch

# The prompt when none is given: what the painting is and the motion wanted. (The empty prompt would make
# guidance compare two unconditional predictions and do nothing.)
DEFAULT_PROMPT = "a Chinese landscape painting, mist drifting, water flowing"
FEATHER = 16  # pixels: width of the blend between the still regions (input pixels) and the moving ones
ANCHOR_PASSES = 3  # colour matching passes: later passes correct what clipping to the RGB gamut moved
ANCHOR_TOLERANCE = 0.25  # Lab units: stop matching once every channel's mean is this close to frame 0's


# ------------------------------------------------------------------------------------------------- request


@dataclass(frozen=True)
class Painting:
    """The painting fitted to the output, its still region, and what the sidecar records of the inputs."""

    pixels: np.ndarray  # (H, W, 3) uint8: frame 0 of the output, exactly
    still: np.ndarray  # (H, W) bool: held to the painting in every frame (mask's white parts, padding)
    fit: str
    image: dict[str, Any]  # source, sha256, width, height of the input image
    mask: dict[str, Any] | None  # the same for the still mask

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def prepare_painting(image, still=None, fit: str = "crop", height: int | None = None, width: int | None = None) -> Painting:
    """Read and check the image (and still mask) and fit them to the output size; needs no model (Sec. III-D usage)."""
    if fit not in FITS:
        raise NADMError(f"unknown fit {fit!r}: use one of {', '.join(FITS)}")
    picture = read_picture(image)
    mask, mask_info = read_mask(still, picture) if still is not None else (None, None)
    size = output_size(picture.size, height, width)
    for name, value in zip(("height", "width"), size):
        if not isinstance(value, (int, np.integer)) or value <= 0 or value % 8:
            raise NADMError(f"{name} must be a positive multiple of 8 (the VAE downsamples by 8), got {value}")
    pixels, still_region = fitted(picture, size, fit, mask)
    return Painting(pixels, still_region, fit, describe(picture), mask_info)


def check_animation(strength: float) -> None:
    """Refuse animation settings the sampler cannot honour (NADMError, a ValueError to Python callers)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise InvalidRequest(f"strength must be a number from 0 to 1, got {strength}")


def sdedit_start(steps: int, strength: float) -> int:
    """How many of `steps` timesteps SDEdit skips: `strength` 1 skips none (pure noise), 0 all (the painting itself)."""
    return steps - min(int(steps * strength), steps)


# -------------------------------------------------------------------------------------------------- holds


@dataclass
class PaintingHold:
    """Frame 0, and the still regions of every frame, held to the painting at the sampler's noise level (RePaint).

    After every step the held latents are `scheduler.add_noise(painting, noise, timesteps[index])` with the same
    `noise` throughout (clean at `index == len(timesteps)`), so the held content follows the sampler's own levels.
    """

    painting: "torch.Tensor"  # (1, c, 1, h, w) z_0 of the fitted painting
    noise: "torch.Tensor"  # (1, c, 1, h, w) fixed noise
    held: "torch.Tensor"  # (1, 1, f, h, w) bool: True = held

    def target(self, scheduler, index: int) -> "torch.Tensor":
        """The painting at the noise level of `scheduler.timesteps[index]` `(1, c, 1, h, w)`."""
        steps = scheduler.timesteps
        if index >= len(steps):
            return self.painting
        return scheduler.add_noise(self.painting, self.noise, steps[index : index + 1])

    def __call__(self, latents: "torch.Tensor", scheduler, index: int) -> "torch.Tensor":
        import torch

        return torch.where(self.held, self.target(scheduler, index).to(latents.dtype), latents)


def latent_mask(still: np.ndarray, latent_size: tuple[int, int]) -> np.ndarray:
    """`(H, W) bool` -> `(h, w) bool`: a latent cell is held when most of its pixels are still."""
    import cv2

    h, w = latent_size
    return cv2.resize(still.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.5


def feathered(still: np.ndarray, width: int = FEATHER) -> np.ndarray:
    """`(H, W) bool` -> alpha `(H, W) float32`: exactly 1 deeper than width/2 inside the still region, exactly 0 deeper
    than width/2 outside it, a linear ramp across the edge (Euclidean distance to the edge)."""
    import cv2

    if width <= 0 or still.all() or not still.any():
        return still.astype(np.float32)
    inside = cv2.distanceTransform(still.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform((~still).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    signed = np.where(still, inside - 0.5, 0.5 - outside)  # distance to the edge between still and moving pixels
    return np.clip(0.5 + signed / width, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------- colour


def lab(frames: np.ndarray) -> np.ndarray:
    """`(..., H, W, 3) uint8` RGB -> float32 CIE Lab (L 0..100, a and b about -128..127), through OpenCV."""
    import cv2

    rgb = frames.astype(np.float32) / 255.0
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2Lab) for f in rgb.reshape(-1, *rgb.shape[-3:])]).reshape(rgb.shape)


def _rgb(lab_frame: np.ndarray) -> np.ndarray:
    import cv2

    return np.clip(np.rint(cv2.cvtColor(lab_frame, cv2.COLOR_Lab2RGB) * 255.0), 0, 255).astype(np.uint8)


def colour_statistics(frame: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel Lab mean and standard deviation `(3,)`, `(3,)` of a frame's pixels in `region` `(H, W) bool`."""
    values = lab(frame)[region]  # (n, 3)
    return values.mean(axis=0), values.std(axis=0)


def anchor_colours(frame: np.ndarray, target: tuple[np.ndarray, np.ndarray], region: np.ndarray) -> np.ndarray:
    """Match one frame's per-channel Lab mean and spread over `region` to `target` (frame 0's): colour anchoring."""
    mean, spread = target
    out = frame
    for _ in range(ANCHOR_PASSES):  # later passes correct what clipping to the RGB gamut moved
        current = lab(out)
        values = current[region]
        if np.abs(values.mean(axis=0) - mean).max() <= ANCHOR_TOLERANCE:
            break
        scale = spread / np.maximum(values.std(axis=0), 1e-3)
        out = _rgb(((current - values.mean(axis=0)) * scale + mean).astype(np.float32))
    return out


# --------------------------------------------------------------------------------------------- condition


class PaintingCondition:
    """A painting as the condition of one clip: the start latents and hold the loop runs, the finishing after decoding."""

    def __init__(self, painting: Painting, strength: float = 1.0, color_anchor: bool = True, loop: bool = False,
                 feather: int = FEATHER):  # fmt: skip
        check_animation(strength)
        if not isinstance(feather, (int, np.integer)) or feather < 0:
            raise InvalidRequest(f"feather must be a whole number of pixels >= 0, got {feather}")
        self.painting, self.strength, self.color_anchor, self.feather = painting, float(strength), bool(color_anchor), int(feather)
        self.loop = bool(loop)
        # strength 0: nothing may depart from the painting, so all of it is still
        self.still = np.ones_like(painting.still) if strength == 0 else painting.still
        self.alpha = feathered(self.still, self.feather)  # (H, W) float32: 1 = input pixels
        self.start_index = 0

    def start(self, pipe, scheduler, noise: "torch.Tensor", latents: "torch.Tensor"):
        """(start latents, first timestep index, holds) for `denoise`, from the text-to-video start `latents`
        `(1, c, f, h, w)` and the raw `noise` they were drawn from."""
        import torch

        if tuple(noise.shape[-2:]) != tuple(s // pipe.vae_scale for s in self.painting.size):
            raise ValueError(f"latents {tuple(noise.shape)} do not match the painting's size {self.painting.size}")
        # 1. z_0 of the painting (1, c, 1, h, w) and its fixed noise: frame 0's own starting noise
        painting = pipe.encode_frames(self.painting.pixels[None])
        fixed = noise[:, :, :1]
        # 2. what is held: all of frame 0, the still cells of every frame
        f, (h, w) = noise.shape[2], noise.shape[-2:]
        held = torch.zeros((1, 1, f, h, w), dtype=torch.bool, device=noise.device)
        held[:, :, 0] = True
        held[:, :, 1:] = torch.from_numpy(latent_mask(self.still, (h, w))).to(noise.device)
        # 3. SDEdit: below strength 1, the later frames start from the painting noised to timesteps[start]
        steps = scheduler.timesteps
        self.start_index = start = sdedit_start(len(steps), self.strength)
        if start == len(steps):
            latents = painting.expand_as(latents).clone()
        elif start > 0:
            latents = scheduler.add_noise(painting.expand_as(noise), noise, steps[start : start + 1])
        return latents, start, [PaintingHold(painting, fixed, held)]

    def finish(self, frames: np.ndarray, new: Sequence[int]) -> np.ndarray:
        """Decoded or interpolated `(n, H, W, 3) uint8` -> frame 0 the painting exactly; the frames at `new` colour-anchored
        to it and its still regions composited in with a feathered edge (other frames are already finished)."""
        if frames.shape[1:] != self.painting.pixels.shape:
            raise ValueError(f"frames {frames.shape} do not match the painting {self.painting.pixels.shape}")
        reference = self.painting.pixels
        moving = self.alpha == 0
        anchor = self.color_anchor and moving.any()
        target = colour_statistics(reference, moving) if anchor else None
        alpha = self.alpha[:, :, None]
        out = frames.copy()
        out[0] = reference
        for i in new:
            frame = anchor_colours(out[i], target, moving) if anchor else out[i]
            # exact where alpha is 0 or 1: 1 * x + 0 * y == x in floating point
            out[i] = np.rint(alpha * reference + (1.0 - alpha) * frame).astype(np.uint8)
        return out

    def settings(self) -> dict[str, Any]:
        """What the sidecar records: the inputs' SHA-256, fit, strength, colour anchoring, loop, feather."""
        p = self.painting
        return {
            "animate": {
                "image": p.image,
                "still_mask": p.mask,
                "fit": p.fit,
                "strength": self.strength,
                "start_step": self.start_index,
                "color_anchor": self.color_anchor,
                "loop": self.loop,
                "feather": self.feather,
                "still_fraction": round(float(self.still.mean()), 4),
            }
        }

