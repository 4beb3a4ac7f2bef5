"""Evaluation metrics of the paper's Sec. IV-C2 and Tables I-IV, plus two weight-free temporal metrics.

Layouts, stated once:
- a video is `(N, H, W, 3) uint8` RGB (what `nadm.io.read_video` returns);
- a clip is the `(16, H, W, 3) uint8` cut from a video by `cut_clip` (FVD16, KVD16 and IS);
- features are `(n, d)` arrays, one row per clip; class probabilities are `(n, classes)` rows summing to 1.

Networks, each called the way the reference code (StyleGAN-V's metrics) calls it:
- I3D (Kinetics-400, the TorchScript `i3d_torchscript.pt`): uint8 `(b, 3, 16, H, W)` with
  `rescale=True, resize=True, return_features=True`, i.e. the network maps [0, 255] to [-1, 1] and resizes
  to 224x224 itself; it returns the 400-d pre-softmax features used for FVD and KVD.
- C3D (UCF-101, the TorchScript `c3d_ucf101.pt`, a port of TGAN-v2's chainer model): uint8
  `(b, 3, 16, 128, 128)`, no options; it subtracts its mean clip, takes the centre 112x112 and returns the
  101 class probabilities used for IS. We resize to 128x128 with bicubic interpolation as TGAN-v2 did.
- CLIP (`openai/clip-vit-large-patch14` by default) through transformers: the model's own image processor
  and tokenizer, L2-normalised projected embeddings.
Frames are centre-cropped to a square before I3D and C3D (the reference datasets are square).
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.linalg
from scipy.special import xlogy
from tqdm.auto import tqdm

from nadm.errors import NADMError

CLIP_FRAMES = 16  # FVD16 / KVD16 / IS: 16-frame clips (Sec. IV-C2)
C3D_SIZE = 128  # C3D input side; the network crops the centre 112x112 (TGAN-v2 protocol)
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------------- distance math


def _check_feature_sets(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets as float64 `(n, d)` arrays with equal d, n >= 2 and finite values; ValueError otherwise."""
    out = []
    for name, x in (("a", a), ("b", b)):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"feature set {name} must be a 2-D (n, d) array, got shape {x.shape}")
        if x.shape[0] < 2:
            raise ValueError(f"feature set {name} has {x.shape[0]} row(s); at least 2 are needed for a covariance")
        if not np.isfinite(x).all():
            raise ValueError(f"feature set {name} contains NaN or infinite values")
        out.append(x)
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(f"feature dimensions differ: a has d={out[0].shape[1]}, b has d={out[1].shape[1]}")
    return out[0], out[1]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to `(n, d)` feature sets: FVD on I3D features (Sec. IV-C2)."""
    a, b = _check_feature_sets(a, b)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # a singular product: the usual fix is a tiny ridge on both covariances
        eps = 1e-6
        warnings.warn(f"sqrtm(cov_a @ cov_b) was not finite; adding {eps} to the covariance diagonals", stacklevel=2)
        ridge = eps * np.eye(cov_a.shape[0])
        covmean = scipy.linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


def kernel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel (x.y/d + 1)^3 over the full sets: KVD on I3D features (Sec. IV-C2)."""
    a, b = _check_feature_sets(a, b)
    m, n, d = a.shape[0], b.shape[0], a.shape[1]
    k_aa = (a @ a.T / d + 1.0) ** 3
    k_bb = (b @ b.T / d + 1.0) ** 3
    k_ab = (a @ b.T / d + 1.0) ** 3
    term_aa = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    term_bb = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(term_aa + term_bb - 2.0 * k_ab.mean())


