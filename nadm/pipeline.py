"""Text -> landscape-painting video (Alg. 1 inference, Sec. IV-A2): classifier-free-guided DDIM denoising with the
NADM video UNet, VAE decoding in frame chunks, then SOFP interpolation from N to 2N-1 frames (Sec. III-E).

Layouts, stated once:
- latents `(batch, 4, frames, height/8, width/8)`; inside the guided UNet pass batch 2 = [negative, prompt];
- text embeddings `(batch, 77, dim)` from the CLIP text encoder;
- frames `(N, H, W, 3) uint8` RGB, `(2N-1, H, W, 3)` after interpolation.

    pipe = NADMPipeline.from_pretrained(motion="path/to/nadm-checkpoint")
    video = pipe("a misty ink landscape, clouds drifting over mountains", seed=1)
    video.frames, video.settings
"""

# torch, diffusers, tqdm and the nadm modules importing them (config/YAML, io) are imported inside functions:
# `nadm --help` imports this module (through `nadm generate`'s), and `nadm generate` checks its arguments first.

from __future__ import annotations

import math
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from nadm.base import DEFAULT_BASE, LoraSpec, load_base, quiet_loading
from nadm.devices import resolve_device, resolve_dtype
from nadm.errors import InvalidRequest, NADMError, RunFailed, note
from nadm.text import encode_text, token_counts

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, UNetMotionModel
    from diffusers.schedulers.scheduling_utils import SchedulerMixin
    from transformers import CLIPTextModel, CLIPTokenizer

    from nadm.checkpoint import MotionWeights
    from nadm.config import NADMConfig
    from nadm.animate import PaintingCondition
    from nadm.sampling import TextSchedule, WindowSchedule
    from nadm.motion_lora import MotionLora, MotionLoraSpec

DEFAULT_MOTION = "guoyww/animatediff-motion-adapter-v1-5-2"  # AnimateDiff's baseline, used when no motion is given
SCHEDULERS = ("ddim", "dpm++", "euler")
# The paper's noise schedule (Sec. IV-A1, as AnimateDiff): linear betas 0.00085-0.012 over 1000 steps, epsilon
# prediction, "leading" timesteps shifted by steps_offset=1. Built here, never read from a base folder.
PAPER_SCHEDULE: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="linear",
    prediction_type="epsilon",
    timestep_spacing="leading",
    steps_offset=1,
)
BASE_FPS = 8.0  # playback rate of the generated (non-interpolated) frames
DEFAULT_DECODE_CHUNK = 4  # frames per VAE decode call
SEED_LIMIT = 2**63
# torch.compile modes for the video UNet (torch's own names): "reduce-overhead" adds CUDA graphs on CUDA,
# "max-autotune" also tunes the matrix kernels (slow to compile).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass
class VideoResult:
    """One generated clip (Alg. 1 output) and how it was made."""

    frames: np.ndarray  # (N or 2N-1, H, W, 3) uint8: the video
    keyframes: np.ndarray  # (N, H, W, 3) uint8: the denoised frames before interpolation
    settings: dict[str, Any]  # everything needed to reproduce it (JSON-ready)
    timings: dict[str, float]  # seconds per stage: encode, denoise, decode[, interpolate]

    @property
    def fps(self) -> float:
        """The default playback rate: the clip lasts as long as N frames at BASE_FPS (see `default_fps`)."""
        return default_fps(len(self.keyframes), len(self.frames))


def default_fps(keyframes: int, frames: int, base: float = BASE_FPS) -> float:
    """fps that keeps the clip's duration `keyframes / base` seconds for `frames` output frames (31 of 16 -> 15.5)."""
    return base * frames / keyframes


