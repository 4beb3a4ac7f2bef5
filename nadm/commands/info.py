"""`nadm info`: what is installed, which devices are visible, and a model's trainable/frozen parameters."""

# Each command imports torch, diffusers and the nadm modules that need them inside its function (CLI start-up time).

from __future__ import annotations

import click


def _versions() -> dict[str, str]:
    """The versions nadm records in every sidecar, plus the training/loading libraries and torchvision (RAFT)."""
    from importlib.metadata import PackageNotFoundError, version

    from nadm.io import environment_versions

    out = {k: v or "not installed" for k, v in environment_versions().items()}
    for name in ("accelerate", "safetensors", "peft", "torchvision"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _devices() -> list[str]:
    import torch

    found = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            found.append(f"cuda:{i}  {p.name}  {p.total_memory / 2**30:.1f} GiB  bf16={'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    found.append(f"cpu  {torch.get_num_threads()} threads")
    return found


@click.command()
@click.option("--base", help="Base model (diffusers folder or hub id) to count parameters of, with --motion's modules added.")
@click.option("--motion", help="Motion weights: an NADM checkpoint, a MotionAdapter folder/hub id, or an AnimateDiff file.")
def info(base: str | None, motion: str | None) -> None:
    """Show installed versions, visible devices and, given a model, its trainable and frozen parameter counts."""
    click.echo("versions:")
    for name, ver in _versions().items():
        click.echo(f"  {name:24s} {ver}")
    click.echo("devices:")
    for line in _devices():
        click.echo(f"  {line}")
    if not (base or motion):
        return

    from nadm.checkpoint import load_motion_source
    from nadm.config import NADMConfig, TrainConfig
    from nadm.losses import NoiseAdapter
    from nadm.motion import build_video_unet, freeze_for_training, parameter_counts

    weights = load_motion_source(motion) if motion else None
    config = weights.config if weights else NADMConfig()
    # the adapter `nadm train` builds: its shape is a training setting (model.adapter_*, paper preset), whatever
    # the motion weights' own config says; --init-motion loads an adapter the checkpoint holds into it
    adapter = NoiseAdapter.from_config(TrainConfig().model)
    adapter_params = sum(p.numel() for p in adapter.parameters())
    click.echo("model:")
    click.echo(f"  motion config            {config.kind} (attn1={config.attn1}, attn2={config.attn2})")
    if weights:
        click.echo(f"  motion source            {weights.source} [{weights.source_format}]")
    if base:
        from nadm.base import load_unet

        unet2d = load_unet(base)
        if weights is None:  # a fresh NADM motion module shaped for this base
            layers = unet2d.config.layers_per_block
            config = config.replace(
                block_out_channels=tuple(unet2d.config.block_out_channels),
                motion_layers_per_block=layers if isinstance(layers, int) else layers[0],
                motion_norm_num_groups=unet2d.config.norm_num_groups,
            )
        video = build_video_unet(unet2d, config, weights.motion if weights else None)
        freeze_for_training(video, adapter)
        counts = parameter_counts(video)
        click.echo(f"  base                     {base}")
        click.echo(f"  frozen (SD UNet)         {counts['frozen']:,}")
        click.echo(f"  trainable (motion)       {counts['trainable']:,}")
    else:
        motion_params = sum(v.numel() for k, v in weights.motion.items() if not k.endswith("pos_embed.pe"))
        click.echo(f"  motion modules           {motion_params:,} (pass --base for frozen counts)")
    if weights and weights.noise_adapter:
        held = sum(v.numel() for v in weights.noise_adapter.values())
        click.echo(f"  noise adapter (in --motion) {held:,}")
    click.echo(f"  trainable (noise adapter) {adapter_params:,} (as nadm train builds it, paper preset)")