def inception_score(probs: np.ndarray, splits: int = 1) -> float:
    """exp(E_x KL(p(y|x) || p(y))) over `(n, classes)` probabilities, averaged over splits: IS (Sec. IV-C2)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"probs must be an (n, classes) array with n >= 1 and classes >= 2, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probs must be non-negative rows summing to 1 (class probabilities, not logits)")
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"splits must be between 1 and the number of samples ({p.shape[0]}), got {splits}")
    scores = []
    for part in np.array_split(p, splits):  # consecutive, near-equal parts
        marginal = part.mean(axis=0, keepdims=True)
        kl = (xlogy(part, part) - xlogy(part, marginal)).sum(axis=1)  # 0 log 0 = 0
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------- clips and frames


def cut_clip(frames: np.ndarray, num_frames: int = CLIP_FRAMES, stride: int = 1) -> np.ndarray:
    """The first `num_frames` frames at `stride` of an `(N, H, W, 3)` video: the FVD16/IS clip (Sec. IV-C2)."""
    _check_video(frames)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    need = (num_frames - 1) * stride + 1
    if frames.shape[0] < need:
        raise ValueError(
            f"a {num_frames}-frame clip at stride {stride} needs {need} frames, the video has {frames.shape[0]}"
        )
    return frames[: need : stride]


def center_square(frames: np.ndarray) -> np.ndarray:
    """The largest centred square of `(..., H, W, C)` frames."""
    h, w = frames.shape[-3], frames.shape[-2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return frames[..., top : top + side, left : left + side, :]


def _check_video(frames: np.ndarray, min_frames: int = 1) -> None:
    """Raise ValueError unless frames is an `(N, H, W, 3) uint8` array with N >= min_frames."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        is_array = isinstance(frames, np.ndarray)
        desc = f"{frames.dtype} array of shape {frames.shape}" if is_array else type(frames).__name__
        raise ValueError(f"a video must be an (N, H, W, 3) uint8 array, got {desc}")
    if frames.shape[0] < min_frames:
        raise ValueError(f"this metric needs at least {min_frames} frames, the video has {frames.shape[0]}")


def _stack_clips(clips: Sequence[np.ndarray]) -> np.ndarray:
    """A list of equal-shaped `(T, H, W, 3)` clips -> `(b, T, H, W, 3)`; ValueError on mixed shapes."""
    if not clips:
        raise ValueError("no clips given")
    for i, c in enumerate(clips):
        _check_video(c)
        if c.shape != clips[0].shape:
            raise ValueError(f"clip {i} has shape {c.shape} but clip 0 has {clips[0].shape}; batch equal shapes")
    return np.stack(clips)


# ------------------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightFile:
    """A pretrained network file: its name on disk, where it is published, and what it is."""

    name: str
    url: str
    what: str


I3D_WEIGHTS = WeightFile(
    "i3d_torchscript.pt",
    "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
    "I3D Kinetics-400 TorchScript (StyleGAN-V), for FVD16/KVD16",
)
C3D_WEIGHTS = WeightFile(
    "c3d_ucf101.pt",
    "https://www.dropbox.com/s/jxpu7avzdc9n97q/c3d_ucf101.pt?dl=1",
    "C3D UCF-101 TorchScript (StyleGAN-V), for IS",
)


def cache_dir() -> Path:
    """Where downloaded metric networks live: $NADM_CACHE/metrics, else $XDG_CACHE_HOME or ~/.cache /nadm/metrics."""
    if os.environ.get("NADM_CACHE"):
        return Path(os.environ["NADM_CACHE"]).expanduser() / "metrics"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "nadm" / "metrics"


def _offline() -> bool:
    """True when the environment forbids downloads (NADM_OFFLINE or HF_HUB_OFFLINE set to a true value)."""
    flags = (os.environ.get(k, "").strip().lower() for k in ("NADM_OFFLINE", "HF_HUB_OFFLINE"))
    return any(flag in ("1", "true", "yes", "on") for flag in flags)


def _download(url: str, target: Path) -> None:
    """Fetch url into target atomically (temporary file in the same folder, then rename), with a progress bar."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {target.name}", file=sys.stderr)
            with bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def resolve_weights(weights: WeightFile, weights_dir: str | os.PathLike | None = None) -> Path:
    """The local path of a metric network: weights_dir, then the cache, else a download (NADMError offline)."""
    places = ([Path(weights_dir).expanduser()] if weights_dir else []) + [cache_dir()]
    for place in places:
        if (place / weights.name).is_file():
            return place / weights.name
    where = " or ".join(str(p) for p in places)
    advice = f"download it from {weights.url} into {places[0]} (or pass --weights-dir)"
    if _offline():
        raise NADMError(f"{weights.name} ({weights.what}) is not in {where} and downloads are off: {advice}")
    target = places[0] / weights.name
    try:
        _download(weights.url, target)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise NADMError(
            f"{weights.name} ({weights.what}) is not in {where} and could not be downloaded ({e}): {advice}"
        ) from e
    return target


def _torch_device(device: str | None) -> Any:
    """A torch.device from 'auto'/None (CUDA when there is one), 'cpu', 'cuda', 'cuda:1', ...; NADMError if bad."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise NADMError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NADMError(f"device '{device}' asked for, but CUDA is not available here")
    return dev


