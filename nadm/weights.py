"""The one reader of weights files (motion modules, noise adapter, LoRAs, single-file bases, training state).

Every way a file can fail to decode (truncated or random safetensors, a `.ckpt` that is no torch checkpoint, a pickle
torch's `weights_only` mode refuses, a zip archive cut short) becomes one NADMError line that names the file and says
it is damaged or not a weights file. nadm never unpickles code: `.ckpt`/`.pt`/`.pth`/`.bin` load with
`weights_only=True`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from nadm.errors import NADMError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _reason(error: Exception) -> str:
    """One short line on why a weights file did not decode, from the library's (often multi-line) message."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # torch's weights_only refusal: the cause follows this marker
        detail = next((line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()), "")
        if detail.startswith("Unsupported global"):
            name = detail.split("GLOBAL", 1)[-1].split()[0] if "GLOBAL" in detail else "an object"
            return f"it holds Python objects ({name}), not only tensors, and nadm does not run code from weights files"
        return f"torch cannot unpickle it ({detail or error.__class__.__name__})"
    if "PytorchStreamReader" in text or "zip archive" in text:
        return "its zip archive is cut short or corrupt"
    first = next((line.strip() for line in text.splitlines() if line.strip()), error.__class__.__name__)
    first = first.removeprefix("Error while deserializing header: ")
    return first if len(first) <= 160 else first[:157] + "..."


def _looks_like_torch(path: Path) -> bool:
    """Whether a file starts as torch checkpoints do: a zip archive (torch >= 1.6) or a pickle (older ones)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _damaged(path: Path, error: Exception) -> NADMError:
    """The one-line error for a weights file that did not decode."""
    reason = _reason(error)
    if path.suffix.lower() in TORCH_SUFFIXES and not _looks_like_torch(path):
        reason = "it is neither a zip archive nor a pickle, so no torch checkpoint"
    return NADMError(f"{path} is damaged or not a weights file: {reason}")


def _existing(path: str | os.PathLike) -> Path:
    """The path as a Path; NADMError when it is missing, a folder, or of a type nadm does not read."""
    path = Path(path).expanduser()
    if not path.exists():
        raise NADMError(f"weights file not found: {path}")
    if path.is_dir():
        raise NADMError(f"{path} is a folder, not a weights file")
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise NADMError(f"{path}: unknown weights file type {path.suffix!r} (expected .safetensors, .ckpt, .pt, .pth or .bin)")
    return path


def _torch_load(path: Path, mmap: bool):
    """torch.load in weights_only mode (no code runs), quiet about the pickle protocol of a file it refuses anyway."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pickle protocol.*", category=UserWarning)
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)


def read_weights(path: str | os.PathLike) -> dict:
    """All tensors of a `.safetensors` or torch (`.ckpt`/`.pt`/`.pth`/`.bin`, a `state_dict` entry unwrapped) file
    as `{name: tensor}` on the CPU; one NADMError line naming the file when it is damaged or not a weights file."""
    path = _existing(path)
    try:
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            return load_file(str(path))
        state = _torch_load(path, mmap=False)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding failure of a user's file is a damaged file, said in one line
        raise _damaged(path, e) from None
    return _tensors(path, state)


def _tensors(path: Path, state) -> dict:
    """A loaded torch checkpoint as a flat {name: tensor} (its `state_dict` entry when it has one)."""
    import torch

    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise NADMError(f"{path} is not a weights file: it holds a {type(state).__name__}, not named tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise NADMError(f"{path} is not a plain weights file: entry {key!r} is a {type(value).__name__}, not a tensor")
    return dict(state)


def check_weights(path: str | os.PathLike) -> Path:
    """Check that a weights file decodes without reading all of it (a safetensors header and its length; a torch zip
    archive's index, memory-mapped), before a library loads it its own way; NADMError as `read_weights`."""
    path = _existing(path)
    try:
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
            return path
        try:
            state = _torch_load(path, mmap=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):
                raise
            state = _torch_load(path, mmap=False)  # the legacy (pre-zip) format cannot be memory-mapped
    except MemoryError:
        raise
    except NADMError:
        raise
    except Exception as e:  # noqa: BLE001 - as in read_weights
        raise _damaged(path, e) from None
    _tensors(path, state)
    return path


__all__ = ["SAFETENSORS_SUFFIXES", "TORCH_SUFFIXES", "check_weights", "read_weights"]
