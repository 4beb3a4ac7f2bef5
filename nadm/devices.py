"""Where tensors run: the one resolver of device and dtype names that every model of nadm is placed with.

The sampler (Sec. IV-A2), the latent cache, the metric networks (Sec. IV-C2) and RAFT (Sec. III-E) all call
`resolve_device`; a bad name is an `InvalidRequest` (a ValueError to Python, one line and exit 2 on the CLI).
"""

# torch is imported inside the functions: `nadm --help` and the commands that never touch a model start without it.

from __future__ import annotations

from typing import TYPE_CHECKING

from nadm.errors import InvalidRequest

if TYPE_CHECKING:
    import torch

AUTO = (None, "", "auto")
# accepted dtype spellings -> torch's name
DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}  # fmt: skip
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(
    device: str | torch.device | None = None, *, prefer: tuple[str, ...] = ("cuda", "mps")
) -> torch.device:
    """None/''/'auto': the first of `prefer` this machine has (CUDA, then MPS), else the CPU; an explicit device
    (cpu, cuda, cuda:N, mps) must exist here."""
    import torch

    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if device in AUTO:
        return torch.device(next((kind for kind in prefer if available.get(kind)), "cpu"))
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidRequest(f"unknown device {device!r}: use {DEVICE_CHOICES}") from None
    if dev.type == "cuda" and (not available["cuda"] or (dev.index or 0) >= torch.cuda.device_count()):
        raise InvalidRequest(f"device {device!r} is not available here (CUDA devices: {torch.cuda.device_count()})")
    if dev.type == "mps" and not available["mps"]:
        raise InvalidRequest("device 'mps' is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InvalidRequest(f"unsupported device {device!r}: use {DEVICE_CHOICES}")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None/'auto': bfloat16 on CUDA (float16 where the GPU only emulates it), float32 on MPS and CPU; else float32,
    float16 or bfloat16 (or fp32/fp16/half/bf16)."""
    import torch

    if dtype in AUTO:
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = DTYPE_NAMES.get(str(dtype).lower(), "")
    if name not in ("float32", "float16", "bfloat16"):
        raise InvalidRequest(f"unsupported dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    if name == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidRequest("this GPU does not support bfloat16: use float16")
    return getattr(torch, name)

