"""Parameter counts of the real SD 1.5 architecture (random weights, no download) and of NADM's trainable parts.

Usage: python benchmarks/parameters.py  -> prints a table and writes benchmarks/results/parameters.md
"""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

import torch

from nadm.config import NADMConfig
from nadm.losses import NoiseAdapter
from nadm.motion import build_video_unet, freeze_for_training, parameter_counts
from nadm.sd15 import build

RESULTS = Path(__file__).resolve().parent / "results" / "parameters.md"


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    unet, vae, text_encoder = build()
    config = NADMConfig()
    video = build_video_unet(unet, config)
    adapter = NoiseAdapter.from_config(config)
    freeze_for_training(video, adapter)
    video_counts = parameter_counts(video)
    rows = [
        ("SD 1.5 UNet (frozen)", count(unet)),
        ("SD 1.5 VAE (frozen)", count(vae)),
        ("CLIP ViT-L/14 text encoder (frozen)", count(text_encoder)),
        ("NADM motion modules (trainable)", video_counts["motion"]),
        ("noise adapter (trainable, training only)", count(adapter)),
        ("video UNet total (UNet + motion modules)", video_counts["total"]),
    ]
    assert video_counts["frozen"] == count(unet), "the video UNet's frozen part must be exactly the SD UNet"
    trainable = video_counts["trainable"] + count(adapter)
    frozen = count(unet) + count(vae) + count(text_encoder)
    rows += [("trainable in training", trainable), ("frozen in training", frozen)]
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'component':{width}} | parameters |", f"|{'-' * (width + 2)}|-----------:|"]
    lines += [f"| {name:{width}} | {n / 1e6:9.1f}M |" for name, n in rows]
    table = "\n".join(lines)
    print(table)
    header = (
        "# Parameter counts\n\n"
        f"SD 1.5's published architecture built with random weights (nadm.sd15), NADM motion modules with the "
        f"default NADMConfig (AnimateDiff v1-5-2 shapes, mid-block module on). Exact counts, so the machine does "
        f"not matter; generated {datetime.date.today()} on {platform.machine()} with torch {torch.__version__}.\n\n"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(header + table + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