def make_scheduler(name: str = "ddim"):
    """A sampler on the paper's noise schedule (Sec. IV-A2): DDIM (clip_sample off), DPM-Solver++ (2nd order) or Euler."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    if name == "ddim":  # set_alpha_to_one=True is DDIMScheduler's default, left unset by AnimateDiff's config
        return DDIMScheduler(**PAPER_SCHEDULE, clip_sample=False, set_alpha_to_one=True)
    if name == "dpm++":
        return DPMSolverMultistepScheduler(**PAPER_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2)
    if name == "euler":
        return EulerDiscreteScheduler(**PAPER_SCHEDULE)
    raise InvalidRequest(f"unknown scheduler {name!r}: use one of {', '.join(SCHEDULERS)}")


def check_request(
    num_frames: int,
    height: int,
    width: int,
    steps: int = 25,
    guidance: float = 8.0,
    seed: int | None = None,
    interpolate: bool = True,
    max_frames: int | None = None,
) -> None:
    """Refuse a request the sampler cannot honour, naming the bad value (InvalidRequest)."""
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or value <= 0 or value % 8:
            raise InvalidRequest(f"{name} must be a positive multiple of 8 (the VAE downsamples by 8), got {value}")
        if interpolate and value < 16:
            raise InvalidRequest(f"{name} must be at least 16 for interpolation (optical flow), got {value}")
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 2:
        raise InvalidRequest(f"frames must be at least 2, got {num_frames}")
    if max_frames is not None and num_frames > max_frames:
        raise InvalidRequest(
            f"frames must be at most {max_frames}, the motion module's position-encoding length, got {num_frames}"
        )
    if not isinstance(steps, (int, np.integer)) or not 1 <= steps <= PAPER_SCHEDULE["num_train_timesteps"]:
        raise InvalidRequest(f"steps must be an integer from 1 to {PAPER_SCHEDULE['num_train_timesteps']}, got {steps}")
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or guidance < 1:
        raise InvalidRequest(f"guidance must be a finite number >= 1 (1 turns classifier-free guidance off), got {guidance}")
    if seed is not None and (not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT):
        raise InvalidRequest(f"seed must be an integer in [0, 2**63), got {seed}")


def check_compile(mode: str | None, cpu_offload: bool = False) -> str | None:
    """None/'off' (eager) or one of COMPILE_MODES, refused with CPU offload (moving the UNet would recompile it)."""
    if mode in (None, "off"):
        return None
    if mode not in COMPILE_MODES:
        raise InvalidRequest(f"unknown compile mode {mode!r}: use off, {', '.join(COMPILE_MODES)}")
    if cpu_offload:
        raise InvalidRequest("compile and cpu_offload do not mix (moving the UNet between stages recompiles it): choose one")
    return mode


def check_options(
    scheduler: str, device=None, dtype=None, compile: str | None = None, cpu_offload: bool = False,
    decode_chunk: int = DEFAULT_DECODE_CHUNK,
) -> tuple[torch.device, torch.dtype, str | None]:
    """The pipeline's options that need nothing loaded, checked once for `NADMPipeline` and `from_pretrained`:
    (device, dtype, compile mode or None); InvalidRequest naming a bad one."""
    if scheduler not in SCHEDULERS:
        raise InvalidRequest(f"unknown scheduler {scheduler!r}: use one of {', '.join(SCHEDULERS)}")
    if isinstance(decode_chunk, bool) or not isinstance(decode_chunk, int) or decode_chunk < 1:
        raise InvalidRequest(f"decode_chunk must be a positive integer, got {decode_chunk}")
    compile = check_compile(compile, cpu_offload)
    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev), compile


def check_motion_scale(scale: float) -> float:
    """A finite motion scale >= 0: how much of the motion modules' output is added (1: as trained; 0: SD per frame)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise InvalidRequest(f"motion scale must be a finite number >= 0, got {scale}")
    return float(scale)


def _as_lora(item: LoraSpec | str | tuple) -> LoraSpec:
    """A LoraSpec from a LoraSpec, a 'FILE[:SCALE]' string or a (path, scale) pair."""
    if isinstance(item, LoraSpec):
        return item
    if isinstance(item, tuple):
        spec = LoraSpec.parse(str(item[0]))
        return LoraSpec(spec.path, float(item[1]))
    return LoraSpec.parse(str(item))


