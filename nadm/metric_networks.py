"""The pretrained networks the metrics of Sec. IV-C2 run on: I3D (FVD16, KVD16), C3D (IS) and CLIP.

Each is called the way the reference code (StyleGAN-V's metrics) calls it:
- I3D (Kinetics-400, the TorchScript `i3d_torchscript.pt`): uint8 `(b, 3, 16, H, W)` with
  `rescale=True, resize=True, return_features=True`, i.e. the network maps [0, 255] to [-1, 1] and resizes
  to 224x224 itself; it returns the 400-d pre-softmax features used for FVD and KVD.
- C3D (UCF-101, the TorchScript `c3d_ucf101.pt`, a port of TGAN-v2's chainer model): uint8
  `(b, 3, 16, 128, 128)`, no options; it subtracts its mean clip, takes the centre 112x112 and returns the
  101 class probabilities used for IS. We resize to 128x128 with bicubic interpolation as TGAN-v2 did.
- CLIP (`openai/clip-vit-large-patch14` by default) through transformers: the model's own image processor
  and tokenizer, L2-normalised projected embeddings.
Frames are centre-cropped to a square before I3D and C3D (the reference datasets are square). Clips are
`(16, H, W, 3) uint8` (`nadm.metrics.cut_clip`); outputs are float64 `(b, d)` rows for `nadm.metrics`.

The TorchScript files are looked up in a given folder, then the cache (`cache_dir`), else downloaded.
"""

# torch and transformers are imported inside functions: `nadm evaluate` checks its arguments before they load.

from __future__ import annotations

import os
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm

from nadm.devices import resolve_device
from nadm.errors import NADMError
from nadm.metrics import check_video

C3D_SIZE = 128  # C3D input side; the network crops the centre 112x112 (TGAN-v2 protocol)
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
# What device 'auto' picks for these networks: CUDA or the CPU, never MPS, where the published TorchScript files
# are not known to run (an explicit --device mps is still accepted).
AUTO_DEVICES = ("cuda",)


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


def load_torchscript(
    weights: WeightFile, weights_dir: str | os.PathLike | None = None, device: str | None = None
) -> Any:
    """Load a metric network (`torch.jit.load`) in eval mode on the device; NADMError if missing or unreadable."""
    import torch

    path = resolve_weights(weights, weights_dir)
    dev = resolve_device(device, prefer=AUTO_DEVICES)
    try:
        with warnings.catch_warnings():  # the published networks are TorchScript; torch 2.13 deprecates jit.load
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=DeprecationWarning)
            return torch.jit.load(str(path), map_location=dev).eval()
    except (RuntimeError, ValueError, OSError) as e:
        raise NADMError(
            f"cannot load {path} as TorchScript ({weights.what}): {e}; delete it and fetch {weights.url} again"
        ) from e


# ------------------------------------------------------------------------------------ network inputs


def center_square(frames: np.ndarray) -> np.ndarray:
    """The largest centred square of `(..., H, W, C)` frames."""
    h, w = frames.shape[-3], frames.shape[-2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return frames[..., top : top + side, left : left + side, :]


def _stack_clips(clips: Sequence[np.ndarray]) -> np.ndarray:
    """A list of equal-shaped `(T, H, W, 3)` clips -> `(b, T, H, W, 3)`; ValueError on mixed shapes."""
    if not clips:
        raise ValueError("no clips given")
    for i, c in enumerate(clips):
        check_video(c)
        if c.shape != clips[0].shape:
            raise ValueError(f"clip {i} has shape {c.shape} but clip 0 has {clips[0].shape}; batch equal shapes")
    return np.stack(clips)


# ------------------------------------------------------------------------------------ video networks


class I3DFeatures:
    """400-d pre-softmax I3D features of 16-frame clips, the inputs of FVD16 and KVD16 (Sec. IV-C2)."""

    def __init__(self, weights_dir: str | os.PathLike | None = None, device: str | None = None) -> None:
        self.device = resolve_device(device, prefer=AUTO_DEVICES)
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
        self.device = resolve_device(device, prefer=AUTO_DEVICES)
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

        self.device = resolve_device(device, prefer=AUTO_DEVICES)
        self.batch_size = batch_size
        if not Path(model).expanduser().exists():
            from nadm.hub import offline_unless_reachable

            offline_unless_reachable()
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
        check_video(frames)
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
