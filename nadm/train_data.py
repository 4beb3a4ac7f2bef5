"""Training batches (Sec. IV-A1): the clips, their order per epoch, and each batch as Alg. 1's z_0 and tau(y).

The order is a pure function of (seed, epoch), and a resumed run skips the batches already seen, so it sees
the batches an uninterrupted run would.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from nadm.config import TrainConfig
from nadm.data import VideoClipDataset
from nadm.errors import NADMError
from nadm.latent_cache import CachedLatentDataset, encode_frames
from nadm.text import encode_text


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A new permutation of the clips every epoch, a pure function of (seed, epoch) (resumable, rank-independent)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch, 1]).permutation(self.size).tolist())

    def __len__(self) -> int:
        return self.size


def make_dataset(config: TrainConfig):
    """Live clips from ROOT (`VideoClipDataset`) or cached latents (`CachedLatentDataset`), Sec. IV-A1."""
    d = config.data
    if d.latent_cache is not None:
        dataset = CachedLatentDataset(d.latent_cache, empty_caption_prob=d.empty_caption_prob, seed=config.run.seed)
        cached = dataset.manifest.get("data", {})
        wrong = [k for k in ("frames", "stride", "resolution") if cached.get(k) != getattr(d, k)]
        if wrong:
            shown = ", ".join(f"{k} {cached.get(k)} (config: {getattr(d, k)})" for k in wrong)
            raise NADMError(f"the latent cache {d.latent_cache} was made with {shown}; rebuild it or change the config")
        return dataset
    return VideoClipDataset(d, seed=config.run.seed)


def batch_stream(loader, sampler: EpochShuffleSampler, dataset, accelerator, start_batch: int) -> Iterator[dict]:
    """Micro-batches forever, epoch after epoch, starting after the first `start_batch` (a resumed run's position)."""
    per_epoch = len(loader)
    epoch, skip = divmod(start_batch, per_epoch)
    while True:
        loader.set_epoch(epoch)  # accelerate's own epoch counter, which it re-applies when iteration starts
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        yield from accelerator.skip_first_batches(loader, skip) if skip else loader
        epoch, skip = epoch + 1, 0


@torch.no_grad()
def batch_inputs(batch: dict, parts, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """z_0 `(b, c, f, h, w)` (VAE means times the scaling factor) and tau(y) `(b, tokens, dim)` of a batch."""
    if "latents" in batch:  # cached: (b, f, c, h, w) already scaled
        latents, text = batch["latents"], batch["encoder_hidden_states"]
    else:  # live: (b, f, 3, R, R) in [-1, 1]
        pixels = batch["pixel_values"]
        b, f = pixels.shape[:2]
        latents = encode_frames(pixels.reshape(b * f, *pixels.shape[2:]), parts.vae)  # (b*f, c, h, w)
        latents = latents.reshape(b, f, *latents.shape[1:])
        text = encode_text(batch["caption"], parts.tokenizer, parts.text_encoder)
    latents = latents.permute(0, 2, 1, 3, 4)  # (b, f, c, h, w) -> (b, c, f, h, w)
    return latents.to(device, torch.float32).contiguous(), text.to(device, dtype)