class _Clock:
    """Wall-clock stage timer; waits for the accelerator so a stage is charged its own work."""

    def __init__(self, device):
        self.device = device
        self.last = time.perf_counter()

    def lap(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed


class NADMPipeline:
    """NADM inference (Alg. 1): frozen SD 1.5 text encoder and VAE, the video UNet with motion modules, a sampler."""

    def __init__(
        self,
        video_unet: UNetMotionModel,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        motion_config: NADMConfig,
        scheduler: str = "ddim",
        device=None,
        dtype=None,
        sources: dict[str, Any] | None = None,
        cpu_offload: bool = False,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        decode_chunk: int = DEFAULT_DECODE_CHUNK,
        compile: str | None = None,
        progress: bool = True,
        trained_frames: int | None = None,
    ):
        from nadm.windows import DEFAULT_CONTEXT

        self.device, self.dtype, compile = check_options(scheduler, device, dtype, compile, cpu_offload, decode_chunk)
        self.video_unet, self.vae, self.text_encoder, self.tokenizer = video_unet, vae, text_encoder, tokenizer
        self.motion_config = motion_config
        self.scheduler = scheduler
        self.sources = dict(sources or {})
        self.cpu_offload, self.vae_slicing, self.vae_tiling = cpu_offload, vae_slicing, vae_tiling
        self.decode_chunk = 1 if vae_slicing else decode_chunk
        self.progress = progress
        for module in (video_unet, vae, text_encoder):
            module.requires_grad_(False).eval()
        self.to(self.device, self.dtype)
        if vae_tiling:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        self.max_frames = int(video_unet.config.motion_max_seq_length)  # position table: the longest context window
        self.trained_frames = trained_frames or DEFAULT_CONTEXT  # training clip: the default context (nadm.windows)
        self.latent_channels = int(video_unet.config.in_channels)
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.compile_mode = None
        if compile is not None:
            self.compile(compile)

    @classmethod
    def from_pretrained(
        cls,
        base: str | Path = DEFAULT_BASE,
        motion: str | Path | MotionWeights | None = None,
        loras: Iterable[LoraSpec | str | tuple] = (),
        device=None,
        dtype=None,
        scheduler: str = "ddim",
        base_config: str | Path | None = None,
        cpu_offload: bool = False,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        decode_chunk: int = DEFAULT_DECODE_CHUNK,
        compile: str | None = None,
        progress: bool = True,
        motion_loras: Iterable[MotionLora | MotionLoraSpec | str] = (),
    ) -> "NADMPipeline":
        """Load SD 1.5 (+ LoRAs) and motion weights and build the NADM video UNet (Sec. III-D1, IV-A2).

        motion: an NADM checkpoint folder, AnimateDiff weights (hub id, MotionAdapter folder, original file), a
        loaded `MotionWeights`, or None for AnimateDiff's v1-5-2 adapter as the baseline (said on stderr).
        dtype None/'auto': bfloat16 on CUDA. compile: None, or a torch.compile mode for the video UNet (COMPILE_MODES).
        motion_loras: motion LoRAs (`SRC[:SCALE]` strings, `MotionLoraSpec`s or read `MotionLora`s) fused into the
        motion modules (nadm.motion_lora).
        """
        from nadm.checkpoint import MotionWeights, load_motion_source
        from nadm.motion import build_video_unet
        from nadm.windows import trained_frames
        from nadm.motion_lora import fuse_motion_loras, read_motion_loras

        # 1. options that need nothing loaded
        dev, torch_dtype, _ = check_options(scheduler, device, dtype, compile, cpu_offload, decode_chunk)
        loras = tuple(_as_lora(item) for item in loras)
        # 2. motion weights (small; they fix the frame limit)
        if motion is None:
            note(f"no motion weights given: using AnimateDiff's {DEFAULT_MOTION} as the baseline motion module")
            motion = DEFAULT_MOTION
        weights = motion if isinstance(motion, MotionWeights) else None
        if weights is None:
            with quiet_loading():
                weights = load_motion_source(str(motion))
        motion_loras = read_motion_loras(motion_loras, weights)  # read and checked before the base loads
        # 3. the frozen base, LoRAs fused, in the sampling dtype
        base_model = load_base(str(base), config=base_config, loras=loras, dtype=torch_dtype)
        # 4. the video UNet: every image layer of the base UNet followed by a motion module
        try:
            video_unet = build_video_unet(base_model.unet, weights.config, weights.motion)
        except ValueError as e:
            raise NADMError(f"the motion weights {weights.source} do not fit the base {base}: {e}") from None
        base_model.unet = None  # the video UNet holds its own copy of these weights
        fuse_motion_loras(video_unet, weights.config, motion_loras)
        sources = {
            "base": base_model.describe(),
            "motion": {"source": weights.source, "format": weights.source_format, "kind": weights.config.kind},
            "motion_loras": [lora.describe() for lora in motion_loras],
        }
        return cls(
            video_unet, base_model.vae, base_model.text_encoder, base_model.tokenizer, weights.config,
            scheduler=scheduler, device=dev, dtype=torch_dtype, sources=sources, cpu_offload=cpu_offload,
            vae_slicing=vae_slicing, vae_tiling=vae_tiling, decode_chunk=decode_chunk, compile=compile, progress=progress,
            trained_frames=trained_frames(weights),
        )  # fmt: skip

    def to(self, device=None, dtype=None) -> "NADMPipeline":
        """Run on another device and/or dtype (same names as `from_pretrained`); with CPU offload weights stay on the CPU."""
        import torch

        self.device = resolve_device(device) if device is not None else self.device
        self.dtype = resolve_dtype(dtype, self.device) if dtype is not None else self.dtype
        home = torch.device("cpu") if self.cpu_offload else self.device  # where weights live between stages
        for module in (self.video_unet, self.vae, self.text_encoder):
            if module.dtype != self.dtype:
                module.to(dtype=self.dtype)
            module.to(home)
        return self

    def compile(self, mode: str = "default") -> "NADMPipeline":
        """torch.compile the video UNet in place (one of COMPILE_MODES); the first clip at each size pays for compiling.

        The UNet is the whole cost of sampling (25 guided passes per clip); the VAE decoder and the text encoder run
        once per clip and stay eager.
        """
        mode = check_compile(mode, self.cpu_offload)
        if mode is None:
            raise InvalidRequest("compile needs a mode: " + ", ".join(COMPILE_MODES))
        self.video_unet.compile(mode=mode)
        self.compile_mode = mode
        return self

    # ------------------------------------------------------------------------------------------- stages

    @contextmanager
    def _on_device(self, module):
        """With CPU offload, hold `module` on the accelerator only while its stage runs."""
        if not self.cpu_offload:
            yield
            return
        import torch

        module.to(self.device)
        try:
            yield
        finally:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def encode_prompt(self, texts: list[str], names: list[str] | None = None) -> torch.Tensor:
        """CLIP text embeddings `(len(texts), 77, dim)`, tau_theta(y) of Alg. 1 (nadm.text); a text longer than 77
        tokens is cut, and a note names it by `names` (e.g. "negative prompt"; default "prompt")."""
        limit = self.tokenizer.model_max_length
        for name, text, length in zip(names or ["prompt"] * len(texts), texts, token_counts(texts, self.tokenizer)):
            if length > limit:
                note(f"{name} cut to the text encoder's {limit} tokens (it has {length}): {text[:60]!r}...")
        with self._on_device(self.text_encoder):
            return encode_text(texts, self.tokenizer, self.text_encoder)

    def decode_latents(self, latents, progress: bool = False) -> np.ndarray:
        """z_0 `(1, 4, f, h, w)` -> frames `(f, H, W, 3) uint8`, decoding `decode_chunk` frames per VAE call."""
        import torch
        from tqdm.auto import tqdm

        if latents.ndim != 5 or latents.shape[0] != 1:
            raise ValueError(f"latents must be (1, channels, frames, height, width), got {tuple(latents.shape)}")
        z = latents[0].permute(1, 0, 2, 3) / self.vae.config.scaling_factor  # (f, 4, h, w): frames as the VAE batch
        chunks = []
        with self._on_device(self.vae):
            for i in tqdm(range(0, len(z), self.decode_chunk), desc="decoding", disable=not progress, leave=False):
                images = self.vae.decode(z[i : i + self.decode_chunk].to(self.device, self.dtype)).sample  # (k, 3, H, W)
                images = ((images.float() + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)
                chunks.append(images.permute(0, 2, 3, 1).cpu().numpy())  # (k, H, W, 3)
        return np.concatenate(chunks)

    def encode_frames(self, frames: np.ndarray):
        """frames `(n, H, W, 3) uint8` -> z_0 `(1, 4, n, h, w)` float32: the VAE posterior's mean, scaled (deterministic)."""
        import torch

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (n, height, width, 3) uint8, got {frames.shape} {frames.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (n, 3, H, W)
        with self._on_device(self.vae):
            x = x.to(self.device, self.dtype) / 127.5 - 1
            z = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor  # (n, 4, h, w)
        return z.float().permute(1, 0, 2, 3).unsqueeze(0)  # (1, 4, n, h, w): frames on axis 2

    def animate(
        self,
        image,
        prompt: str | None = None,
        still=None,
        fit: str = "crop",
        strength: float = 1.0,
        color_anchor: bool = True,
        loop: bool = False,
        height: int | None = None,
        width: int | None = None,
        feather: int | None = None,
        **kwargs,
    ) -> VideoResult:
        """Bring a still painting to life: frame 0 is `image` fitted to the output exactly (nadm.animate).

        image/still: a path, PIL image or uint8 array (still: white = held still in every frame). Size: the image's
        aspect ratio with the long side 512 unless given; fit 'crop', 'pad' or 'stretch'. strength < 1: frames stay
        nearer the painting (SDEdit). feather: the still regions' blend width in pixels (None: 16). Without a prompt,
        `nadm.animate.DEFAULT_PROMPT`. Other arguments as `__call__`.
        """
        from nadm.animate import DEFAULT_PROMPT, FEATHER, PaintingCondition, prepare_painting

        painting = prepare_painting(image, still, fit, height, width)
        condition = PaintingCondition(painting, strength, color_anchor, loop, FEATHER if feather is None else feather)
        h, w = painting.size
        return self(DEFAULT_PROMPT if prompt is None else prompt, height=h, width=w, loop=loop, condition=condition, **kwargs)

    def __call__(
        self,
        prompt: str | dict[int, str],
        negative_prompt: str | None = None,
        num_frames: int = 16,
        height: int = 512,
        width: int = 512,
        steps: int = 25,
        guidance: float = 8.0,
        seed: int | None = None,
        interpolate: bool = True,
        flow: str = "dis",
        eta: float = 0.0,
        progress: bool | None = None,
        context: int | None = None,
        overlap: int | None = None,
        loop: bool = False,
        window_schedule: str | None = None,
        window_batch: int | None = None,
        travel_interp: str = "linear",
        motion_scale: float = 1.0,
        condition: PaintingCondition | None = None,
    ) -> VideoResult:
        """Generate one clip (Alg. 1 inference, Sec. IV-A2); paper defaults: DDIM, 25 steps, guidance 8, SOFP on.

        Long clips, loops and prompt travel (nadm.windows, nadm.travel): N > `context` frames (default: the motion
        module's training clip) are denoised in windows overlapping by `overlap` (default C/4), `window_batch` per
        UNet call; `loop` wraps the windows around and interpolates the pair (last, first) too; a `prompt` dict
        `{frame: prompt}` travels between its key prompts (`travel_interp` 'linear' or 'slerp'). motion_scale scales
        the motion modules' output (0: SD's frames without temporal mixing). condition: None for text-to-video, or
        the pieces `animate` builds (a `nadm.animate.PaintingCondition`).
        """
        import torch

        from nadm.travel import check_travel, describe
        from nadm.windows import plan_windows

        # 1. check the request (the window plan bounds the frames, not the position table); draw a seed when none is
        #    given (it is recorded either way)
        self._check_call(prompt, num_frames, height, width, steps, guidance, seed, interpolate, eta)
        plan = plan_windows(num_frames, self.trained_frames, self.max_frames, context, overlap, loop, window_schedule,
                            window_batch)  # fmt: skip
        travel = check_travel(prompt, num_frames, travel_interp) if isinstance(prompt, dict) else None
        request = dict(prompt=prompt if travel is None else describe(travel), negative_prompt=negative_prompt or "",
                       seed=seed, seed_drawn=seed is None, steps=steps, guidance=float(guidance), eta=float(eta),
                       travel=None if travel is None else {"interpolation": travel_interp, "keys": len(travel)},
                       loop=bool(loop), windows=plan.describe(), motion_scale=check_motion_scale(motion_scale))  # fmt: skip
        request["seed"] = secrets.randbelow(2**32) if seed is None else int(seed)
        show = self.progress if progress is None else progress
        clock, timings = _Clock(self.device), {}
        with torch.inference_mode():
            # 2. text embeddings per frame (nadm.sampling's text schedule): [negative, prompt] with guidance
            text = self._text(prompt, travel, negative_prompt, guidance, num_frames, loop, travel_interp)
            timings["encode"] = clock.lap()
            # 3-4. z_T -> z_0 (the one denoising loop)
            shape = (1, self.latent_channels, num_frames, height // self.vae_scale, width // self.vae_scale)
            latents, scheduler = self.denoise(text, shape, steps, guidance, eta, request["seed"], show, plan, condition,
                                              request["motion_scale"])  # fmt: skip
            timings["denoise"] = clock.lap()
            # 5. decode z_0 with the VAE in frame chunks -> (N, H, W, 3) uint8
            keyframes = self.decode_latents(latents, show)
            if condition is not None:  # colour anchoring; the painting's pixels composited back exactly
                keyframes = condition.finish(keyframes, range(1, len(keyframes)))
            timings["decode"] = clock.lap()

        # 6. SOFP interpolation N -> 2N-1 (2N for a loop; Sec. III-E), on the decoded RGB frames; T within C for long clips
        frames, interpolation = keyframes, None
        if interpolate:
            frames, interpolation = self._interpolate(keyframes, flow, loop, plan, condition, show)
            timings["interpolate"] = clock.lap()

        # 7. everything needed to reproduce the clip
        settings = self._settings(request, scheduler, (height, width), len(keyframes), len(frames), interpolation)
        if condition is not None:  # the painting's inputs (SHA-256), fit, strength, ...
            settings.update(condition.settings())
        return VideoResult(frames, keyframes, settings, timings)

    def _text(self, prompt, travel, negative_prompt, guidance, num_frames, loop, travel_interp) -> TextSchedule:
        """Step 2 of `__call__`: the text schedule, embeddings (b, 77, dim) per frame, b = 2 [negative, prompt] with
        guidance, else 1 [prompt]; a travelling prompt encodes each key prompt once (nadm.travel)."""
        from nadm.sampling import OnePrompt
        from nadm.travel import travel_schedule

        if travel is not None:
            return travel_schedule(self.encode_prompt, travel, negative_prompt, guidance > 1, num_frames, loop, travel_interp)
        if guidance > 1:  # classifier-free guidance needs the unconditional branch
            return OnePrompt(self.encode_prompt([negative_prompt or "", prompt], ["negative prompt", "prompt"]))
        return OnePrompt(self.encode_prompt([prompt]))

    def _interpolate(self, keyframes, flow, loop, plan, condition, progress) -> tuple[np.ndarray, dict]:
        """Step 6 of `__call__`: SOFP on the decoded frames (Sec. III-E; the pair (last, first) too for a loop, T within
        one context window for long clips), a painting's pixels composited into the new frames; (frames, settings)."""
        from nadm.interpolate import SOFP_DEFAULTS
        from nadm.loops import interpolate_keyframes

        window = plan.context if len(keyframes) > plan.context else None
        frames = interpolate_keyframes(keyframes, flow, loop, window, progress)
        if condition is not None:  # the new in-between frames too
            frames = condition.finish(frames, range(1, len(frames), 2))
        interpolation = {"method": "sofp", "flow": flow if isinstance(flow, str) else repr(flow), **SOFP_DEFAULTS}
        return frames, {**interpolation, "window": window, "loop": bool(loop)}

    def _check_call(self, prompt, num_frames, height, width, steps, guidance, seed, interpolate, eta) -> None:
        """Step 1 of `__call__`: InvalidRequest naming the first argument the sampler cannot honour."""
        check_request(num_frames, height, width, steps, guidance, seed, interpolate)  # frame limit: the windows'
        if not isinstance(prompt, dict) and (not isinstance(prompt, str) or not prompt.strip()):
            raise InvalidRequest("the prompt must be a non-empty string (or a dict {frame: prompt} for prompt travel)")
        if not 0.0 <= eta <= 1.0:
            raise InvalidRequest(f"eta must be in [0, 1] (0: deterministic DDIM), got {eta}")
        if eta != 0.0 and self.scheduler != "ddim":
            raise InvalidRequest(f"eta applies to DDIM only, not to {self.scheduler}")

    def denoise(
        self, text: TextSchedule, shape: tuple[int, ...], steps: int, guidance: float, eta: float, seed: int,
        progress: bool = False, windows: WindowSchedule | None = None, condition: PaintingCondition | None = None,
        motion_scale: float = 1.0,
    ) -> tuple[torch.Tensor, SchedulerMixin]:
        """z_T -> z_0 (Alg. 1, Eq. 4): per timestep guided UNet passes over [negative, prompt] (in windows for long
        clips), a sampler step, the condition's holds; nadm.sampling's one loop.

        text: per-frame embeddings (nadm.sampling), b = 2 with guidance; shape `(1, 4, f, h/8, w/8)`. Returns float32
        z_0 and the sampler. RunFailed when the latents end NaN/inf. windows None: one window of all frames.
        """
        import torch

        from nadm.motion import predict_noise, scaled_motion
        from nadm.sampling import all_frames, denoise

        # 3. z_T: noise from a CPU generator (the same seed gives the same noise on any device)
        scheduler = make_scheduler(self.scheduler)
        scheduler.set_timesteps(steps, device=self.device)
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        latents, start, holds = noise * scheduler.init_noise_sigma, 0, ()
        if condition is not None:  # a painting: its start latents and hold (nadm.animate)
            latents, start, holds = condition.start(self, scheduler, noise, latents)
        step_kwargs = {"eta": eta, "generator": generator} if self.scheduler == "ddim" else {"generator": generator}

        # 4. the one denoising loop (nadm.sampling): guided UNet passes, fused over windows, sampler steps (fp32)
        def unet(model_in, t, text_in):  # fp32 sampler state in, fp32 noise out; the UNet runs in self.dtype
            return predict_noise(self.video_unet, model_in.to(self.dtype), t, text_in).float()

        with self._on_device(self.video_unet), scaled_motion(self.video_unet, motion_scale):
            latents = denoise(unet, scheduler, latents, text, guidance, windows or all_frames, holds, step_kwargs,
                              progress, getattr(windows, "window_batch", 1), start)  # fmt: skip
        if not torch.isfinite(latents).all():
            dtype = str(self.dtype).removeprefix("torch.")
            hint = "try dtype float32 or bfloat16" if dtype == "float16" else "are the base or motion weights broken?"
            raise RunFailed(f"denoising produced NaN/inf latents in {dtype}: {hint}")
        return latents, scheduler

    def _settings(self, request: dict, scheduler, size: tuple[int, int], keyframes: int, frames: int, interpolation) -> dict:
        """Step 7 of `__call__`: everything needed to make the clip again (JSON-ready; the sidecar's content)."""
        from nadm.config import to_dict
        from nadm.io import environment_versions

        sched = scheduler.config
        return {
            **request,
            "scheduler": self.scheduler,
            "scheduler_config": {"class": type(scheduler).__name__, **{k: v for k, v in sched.items() if not k.startswith("_")}},
            "size": {"height": size[0], "width": size[1]},
            "keyframes": int(keyframes),
            "frames_out": int(frames),
            "interpolation": interpolation,
            **self.sources,
            "motion_config": to_dict(self.motion_config),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "compile": self.compile_mode,
            "memory": {
                "cpu_offload": self.cpu_offload,
                "vae_slicing": self.vae_slicing,
                "vae_tiling": self.vae_tiling,
                "decode_chunk": self.decode_chunk,
            },
            "environment": environment_versions(),
        }


def save_result(result: VideoResult, path: str | Path, fps: float | None = None, overwrite: bool = False) -> Path:
    """Write a clip with nadm.io (format by suffix, atomic) and its settings as the JSON sidecar `<path>.json`."""
    from nadm.io import write_video

    metadata = {k: v for k, v in result.settings.items() if k != "environment"}  # the writer adds the versions
    return write_video(result.frames, path, fps or result.fps, metadata=metadata, overwrite=overwrite)
