"""The frozen encoders' outputs and the on-disk latent cache (Sec. III-D3 trains neither the VAE nor the text
encoder, so their outputs for the Sec. IV-A1 training clips can be computed once).

`encode_frames` (and nadm.text's `encode_text`, the one CLIP prompt encoder) turn clips and captions into z_0 and
the UNet's conditioning, for live training batches as well as for the cache; `cache_latents` writes K clips per
video of a `VideoClipDataset` to a folder, and `CachedLatentDataset` serves them back with classifier-free-guidance
caption dropout.
Layout in and out of docs/dataset.md ("Latent cache").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm import tqdm

from nadm.data import VideoClipDataset, listing
from nadm.errors import InvalidRequest, NADMError
from nadm.outputs import staged_folder
from nadm.text import encode_text  # re-exported: the latent cache's text side is the sampler's encoder

CACHE_FORMAT = 1


@torch.no_grad()
def encode_frames(pixel_values: torch.Tensor, vae, batch: int = 8) -> torch.Tensor:
    """(frames, 3, R, R) in [-1, 1] -> VAE posterior means times `scaling_factor`, (frames, C, R/s, R/s)."""
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise ValueError(f"pixel_values must be (frames, 3, R, R), got {tuple(pixel_values.shape)}")
    pixels = pixel_values.to(vae.device, vae.dtype)
    latents = [vae.encode(pixels[i : i + batch]).latent_dist.mode() for i in range(0, len(pixels), batch)]
    return torch.cat(latents) * vae.config.scaling_factor


def cache_latents(
    dataset: VideoClipDataset,
    vae,
    text_encoder,
    tokenizer,
    out_dir: str | os.PathLike,
    *,
    clips_per_video: int = 1,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Encode K clips per video once with the frozen VAE and text encoder (Sec. III-D3 trains neither).

    Writes OUT/empty_caption.safetensors ("encoder_hidden_states" of ""), OUT/clips/<i>_<k>.safetensors
    ("latents" (frames, C, R/s, R/s) scaled by vae.config.scaling_factor, "encoder_hidden_states" (L, D)) and
    OUT/cache.json. Clip k of video i is the clip epoch k of `VideoClipDataset` draws for it, so the cache
    holds only K of the clips live decoding would sample. Latents are the VAE posterior means.
    """
    if isinstance(clips_per_video, bool) or not isinstance(clips_per_video, int) or clips_per_video < 1:
        raise InvalidRequest(f"clips_per_video must be an integer >= 1, got {clips_per_video!r}")
    out = Path(out_dir).expanduser()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise NADMError(f"{out} already exists: pass overwrite=True to replace it")
    with staged_folder(out, overwrite=True) as staging:
        # 1. the empty-caption embedding, swapped in for CFG dropout at training time
        empty = encode_text([""], tokenizer, text_encoder)[0].to(dtype).contiguous().cpu()  # (L, D)
        save_file({"encoder_hidden_states": empty}, str(staging / "empty_caption.safetensors"))
        (staging / "clips").mkdir()
        entries = []
        latent_shape = None
        # 2. per video: its caption once, then K clips through the VAE
        for i in tqdm(range(len(dataset)), desc="cache latents", unit="video", disable=not progress):
            clip = dataset.clips[i]
            text = encode_text([clip.caption], tokenizer, text_encoder)[0].to(dtype).contiguous().cpu()
            for k in range(clips_per_video):
                frame_indices, _ = dataset.draw(i, epoch=k)
                latents = encode_frames(dataset.load_clip(i, frame_indices), vae).to(dtype).contiguous().cpu()
                latent_shape = latent_shape or list(latents.shape)
                name = f"clips/{i:06d}_{k:03d}.safetensors"
                save_file({"latents": latents, "encoder_hidden_states": text}, str(staging / name))
                entries.append(
                    {
                        "file": name,
                        "path": str(clip.path),
                        "caption": clip.caption,
                        "frame_indices": frame_indices.tolist(),
                    }
                )
        # 3. the manifest, then the whole folder into place
        manifest = {
            "format": CACHE_FORMAT,
            "data": {**dataset.config.to_dict(), "seed": dataset.seed},
            "clips_per_video": clips_per_video,
            "scaling_factor": float(vae.config.scaling_factor),
            "latent_shape": latent_shape,
            "text_shape": list(empty.shape),
            "dtype": str(dtype).replace("torch.", ""),
            "clips": entries,
        }
        (staging / "cache.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


class CachedLatentDataset(Dataset):
    """Clips from a `cache_latents` folder, deterministic given (seed, epoch, index) like `VideoClipDataset`.

    Item: {"latents": (frames, C, R/s, R/s) already times scaling_factor, "encoder_hidden_states": (L, D), the
    empty caption's with probability `empty_caption_prob` (CFG dropout), "caption": str ("" when dropped),
    "path": str}.
    """

    def __init__(self, cache_dir: str | os.PathLike, empty_caption_prob: float = 0.1, seed: int = 0):

        if not 0.0 <= empty_caption_prob <= 1.0:
            raise InvalidRequest(f"empty_caption_prob must be in [0, 1], got {empty_caption_prob!r}")
        self.dir = Path(cache_dir).expanduser()
        try:
            self.manifest = json.loads((self.dir / "cache.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise NADMError(f"{self.dir} is not a latent cache (cache.json: {e})") from e
        if self.manifest.get("format") != CACHE_FORMAT:
            raise NADMError(f"{self.dir}: cache format {self.manifest.get('format')!r}, expected {CACHE_FORMAT}")
        self.entries = self.manifest["clips"]
        missing = [e["file"] for e in self.entries if not (self.dir / e["file"]).is_file()]
        if missing:
            raise NADMError(f"{self.dir}: {len(missing)} cached clip file(s) missing: {listing(missing)}")
        self.empty = load_file(str(self.dir / "empty_caption.safetensors"))["encoder_hidden_states"]
        self.empty_caption_prob, self.seed, self.epoch = empty_caption_prob, seed, 0

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch `epoch`'s caption dropout from now on."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:

        if not 0 <= index < len(self):
            raise IndexError(f"cached clip index {index} out of range 0..{len(self) - 1}")
        entry = self.entries[index]
        tensors = load_file(str(self.dir / entry["file"]))
        latents, text = tensors["latents"], tensors["encoder_hidden_states"]
        if list(latents.shape) != self.manifest["latent_shape"] or text.shape != self.empty.shape:
            raise NADMError(f"{self.dir / entry['file']}: shapes {tuple(latents.shape)}, {tuple(text.shape)} differ "
                            f"from the manifest's {self.manifest['latent_shape']}, {list(self.empty.shape)}")
        drop = bool(np.random.default_rng([self.seed, self.epoch, index]).random() < self.empty_caption_prob)
        return {
            "latents": latents,
            "encoder_hidden_states": self.empty.clone() if drop else text,
            "caption": "" if drop else entry["caption"],
            "path": entry["path"],
        }


__all__ = ["CACHE_FORMAT", "CachedLatentDataset", "cache_latents", "encode_frames", "encode_text"]