def load_torchscript(
    weights: WeightFile, weights_dir: str | os.PathLike | None = None, device: str | None = None
) -> Any:
    """Load a metric network (`torch.jit.load`) in eval mode on the device; NADMError if missing or unreadable."""
    import torch

    path = resolve_weights(weights, weights_dir)
    dev = _torch_device(device)
    try:
        with warnings.catch_warnings():  # the published networks are TorchScript; torch 2.13 deprecates jit.load
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=DeprecationWarning)
            return torch.jit.load(str(path), map_location=dev).eval()
    except (RuntimeError, ValueError, OSError) as e:
        raise NADMError(
            f"cannot load {path} as TorchScript ({weights.what}): {e}; delete it and fetch {weights.url} again"
        ) from e


# ------------------------------------------------------------------------------------ video networks


class I3DFeatures:
    """400-d pre-softmax I3D features of 16-frame clips, the inputs of FVD16 and KVD16 (Sec. IV-C2)."""

    def __init__(self, weights_dir: str | os.PathLike | None = None, device: str | None = None) -> None:
        self.device = _torch_device(device)
        self.net = load_torchscript(I3D_WEIGHTS, weights_dir, str(self.device))

    def __call__(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Equal-shaped `(16, H, W, 3)` uint8 clips -> `(b, 400)` float64 features."""
        import torch

        batch = center_square(_stack_clips(clips))  # (b, T, S, S, 3)
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 4, 1, 2, 3).to(self.device)  # (b, 3, T, S, S)
        with torch.inference_mode():
            feats = self.net(x, rescale=True, resize=True, return_features=True)
        return _rows(feats, len(clips), "I3D features")


class C3DProbabilities:
    """UCF-101 class probabilities of 16-frame clips from C3D, the input of IS (Sec. IV-C2)."""

    def __init__(self, weights_dir: str | os.PathLike | None = None, device: str | None = None) -> None:
        self.device = _torch_device(device)
        self.net = load_torchscript(C3D_WEIGHTS, weights_dir, str(self.device))

    def __call__(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """`(16, H, W, 3)` uint8 clips (any sizes) -> `(b, 101)` float64 probabilities."""
        import torch

        resized = [
            np.stack([cv2.resize(f, (C3D_SIZE, C3D_SIZE), interpolation=cv2.INTER_CUBIC) for f in center_square(c)])
            for c in clips
        ]
        batch = _stack_clips(resized)  # (b, T, 128, 128, 3)
        x = torch.from_numpy(batch).permute(0, 4, 1, 2, 3).to(self.device)  # (b, 3, T, 128, 128)
        with torch.inference_mode():
            probs = self.net(x)
        return _rows(probs, len(clips), "C3D probabilities")


def _rows(out: Any, n: int, what: str) -> np.ndarray:
    """A network output as an `(n, d)` float64 array; ValueError if its shape is not that."""
    arr = out.detach().float().cpu().numpy().astype(np.float64)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{what}: expected an ({n}, d) output, the network returned shape {arr.shape}")
    return arr


# ---------------------------------------------------------------------------------------------- CLIP


class ClipScorer:
    """CLIP image and text embeddings (L2-normalised) for CLIP-text and CLIP-temp (Sec. IV-C2)."""

    def __init__(self, model: str = DEFAULT_CLIP_MODEL, device: str | None = None, batch_size: int = 32) -> None:
        import torch
        from transformers import CLIPModel, CLIPTokenizer

        try:  # transformers >= 5 splits the PIL image processor off; it needs no torchvision
            from transformers import CLIPImageProcessorPil as ImageProcessor
        except ImportError:  # pragma: no cover - older transformers
            from transformers import CLIPImageProcessor as ImageProcessor

        self.device = _torch_device(device)
        self.batch_size = batch_size
        try:
            self.model = CLIPModel.from_pretrained(model).eval().to(self.device)
            self.tokenizer = CLIPTokenizer.from_pretrained(model)
            self.processor = ImageProcessor.from_pretrained(model)
        except (OSError, ValueError) as e:
            raise NADMError(
                f"cannot load the CLIP model '{model}' ({type(e).__name__}: {str(e).splitlines()[0]}); "
                "pass --clip-model with a hub id or a local folder holding the model, tokenizer and "
                "preprocessor_config.json"
            ) from e
        self._torch = torch

    def images(self, frames: np.ndarray) -> np.ndarray:
        """`(N, H, W, 3)` uint8 frames -> `(N, d)` unit image embeddings."""
        _check_video(frames)
        torch = self._torch
        out = []
        for start in range(0, frames.shape[0], self.batch_size):
            chunk = list(frames[start : start + self.batch_size])
            pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode():
                emb = _embedding(self.model.get_image_features(pixel_values=pixels))
            out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def text(self, prompt: str) -> np.ndarray:
        """A prompt (truncated to the tokenizer's 77 tokens) -> `(d,)` unit text embedding."""
        torch = self._torch
        tokens = self.tokenizer([prompt], padding=True, truncation=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            emb = _embedding(out)
        return torch.nn.functional.normalize(emb.float(), dim=-1)[0].cpu().numpy().astype(np.float64)


def _embedding(out: Any) -> Any:
    """The projected embedding tensor from get_*_features (a tensor, or an output whose pooler_output it is)."""
    return out if hasattr(out, "dim") else out.pooler_output


def clip_text_score(image_emb: np.ndarray, text_emb: np.ndarray) -> float:
    """100 x mean cosine between each frame's `(N, d)` embedding and the prompt's `(d,)`: CLIP-text (Sec. IV-C2)."""
    image_emb, text_emb = np.asarray(image_emb, np.float64), np.asarray(text_emb, np.float64)
    if image_emb.ndim != 2 or text_emb.shape != (image_emb.shape[1],):
        raise ValueError(f"need (N, d) image and (d,) text embeddings, got {image_emb.shape} and {text_emb.shape}")
    cos = _unit(image_emb) @ _unit(text_emb[None])[0]
    return float(100.0 * cos.mean())


def clip_temporal_score(image_emb: np.ndarray) -> float:
    """Mean cosine between consecutive frames' `(N, d)` CLIP embeddings, N >= 2: CLIP-temp (Sec. IV-C2)."""
    e = np.asarray(image_emb, np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"CLIP-temp needs (N, d) embeddings of N >= 2 frames, got shape {e.shape}")
    e = _unit(e)
    return float(np.sum(e[:-1] * e[1:], axis=1).mean())


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------- weight-free temporal metrics


def flicker_score(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames in grey levels (0-255); complements CLIP-temp (Sec. IV-C2)."""
    _check_video(frames, min_frames=2)
    diffs = [
        np.abs(frames[t + 1].astype(np.float32) - frames[t].astype(np.float32)).mean() for t in range(len(frames) - 1)
    ]
    return float(np.mean(diffs))


def _grid(h: int, w: int) -> np.ndarray:
    """(H, W, 2) float32 pixel coordinates (x, y)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xs, ys], axis=-1)


def _valid_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """(H, W) bool: the forward flow lands inside the frame and the backward flow there brings it back.

    Forward-backward consistency as in Ruder et al. 2016 / Lai et al. 2018:
    |f + b(x + f)|^2 <= 0.01 (|f|^2 + |b(x + f)|^2) + 0.5.
    """
    h, w = forward.shape[:2]
    target = _grid(h, w) + forward
    inside = (target[..., 0] >= 0) & (target[..., 0] <= w - 1) & (target[..., 1] >= 0) & (target[..., 1] <= h - 1)
    back = cv2.remap(backward, target, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = np.sum((forward + back) ** 2, axis=-1)
    tol = 0.01 * (np.sum(forward**2, axis=-1) + np.sum(back**2, axis=-1)) + 0.5
    return inside & (err <= tol)


def warping_error(frames: np.ndarray, flow: FlowFn) -> float:
    """Flow warping error of Lai et al. 2018, occlusions masked; weight-free complement to CLIP-temp (Sec. IV-C2).

    For each pair (t, t+1): F = flow(I_t, I_{t+1}); W = I_{t+1} sampled at x + F(x) (bilinear), i.e. frame t+1
    warped back onto frame t; the error is sum_x M(x) |I_t(x) - W(x)|^2 / sum_x M(x), with RGB in [0, 1],
    the squared difference summed over the three channels, and M the non-occluded in-frame pixels
    (`_valid_mask`, using flow(I_{t+1}, I_t)). Pairs with no valid pixel are skipped; ValueError if all are.
    """
    _check_video(frames, min_frames=2)
    h, w = frames.shape[1:3]
    errors = []
    for t in range(len(frames) - 1):
        a, b = frames[t], frames[t + 1]
        forward = np.asarray(flow(a, b), np.float32)
        backward = np.asarray(flow(b, a), np.float32)
        if forward.shape != (h, w, 2) or backward.shape != (h, w, 2):
            raise ValueError(f"the flow backend returned shape {forward.shape}, expected {(h, w, 2)}")
        mask = _valid_mask(forward, backward)
        if not mask.any():
            continue
        warped = cv2.remap(b, _grid(h, w) + forward, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        sq = np.sum(((a.astype(np.float32) - warped.astype(np.float32)) / 255.0) ** 2, axis=-1)  # (H, W)
        errors.append(float(sq[mask].mean()))
    if not errors:
        raise ValueError("no frame pair has a non-occluded pixel: the warping error is undefined for this video")
    return float(np.mean(errors))


# ------------------------------------------------------------------------------------ whole video sets


METRICS = ("fvd", "kvd", "clip_text", "clip_temp", "is", "warp", "flicker")
NEEDS_REAL = frozenset({"fvd", "kvd"})
NEEDS_PROMPTS = frozenset({"clip_text"})
PER_VIDEO = ("clip_text", "clip_temp", "warp", "flicker")  # averaged over the generated videos
TRIAL_METRICS = frozenset({"fvd", "kvd", "is"})  # mean +- std over trials, as in Tables I-IV


@dataclass
class EvalOptions:
    """Everything the evaluation needs besides the videos; defaults follow Sec. IV-C2."""

    metrics: tuple[str, ...] = METRICS
    trials: int = 1
    subset_size: int | None = None
    seed: int = 0
    is_splits: int = 1
    real_stride: int = 1
    fake_stride: int = 1
    weights_dir: str | None = None
    clip_model: str = DEFAULT_CLIP_MODEL
    flow: str = "dis"
    device: str | None = None
    batch_size: int = 8
    progress: bool = True


@dataclass
class VideoSet:
    """Generated videos to score: a label for the table, the files, and one prompt per file (or None)."""

    label: str
    paths: list[Path]
    prompts: list[str] | None = None


@dataclass
class _Networks:
    """The networks one evaluation needs (None where no requested metric uses it)."""

    i3d: I3DFeatures | None
    c3d: C3DProbabilities | None
    clip: ClipScorer | None
    flow: FlowFn | None


def _read(path: Path) -> np.ndarray:
    """Frames of one video, through nadm.io."""
    from nadm.io import read_video

    return read_video(path)[0]


class _ClipBatcher:
    """Feeds clips to a network in batches of equal-shaped clips and collects the output rows in order."""

    def __init__(self, net: Callable[[Sequence[np.ndarray]], np.ndarray], batch_size: int) -> None:
        self.net, self.batch_size = net, batch_size
        self.pending: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []

    def add(self, clip: np.ndarray) -> None:
        """Queue one clip; runs the network when the batch is full or the clip shape changes."""
        if self.pending and clip.shape != self.pending[0].shape:
            self.flush()
        self.pending.append(clip)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Run the network on the queued clips."""
        if self.pending:
            self.rows.append(self.net(self.pending))
            self.pending = []

    def result(self) -> np.ndarray:
        """All output rows, `(n, d)`."""
        self.flush()
        return np.concatenate(self.rows)


def _clip_of(path: Path, frames: np.ndarray, stride: int) -> np.ndarray:
    """cut_clip, with the video's path in the error."""
    try:
        return cut_clip(frames, CLIP_FRAMES, stride)
    except ValueError as e:
        raise NADMError(f"{path}: {e}; remove short videos or lower the stride") from e


def trial_size(n: int, trials: int, size: int | None, what: str = "a set") -> int:
    """Videos per trial: all n for one trial without a size, else `size` (default half the set, at least 2)."""
    if trials == 1 and size is None:
        return n
    k = size if size is not None else max(2, n // 2)
    if not 2 <= k <= n:
        raise NADMError(f"cannot draw subsets of {k} videos from {what} of {n} (need 2 <= --subset-size <= {n})")
    return k


def subsets(n: int, trials: int, size: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """Index sets of the trials: all n items for one trial without a size, else one random subset without
    replacement of `trial_size` items per trial."""
    k = trial_size(n, trials, size)
    if trials == 1 and size is None:
        return [np.arange(n)]
    return [np.sort(rng.choice(n, size=k, replace=False)) for _ in range(trials)]


def check_request(fakes: Sequence[VideoSet], real: Sequence[Path] | None, opt: EvalOptions) -> set[str]:
    """The requested metrics, after checking every input they need (NADMError naming what is missing)."""
    want = set(opt.metrics)
    unknown = want - set(METRICS)
    if unknown or not want:
        raise NADMError(f"unknown or no metrics ({', '.join(sorted(unknown))}): choose from {', '.join(METRICS)}")
    if opt.trials < 1 or opt.is_splits < 1 or opt.batch_size < 1 or opt.real_stride < 1 or opt.fake_stride < 1:
        raise NADMError("trials, IS splits, batch size and strides must all be >= 1")
    if want & NEEDS_REAL:
        if not real:
            raise NADMError(f"{', '.join(sorted(want & NEEDS_REAL))} compare against real videos: pass --real DIR")
        if len(real) < 2:
            raise NADMError(f"FVD/KVD need at least 2 real videos, got {len(real)}")
        trial_size(len(real), opt.trials, opt.subset_size, "the real set")
    if not fakes:
        raise NADMError("no generated videos to evaluate")
    labels = [s.label for s in fakes]
    if len(set(labels)) != len(labels):
        raise NADMError(f"the sets of generated videos need distinct labels, got {labels}")
    for s in fakes:
        if not s.paths:
            raise NADMError(f"{s.label}: no generated videos")
        if want & NEEDS_REAL and len(s.paths) < 2:
            raise NADMError(f"{s.label}: FVD/KVD need at least 2 generated videos, got {len(s.paths)}")
        if want & TRIAL_METRICS:
            k = trial_size(len(s.paths), opt.trials, opt.subset_size, f"the set {s.label}")
            if "is" in want and opt.is_splits > k:
                raise NADMError(
                    f"{opt.is_splits} IS splits need at least that many videos per trial, {s.label} has {k}"
                )
        if want & NEEDS_PROMPTS and (s.prompts is None or len(s.prompts) != len(s.paths)):
            raise NADMError(f"{s.label}: clip_text needs one prompt per generated video (--prompts FILE)")
    return want


def _load_networks(want: set[str], opt: EvalOptions) -> _Networks:
    """Load every network the requested metrics use (before any video is read, so missing weights fail fast)."""
    flow = None
    if "warp" in want:
        from nadm.interpolate import get_flow

        flow = get_flow(opt.flow)
    return _Networks(
        i3d=I3DFeatures(opt.weights_dir, opt.device) if want & NEEDS_REAL else None,
        c3d=C3DProbabilities(opt.weights_dir, opt.device) if "is" in want else None,
        clip=ClipScorer(opt.clip_model, opt.device, 4 * opt.batch_size) if want & {"clip_text", "clip_temp"} else None,
        flow=flow,
    )


def _score_set(
    fake: VideoSet, want: set[str], nets: _Networks, real_feats: np.ndarray | None, opt: EvalOptions
) -> dict[str, Any]:
    """All requested metrics for one set of generated videos."""
    # 1. one pass over the videos: 16-frame clips for I3D/C3D, every frame for CLIP and the temporal metrics
    i3d = _ClipBatcher(nets.i3d, opt.batch_size) if nets.i3d is not None else None
    c3d = _ClipBatcher(nets.c3d, opt.batch_size) if nets.c3d is not None else None
    per_video: dict[str, list[float]] = {m: [] for m in PER_VIDEO if m in want}
    bar = tqdm(fake.paths, desc=f"{fake.label}", unit="video", disable=not opt.progress, file=sys.stderr)
    for i, path in enumerate(bar):
        frames = _read(path)
        for batcher in (b for b in (i3d, c3d) if b is not None):
            batcher.add(_clip_of(path, frames, opt.fake_stride))
        try:
            if nets.clip is not None:
                emb = nets.clip.images(frames)
                if "clip_text" in want:
                    per_video["clip_text"].append(clip_text_score(emb, nets.clip.text(fake.prompts[i])))
                if "clip_temp" in want:
                    per_video["clip_temp"].append(clip_temporal_score(emb))
            if "warp" in want:
                per_video["warp"].append(warping_error(frames, nets.flow))
            if "flicker" in want:
                per_video["flicker"].append(flicker_score(frames))
        except ValueError as e:
            raise NADMError(f"{path}: {e}") from e

    # 2. FVD/KVD/IS on the trials' subsets (one seeded generator per set: every set sees the same draws)
    results: dict[str, Any] = {}
    rng = np.random.default_rng(opt.seed)
    if i3d is not None:
        fake_feats = i3d.result()
        pairs = list(zip(subsets(len(real_feats), opt.trials, opt.subset_size, rng),
                         subsets(len(fake_feats), opt.trials, opt.subset_size, rng)))
        sizes = {"real_per_trial": len(pairs[0][0]), "fake_per_trial": len(pairs[0][1])}
        for name, fn in (("fvd", frechet_distance), ("kvd", kernel_distance)):
            if name in want:
                results[name] = _summary([fn(real_feats[r], fake_feats[f]) for r, f in pairs], **sizes)
    if c3d is not None:
        probs = c3d.result()
        parts = subsets(len(probs), opt.trials, opt.subset_size, rng)
        values = [inception_score(probs[idx], opt.is_splits) for idx in parts]
        results["is"] = _summary(values, fake_per_trial=len(parts[0]), splits=opt.is_splits)

    # 3. per-video metrics: mean and spread over the videos
    for name, values in per_video.items():
        results[name] = _summary(values)
    return {m: results[m] for m in METRICS if m in results}


def evaluate_sets(
    fakes: Sequence[VideoSet], real: Sequence[Path] | None = None, options: EvalOptions | None = None
) -> dict[str, dict[str, Any]]:
    """Every requested metric of Sec. IV-C2 for each set of generated videos: {label: {metric: summary}}.

    A summary is {"mean", "std", "values", ...}: FVD, KVD and IS have one value per trial (std over trials);
    CLIP-text, CLIP-temp, warp and flicker one value per generated video (std over videos).
    """
    opt = options or EvalOptions()
    want = check_request(fakes, real, opt)
    # 1. networks first; 2. real I3D features once for every set; 3. each set of generated videos
    nets = _load_networks(want, opt)
    real_feats = None
    if nets.i3d is not None:
        batcher = _ClipBatcher(nets.i3d, opt.batch_size)
        for path in tqdm(real, desc="real videos", unit="video", disable=not opt.progress, file=sys.stderr):
            batcher.add(_clip_of(path, _read(path), opt.real_stride))
        real_feats = batcher.result()
    return {s.label: _score_set(s, want, nets, real_feats, opt) for s in fakes}


def _summary(values: Iterable[float], **extra: Any) -> dict[str, Any]:
    """Mean, population std and the raw values of a metric, plus any sizes worth recording."""
    vals = [float(v) for v in values]
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "values": vals, **extra}
