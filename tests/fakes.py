"""Stand-ins the metric and evaluation tests share: tiny I3D/C3D/CLIP networks saved offline, and test videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class TinyI3D(torch.nn.Module):
    """I3D's TorchScript call signature; uint8 (b, 3, T, H, W) in, (b, 400) features or probabilities out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 8, kernel_size=3, stride=2)
        self.fc = torch.nn.Linear(8, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if x.dim() != 5 or x.shape[1] != 3 or x.dtype != torch.uint8:
            raise RuntimeError("expected uint8 (b, 3, t, h, w)")
        if not (rescale and resize and return_features):
            raise RuntimeError("StyleGAN-V calls I3D with rescale=True, resize=True, return_features=True")
        x = x.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = torch.nn.functional.interpolate(x, size=(x.shape[2], 32, 32), mode="trilinear", align_corners=False)
        feats = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))
        return feats if return_features else torch.softmax(feats, dim=1)


class TinyC3D(torch.nn.Module):
    """C3D's TorchScript call signature: uint8 (b, 3, 16, 128, 128) in, (b, 101) probabilities out."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 101)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.shape[1] != 3 or x.shape[2] != 16 or x.shape[3] != 128 or x.shape[4] != 128:
            raise RuntimeError("expected uint8 (b, 3, 16, 128, 128)")
        x = x.float()[:, :, :, 8:120, 8:120] / 255.0
        return torch.softmax(self.fc(x.mean(dim=(2, 3, 4))) * 10.0, dim=1)


def save_metric_weights(folder: Path) -> Path:
    """Test-made TorchScript stand-ins for i3d_torchscript.pt and c3d_ucf101.pt, saved in `folder`."""
    from nadm import metric_networks

    torch.manual_seed(0)
    torch.jit.script(TinyI3D()).save(str(folder / metric_networks.I3D_WEIGHTS.name))
    torch.jit.script(TinyC3D()).save(str(folder / metric_networks.C3D_WEIGHTS.name))
    return folder


def save_tiny_clip(folder: Path) -> Path:
    """A tiny random CLIP (model + byte-level tokenizer + image processor) saved offline in `folder`."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from nadm.tiny import save_tiny_tokenizer

    tokenizer = save_tiny_tokenizer(folder)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (flow-friendly), (H, W, 3) uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 1.0)


def translating(n: int, h: int = 48, w: int = 64, step: int = 2, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) frames: a window sliding `step` px right per frame over a larger texture."""
    big = texture(h, w + step * n, seed)
    return np.stack([big[:, step * (n - t) : step * (n - t) + w] for t in range(n)])
