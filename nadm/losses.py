"""NADM's training objectives (Sec. III-D2, III-D3): noise adapter, noise contrastive loss, diffusion loss, total."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POSITIVE_MODES = ("next", "window")


class NoiseAdapter(nn.Module):
    """The noise adapter g (Sec. III-D2): each frame's predicted noise -> one vector for the contrastive loss.

    Noise `(b, c, f, h, w)` is average-pooled per frame to `grid x grid` (the identity for 256x256 training at
    the default 32), flattened, then Linear -> ReLU -> Linear (a SimCLR projection head) -> `(b, f, out_dim)`.
    """

    def __init__(self, in_channels: int = 4, grid: int = 32, hidden: int = 512, out_dim: int = 128):
        super().__init__()
        self.in_channels, self.grid = in_channels, grid
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.net = nn.Sequential(nn.Linear(in_channels * grid * grid, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        if noise.ndim != 5 or noise.shape[1] != self.in_channels:
            raise ValueError(f"noise must be (batch, {self.in_channels}, frames, h, w), got shape {tuple(noise.shape)}")
        b, c, f, h, w = noise.shape
        per_frame = noise.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # (b*f, c, h, w), frame-major per video
        pooled = self.pool(per_frame).reshape(b * f, c * self.grid * self.grid)
        return self.net(pooled).reshape(b, f, -1)  # (b, f, out_dim)

    @classmethod
    def from_config(cls, config) -> "NoiseAdapter":
        """The adapter an `NADMConfig` describes (4 latent channels, as in SD 1.5)."""
        return cls(4, config.adapter_grid, config.adapter_hidden, config.adapter_dim)


def noise_contrastive_loss(embeddings: torch.Tensor, tau: float = 0.07, m: int = 4, positive: str = "next") -> torch.Tensor:
    """L_con (Eq. 9-11): InfoNCE over a clip's noise embeddings `(batch, frames, dim)`.

    Anchors are frames 1..N-1. positive="next": frame i+1 is the positive; positive="window" (Table IV): every
    k != i with |k - i| <= m is, and the per-positive terms are averaged. Negatives are the frames of the same
    clip with |k - i| > m (never across videos); an anchor without negatives contributes -log(1) = 0.
    """
    if embeddings.ndim != 3:
        raise ValueError(f"embeddings must be (batch, frames, dim), got shape {tuple(embeddings.shape)}")
    b, n, _ = embeddings.shape
    if n < 2:
        raise ValueError(f"the contrastive loss needs at least 2 frames, got {n}")
    if m < 1:
        raise ValueError(f"the negative threshold m must be >= 1, got {m}")
    if tau <= 0:
        raise ValueError(f"the temperature tau must be > 0, got {tau}")
    if positive not in POSITIVE_MODES:
        raise ValueError(f"positive must be one of {POSITIVE_MODES}, got {positive!r}")
    # 1. Cosine similarities r^(i,j) (Eq. 9), scaled by the temperature: (b, n, n).
    z = F.normalize(embeddings.float(), dim=-1)
    logits = z @ z.transpose(1, 2) / tau
    # 2. Masks over (anchor i, frame k).
    idx = torch.arange(n, device=embeddings.device)
    gap = (idx[:, None] - idx[None, :]).abs()
    neg = gap > m
    pos = (idx[None, :] == idx[:, None] + 1) if positive == "next" else (gap >= 1) & (gap <= m)
    anchors = idx < n - 1
    # 3. log sum_k exp(r^(i,k)/tau) over the negatives; rows without negatives get a finite dummy, masked later.
    has_neg = neg.any(dim=1)
    neg_logits = logits.masked_fill(~neg, float("-inf")).masked_fill(~has_neg[:, None], 0.0)
    neg_lse = torch.logsumexp(neg_logits, dim=-1, keepdim=True)  # (b, n, 1)
    # 4. l^(i) for one positive j = -log(e^p / (e^p + sum_neg)) = softplus(lse_neg - p)  (Eq. 10).
    per_pair = torch.where(has_neg[:, None], F.softplus(neg_lse - logits), torch.zeros_like(logits))
    pos = pos & anchors[:, None]
    per_anchor = (per_pair * pos).sum(-1) / pos.sum(-1).clamp(min=1)  # (b, n): mean over each anchor's positives
    # 5. Mean over the N-1 anchors, frames 1..N-1 (Eq. 11), then over the batch (a slice: no device sync).
    return per_anchor[:, : n - 1].mean()


def diffusion_loss(noise_pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """L_diff (Eq. 12): mean squared error between the true and the predicted noise."""
    if noise_pred.shape != noise.shape:
        raise ValueError(f"prediction shape {tuple(noise_pred.shape)} != target shape {tuple(noise.shape)}")
    return F.mse_loss(noise_pred.float(), noise.float())


def total_loss(l_diff: torch.Tensor, l_con: torch.Tensor, lambda_diff: float = 1.0, lambda_con: float = 0.07) -> torch.Tensor:
    """L = lambda_diff * L_diff + lambda_con * L_con (Eq. 13); the paper uses 1 and 0.07."""
    return lambda_diff * l_diff + lambda_con * l_con
