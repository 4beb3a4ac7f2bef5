"""`nadm train`: train the motion module and noise adapter on a frozen SD 1.5 (Sec. III-D3, IV-A1); docs/training.md."""

# Each command imports torch, diffusers and the nadm modules that need them inside its function (CLI start-up time).

from __future__ import annotations

from pathlib import Path

import click

from nadm.config import TRAIN_PRESETS

# flag -> dotted config key; each flag, when given, overrides the preset and the --config file.
FLAG_KEYS = {
    "base": "base",
    "base_config": "base_config",
    "init_motion": "init_motion",
    "motion_lora_rank": "motion_lora.rank",
    "motion_lora_alpha": "motion_lora.alpha",
    "data": "data.root",
    "latent_cache": "data.latent_cache",
    "frames": "data.frames",
    "stride": "data.stride",
    "resolution": "data.resolution",
    "num_workers": "data.num_workers",
    "max_steps": "optim.max_steps",
    "batch_size": "optim.batch_size",
    "grad_accum": "optim.gradient_accumulation_steps",
    "lr": "optim.learning_rate",
    "warmup_steps": "optim.warmup_steps",
    "max_grad_norm": "optim.max_grad_norm",
    "ema": "optim.ema",
    "seed": "run.seed",
    "mixed_precision": "run.mixed_precision",
    "gradient_checkpointing": "run.gradient_checkpointing",
    "compile": "run.compile",
    "checkpoint_every": "run.checkpoint_every",
    "keep_checkpoints": "run.checkpoints_total_limit",
    "log_every": "run.log_every",
    "validate_every": "validation.every",
}


def _parse_set(values: tuple[str, ...]) -> dict:
    """--set SECTION.KEY=VALUE pairs, each VALUE read as YAML (so 1e-5, true, [1, 2] and null work)."""
    import yaml

    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected SECTION.KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise click.BadParameter(f"{item!r}: the value is not valid YAML ({e})", param_hint="--set") from None
        if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false"):
            parsed = value.strip()  # YAML 1.1 reads off/on/yes/no as booleans; model.attn1=off means the string
        out[key.strip()] = parsed
    return out


@click.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="YAML config (see configs/).")
@click.option("--preset", type=click.Choice(list(TRAIN_PRESETS)),
              help="Start from a preset: paper (the defaults), a Table II-IV ablation, or motion-lora (a motion of your "
                   "own from a handful of clips).")
@click.option("--base", help="Stable Diffusion 1.5: hub id, diffusers folder or single file. "
              "[default: stable-diffusion-v1-5/stable-diffusion-v1-5]")
@click.option("--base-config", help="Component configs for a single-file base (diffusers folder or hub id).")
@click.option("--data", help="Dataset ROOT (ROOT/videos + ROOT/captions.csv|jsonl).")
@click.option("--latent-cache", help="Train on a latent cache (nadm.latent_cache.cache_latents) instead of decoding videos.")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Run folder (config, logs, checkpoints).")
@click.option("--init-motion",
              help="Initial motion weights: an NADM checkpoint or AnimateDiff weights (folder, file or hub id).")
@click.option("--motion-lora-rank", type=int,
              help="Train a LoRA of this rank on the motion module's attention (on top of --init-motion) instead of "
                   "the whole module; 0 trains the whole module. [default: 0]")
@click.option("--motion-lora-alpha", type=float, help="The motion LoRA's alpha (its update is scaled by alpha/rank). "
              "[default: the rank]")
@click.option("--max-steps", type=int, help="Optimisation steps. [paper: 40000]")
@click.option("--resolution", type=int, help="Training resolution. [paper: 256]")
@click.option("--frames", type=int, help="Frames per clip. [paper: 8]")
@click.option("--stride", type=int, help="Frame stride. [paper: 4]")
@click.option("--batch-size", type=int, help="Clips per process and micro-batch. [paper: 1]")
@click.option("--grad-accum", type=int, help="Micro-batches per optimisation step. [default: 1]")
@click.option("--lr", type=float, help="AdamW learning rate. [paper: 1e-5]")
@click.option("--warmup-steps", type=int, help="Linear learning-rate warm-up steps. [default: 0]")
@click.option("--max-grad-norm", type=float, help="Gradient clipping norm, 0 for none. [default: 1.0]")
@click.option("--ema/--no-ema", default=None,
              help="Keep an EMA of the trainable weights (exported instead of the raw ones).")
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), help="[default: no]")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None, help="Trade compute for memory.")
@click.option("--compile/--no-compile", default=None, help="torch.compile the trained module (slow first steps). [default: no]")
@click.option("--seed", type=int, help="Seed of weights, data order, noise and timesteps. [default: 0]")
@click.option("--checkpoint-every", type=int, help="Steps between checkpoints (also one at the end). [default: 1000]")
@click.option("--keep-checkpoints", type=int, help="Keep only the newest K checkpoints. [default: all]")
@click.option("--log-every", type=int, help="Steps between log records. [default: 10]")
@click.option("--validate-every", type=int, help="Steps between validation videos, 0 for none. [default: 0]")
@click.option("--num-workers", type=int, help="DataLoader worker processes. [default: 0]")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Any other config value, e.g. --set loss.m=3 (value read as YAML).")
@click.option("--resume", help="Continue from 'latest' (in --output) or a checkpoint folder.")
@click.option("--overwrite", is_flag=True, help="Delete an earlier run in --output and start over.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(config_file, preset, output, settings, resume, overwrite, quiet, **flags) -> None:
    """Train NADM's motion module and noise adapter (Alg. 1) with accelerate.

    Values come from the paper's defaults, then --preset, then --config, then --set and the other flags.
    The resolved config is saved in OUTPUT and beside every checkpoint. Run it under `accelerate launch`
    for several GPUs or processes.
    """
    from nadm.outputs import check_writable
    from nadm.runfolder import find_checkpoint
    from nadm.train import resolve_config
    from nadm.train import train as run_training

    check_writable(output)  # before any data or model is read
    overrides = {FLAG_KEYS[name]: value for name, value in flags.items() if value is not None}
    overrides.update(_parse_set(settings))
    resume_from = find_checkpoint(output, resume) if resume else None
    config = resolve_config(preset=preset, config_file=config_file, overrides=overrides, resume_from=resume_from)
    # a diverging loss raises TrainingDiverged (RunFailed): one line and exit code 3 from nadm.cli
    run_training(config, output, resume=resume_from, overwrite=overwrite, progress=not quiet)
