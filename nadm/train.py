"""Training NADM on accelerate (Sec. III-D3, IV-A1, Alg. 1): only the motion module and the noise adapter learn.

`train(config, output_dir)` runs Alg. 1's training loop on a frozen Stable Diffusion 1.5 with accelerate
(mixed precision, gradient accumulation, DDP under `accelerate launch`): nadm.train_step holds the trained
module and Alg. 1's step, nadm.train_data the batches, nadm.runfolder the output folder. Determinism: the data
order is a function of (seed, epoch), each clip's frames and caption dropout of (seed, epoch, index), the noise
and timesteps of (seed, step, micro-batch, rank). A resumed run skips the batches already seen, so it
reproduces the losses of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nadm import __version__
from nadm.config import (
    NADMConfig,
    TrainConfig,
    load_yaml,
    merge_dicts,
    save_train_config,
    set_dotted,
    train_config_from_dict,
    train_preset,
)
from nadm.errors import NADMError
from nadm.losses import NoiseAdapter
from nadm.motion import build_video_unet, parameter_counts
from nadm.runfolder import CHECKPOINTS, EXPORT, RUN_CONFIG, SUMMARY, WEIGHTS, find_checkpoint
from nadm.train_data import EpochShuffleSampler, batch_inputs, batch_stream, make_dataset
from nadm.train_step import (
    NADMTrainModule,
    cast_frozen,
    is_trainable_key,
    make_noise_scheduler,
    step_generator,
    trainable_module,
    training_step,
)

# Settings a resumed run may change; anything else must match the checkpoint's config.
RESUMABLE = {"optim.max_steps", "run.checkpoint_every", "run.checkpoints_total_limit", "run.log_every", "data.num_workers"}
RESUMABLE_SECTIONS = {"validation"}
# Motion-module architecture fields that --init-motion weights decide (the run keeps attention types and adapter).
ARCHITECTURE_FIELDS = (
    "block_out_channels",
    "motion_layers_per_block",
    "motion_num_attention_heads",
    "motion_norm_num_groups",
    "motion_max_seq_length",
    "use_motion_mid_block",
)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/inf: the run stops without saving anything after it."""


# ------------------------------------------------------------------------------------------ configuration


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _absolute_if_local(value: str | None) -> str | None:
    """A path that exists here becomes absolute (a resumed run may start elsewhere); hub ids stay as they are."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def resolve_config(
    *,
    preset: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    resume_from: Path | None = None,
) -> TrainConfig:
    """Layer defaults (or the resumed checkpoint's config) <- preset <- YAML file <- `overrides` ({"section.key": v})."""
    try:
        # 1. the starting point: the paper's defaults, or exactly what the checkpoint was trained with
        start = TrainConfig().to_dict() if resume_from is None else load_yaml(resume_from / RUN_CONFIG)
        data = dict(start)
        # 2. preset, file, flags
        if preset is not None:
            data = merge_dicts(data, train_preset(preset))
        if config_file is not None:
            data = merge_dicts(data, load_yaml(config_file))
        for key, value in (overrides or {}).items():
            data = set_dotted(data, key, value)
        config = train_config_from_dict(data, where=str(config_file or "config"))
    except ValueError as e:
        raise NADMError(str(e)) from None
    # 3. local paths made absolute
    data_cfg = dataclasses.replace(
        config.data,
        root=_absolute_if_local(config.data.root),
        latent_cache=_absolute_if_local(config.data.latent_cache),
        captions_file=_absolute_if_local(config.data.captions_file),
    )
    config = config.replace(
        base=_absolute_if_local(config.base), init_motion=_absolute_if_local(config.init_motion), data=data_cfg
    )
    # 4. a resumed run may only change bookkeeping, never the recipe
    if resume_from is not None:
        before = _flatten(train_config_from_dict(start, where=str(resume_from / RUN_CONFIG)).to_dict())
        after = _flatten(config.to_dict())
        changed = sorted(
            k for k in before if before[k] != after[k] and k not in RESUMABLE and k.split(".")[0] not in RESUMABLE_SECTIONS
        )
        if changed:
            shown = ", ".join(f"{k} ({before[k]!r} -> {after[k]!r})" for k in changed[:4])
            raise NADMError(
                f"--resume: these settings differ from the checkpoint's: {shown}"
                + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
                + f"; a resumed run may only change {', '.join(sorted(RESUMABLE))} and validation.*"
            )
    if config.data.root is None and config.data.latent_cache is None:
        raise NADMError("no training data: pass --data ROOT (videos + captions) or --latent-cache DIR")
    if config.loss.lambda_con > 0 and config.data.frames < config.loss.m + 2:
        raise NADMError(
            f"with {config.data.frames} frames no two frames are more than loss.m={config.loss.m} apart, so the "
            f"contrastive loss has no negatives (Eq. 10): use >= {config.loss.m + 2} frames, a smaller loss.m, "
            "or loss.lambda_con 0"
        )
    return config


# ------------------------------------------------------------------------------------------ base, init weights


def load_frozen_base(config: TrainConfig):
    """SD 1.5's UNet, VAE, CLIP text encoder and tokenizer (Sec. III-C), frozen, from a hub id, a diffusers folder
    or a single file (+ base_config), through nadm.base."""
    from nadm.base import load_base

    return load_base(config.base, config=config.base_config)


def resolve_model_config(run_model: NADMConfig, unet2d, init=None) -> NADMConfig:
    """The run's motion config: architecture from --init-motion weights when given, attention types and the noise
    adapter always from the run (so an AnimateDiff init trains as NADM); checked against the base UNet."""
    from nadm.motion import check_compatible

    model = run_model
    if init is not None:
        model = run_model.replace(**{name: getattr(init.config, name) for name in ARCHITECTURE_FIELDS})
    try:
        check_compatible(unet2d, model)
    except ValueError as e:
        raise NADMError(
            f"{e}; set model.block_out_channels / model.motion_layers_per_block in the config to the base UNet's"
        ) from None
    return model


# ------------------------------------------------------------------------------------------ the run


@dataclass
class TrainResult:
    """What `train` returns: the run folder, the step reached, the last checkpoint, the logged history and the
    trained module (unwrapped, on its training device)."""

    output_dir: Path
    step: int
    checkpoint: Path | None
    history: list[dict]
    module: NADMTrainModule | None = None


class _Progress:
    """The optimisation step, saved and restored with accelerate's state."""

    def __init__(self):
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def _say(accelerator, message: str) -> None:
    """A console line from the main process that does not break the progress bar."""
    if accelerator.is_main_process:
        from tqdm import tqdm

        tqdm.write(message)


def train(
    config: TrainConfig,
    output_dir: str | os.PathLike,
    *,
    resume: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train the motion module and noise adapter on a frozen SD 1.5 (Sec. III-D3, IV-A1) with accelerate.

    resume: 'latest' or a checkpoint folder (its config must match `config` but for bookkeeping settings;
    `resolve_config(resume_from=...)` builds such a config). Raises TrainingDiverged when a loss turns NaN/inf.
    """
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    from nadm.runfolder import check_output

    # 1. the output folder (checked by every rank before any writes), accelerate, TensorBoard under DIR/logs
    out = Path(output_dir).expanduser().resolve()
    resume_dir = find_checkpoint(out, str(resume)) if resume is not None else None
    check_output(out, resume_dir, overwrite)
    try:
        accelerator = Accelerator(
            mixed_precision=config.run.mixed_precision,
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=config.optim.gradient_accumulation_steps, sync_with_dataloader=False
            ),
            log_with="tensorboard",
            project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        )
    except ValueError as e:
        raise NADMError(f"cannot set up training: {e}") from None
    try:
        return _run(accelerator, config, out, resume_dir, overwrite, progress)
    finally:
        accelerator.end_training()


def build_module(cfg: TrainConfig, fresh: bool, say=print):
    """Steps 3-4 of a run: the frozen base, the motion config and initial weights, the trainable module, freezing.

    Returns (config with the resolved motion architecture, base components, module, names of the parameters no
    gradient reaches and that stay frozen). `fresh=False` (resuming) skips --init-motion: the checkpoint has it.
    """
    from nadm.checkpoint import load_motion_source, load_noise_adapter

    # 3. frozen base, then the motion config and its initial weights
    parts = load_frozen_base(cfg)
    if cfg.data.latent_cache is not None:  # cached latents and text: the encoders are not needed
        parts.vae = parts.text_encoder = None
    init = load_motion_source(cfg.init_motion, heads_from=cfg.model) if cfg.init_motion is not None and fresh else None
    model_cfg = resolve_model_config(cfg.model, parts.unet, init)
    if model_cfg != cfg.model:
        changed = [f"{k}={getattr(model_cfg, k)!r}" for k in ARCHITECTURE_FIELDS
                   if getattr(model_cfg, k) != getattr(cfg.model, k)]  # fmt: skip
        say(f"motion architecture from --init-motion ({init.source_format}): {', '.join(changed)}")
        cfg = cfg.replace(model=model_cfg)
    video_unet = build_video_unet(parts.unet, model_cfg, init.motion if init is not None else None)
    parts.unet = None  # the video UNet holds its own copy of these weights
    adapter = NoiseAdapter.from_config(model_cfg)
    if init is not None and init.noise_adapter is not None:
        load_noise_adapter(adapter, init.noise_adapter)
        say(f"noise adapter initialised from {init.source}")
    # 4. freeze SD; then also the motion parameters no gradient reaches under these attention types
    module, unused = trainable_module(video_unet, adapter, cfg.run.gradient_checkpointing, cfg.run.compile)
    for part in (parts.vae, parts.text_encoder):
        if part is not None:
            part.requires_grad_(False).eval()
    return cfg, parts, module, unused


def _trainable_weights(accelerator, module, ema=None, trainable=None) -> dict[str, torch.Tensor]:
    """The motion-module and adapter weights (the EMA ones with `ema`), gathered whole where accelerate shards
    them (FSDP, DeepSpeed ZeRO-3): every rank must call it; copies on the CPU."""
    if ema is not None:
        ema.store(trainable)
        ema.copy_to(trainable)
    try:
        state = accelerator.get_state_dict(module)
        return {k: v.detach().to("cpu", copy=True) for k, v in state.items() if is_trainable_key(k)}
    finally:
        if ema is not None:
            ema.restore(trainable)


def _split(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Trainable weights -> (motion modules keyed as a MotionAdapter-bearing UNet, noise adapter)."""
    motion = {k[len("unet."):]: v for k, v in weights.items() if k.startswith("unet.")}
    adapter = {k[len("adapter."):]: v for k, v in weights.items() if k.startswith("adapter.")}
    return motion, adapter


def _run(accelerator, cfg: TrainConfig, out: Path, resume_dir: Path | None, overwrite: bool, progress: bool) -> TrainResult:
    """The body of `train`, numbered as it runs (step 1 is in `train`); nothing is written before step 8."""
    from accelerate.utils import DistributedType, set_seed
    from diffusers.optimization import get_scheduler
    from safetensors.torch import save_file
    from tqdm import tqdm

    from nadm.checkpoint import save_checkpoint
    from nadm.motion import check_state_dict
    from nadm.runfolder import (
        MetricsWindow,
        fingerprint,
        log_record,
        prune,
        read_trainable,
        start_metrics,
        validation_videos,
        write_checkpoint,
    )

    say = lambda message: _say(accelerator, message)  # noqa: E731
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    o = cfg.optim
    if o.ema and sharded:
        raise NADMError("EMA is not supported with FSDP or DeepSpeed here: train with DDP, or without --ema")

    # 2. data, first (its mistakes show before any model loads): shuffled per epoch as a function of (seed, epoch);
    #    accelerate deals each process its batches
    dataset = make_dataset(cfg)
    needed = o.batch_size * accelerator.num_processes
    if len(dataset) < needed:
        raise NADMError(f"the dataset has {len(dataset)} clip(s), fewer than batch_size x processes = {needed}")
    sampler = EpochShuffleSampler(len(dataset), cfg.run.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=o.batch_size, sampler=sampler, drop_last=True, num_workers=cfg.data.num_workers
    )

    # 3-4. the frozen base and the trainable module (`build_module`; the same fresh weights on every rank)
    set_seed(cfg.run.seed)
    cfg, parts, module, unused = build_module(cfg, fresh=resume_dir is None, say=say)
    counts = parameter_counts(module)
    say(
        f"nadm {__version__}: {cfg.model.kind} (attn1={cfg.model.attn1}, attn2={cfg.model.attn2}); trainable "
        f"{counts['trainable'] / 1e6:.2f}M of {counts['total'] / 1e6:.2f}M parameters"
        + (f"; {len(unused)} tensors unused by these attention types stay frozen" if unused else "")
    )

    # 5. precision: frozen weights in the half type, trainable ones float32 (AMP); SD's VAE stays float32 in fp16
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    if weight_dtype != torch.float32 and not sharded:  # FSDP/DeepSpeed cast by their own mixed-precision policies
        cast_frozen(module.unet, weight_dtype)
    for part in (parts.vae, parts.text_encoder):
        if part is not None:
            part.to(accelerator.device)
            if weight_dtype == torch.bfloat16 or (weight_dtype == torch.float16 and part is parts.text_encoder):
                cast_frozen(part, weight_dtype)

    # 6. AdamW (fused where torch has it) with linear warm-up, prepared by accelerate; optional EMA
    optimizer = torch.optim.AdamW(
        [p for p in module.parameters() if p.requires_grad],
        lr=o.learning_rate,
        betas=(o.adam_beta1, o.adam_beta2),
        eps=o.adam_epsilon,
        weight_decay=o.weight_decay,
        fused=accelerator.device.type in ("cuda", "cpu", "xpu") and not sharded,
    )
    schedule = "constant_with_warmup" if o.lr_scheduler == "constant" and o.warmup_steps else o.lr_scheduler
    lr_scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=o.warmup_steps, num_training_steps=o.max_steps)
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    raw = accelerator.unwrap_model(module)
    trainable = [p for p in raw.parameters() if p.requires_grad]
    ema = None
    if o.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trainable, decay=o.ema_decay)
        ema.to(accelerator.device)
    state = _Progress()

    # 7. checkpoint contents: the NADM export (+ the raw weights apart with EMA) replaces accelerate's copy of the
    #    whole UNet (DDP and single process; under FSDP/DeepSpeed accelerate saves the model its own way as well)
    def drop_full_model(models, weights, directory):
        weights.clear()

    def load_trainable(models, directory):
        if not models:
            return  # FSDP/DeepSpeed: accelerate loads its own model files
        tensors = read_trainable(directory)
        check_state_dict({k: v.shape for k, v in raw.trainable_state_dict().items()}, tensors, f"the weights in {directory}")
        _, unexpected = raw.load_state_dict(tensors, strict=False)
        assert not unexpected, "the strict check above guarantees this"
        models.clear()

    accelerator.register_save_state_pre_hook(drop_full_model)
    accelerator.register_load_state_pre_hook(load_trainable)
    accelerator.register_for_checkpointing(lr_scheduler, state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        say(f"resumed from {resume_dir} at step {state.step}")

    def write_contents(folder: Path) -> None:
        weights = _trainable_weights(accelerator, module)
        export = weights if ema is None else _trainable_weights(accelerator, module, ema, trainable)
        if accelerator.is_main_process:
            if ema is not None:
                save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / WEIGHTS))
            motion, adapter = _split(export)
            extra = {"step": state.step, "ema": ema is not None, "train_config": cfg.to_dict()}
            save_checkpoint(folder / EXPORT, cfg.model, motion, adapter, extra=extra, trained_frames=cfg.data.frames)
            save_train_config(cfg, folder / RUN_CONFIG)

    def checkpoint() -> Path:
        folder = write_checkpoint(accelerator, out, state.step, write_contents)
        if accelerator.is_main_process:
            prune(out, cfg.run.checkpoints_total_limit)
        accelerator.wait_for_everyone()
        say(f"step {state.step}: checkpoint {folder}")
        return folder

    def validate() -> None:
        from nadm.checkpoint import MotionWeights

        motion, _ = _split(_trainable_weights(accelerator, module, ema, trainable))
        if accelerator.is_main_process:
            weights = MotionWeights(cfg.model, motion, None, f"{out} at step {state.step}", "nadm")
            folder = validation_videos(cfg, weights, out, state.step, accelerator.device)
            say(f"step {state.step}: validation videos in {folder}")
        accelerator.wait_for_everyone()

    # 8. bookkeeping: the folder (an earlier run's deleted with --overwrite), the resolved config, the metrics
    #    history (cut back to the resumed step), TensorBoard
    if accelerator.is_main_process:
        if resume_dir is None and overwrite and out.exists():
            shutil.rmtree(out)
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    history = start_metrics(accelerator, out, state.step)
    if accelerator.is_main_process:
        save_train_config(cfg, out / RUN_CONFIG)
    accelerator.init_trackers("nadm", config=_hparams(cfg))

    # 9. the loop: Alg. 1's step on every micro-batch, one optimiser step every `accum` micro-batches
    noise_scheduler = make_noise_scheduler(cfg.noise)
    accum = o.gradient_accumulation_steps
    batches = batch_stream(loader, sampler, dataset, accelerator, state.step * accum)
    last_checkpoint = resume_dir
    window = MetricsWindow()
    show = progress and accelerator.is_main_process
    bar = tqdm(total=o.max_steps, initial=state.step, desc="train", unit="step", disable=not show, dynamic_ncols=True)
    if state.step >= o.max_steps:
        say(f"already at step {state.step} (max_steps {o.max_steps}): nothing to train")
    module.train()
    while state.step < o.max_steps:
        step = state.step + 1
        means, grad_norm = torch.zeros(3, device=accelerator.device), None
        for micro in range(accum):
            batch = next(batches)
            with accelerator.accumulate(module):
                latents, text = batch_inputs(batch, parts, accelerator.device, weight_dtype)
                generator = step_generator(cfg.run.seed, step, micro, accelerator.process_index)
                losses = training_step(module, latents, text, generator, noise_scheduler, cfg.loss)
                # every rank sees the mean losses, so a NaN on any rank stops all of them together
                values = torch.stack([losses.diffusion, losses.contrastive, losses.total]).detach()
                values = accelerator.reduce(values, "mean")
                if not torch.isfinite(values).all():
                    raise TrainingDiverged(_diverged(values, step, last_checkpoint))
                means += values / accum
                accelerator.backward(losses.total)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(module.parameters(), o.max_grad_norm or float("inf"))
                    # fp16's loss scaler skips steps with inf gradients by itself; elsewhere they are fatal
                    fatal = accelerator.mixed_precision != "fp16"
                    if grad_norm is not None and not math.isfinite(float(grad_norm)) and fatal:
                        raise TrainingDiverged(_diverged(values, step, last_checkpoint, f"gradient norm {float(grad_norm)}"))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        lr = lr_scheduler.get_last_lr()[0]
        lr_scheduler.step()
        if ema is not None:
            ema.step(trainable)
        state.step = step
        bar.update(1)
        window.add(means, grad_norm)
        if step % cfg.run.log_every == 0 or step == o.max_steps:
            record = window.record(step, lr, o.batch_size * accum * accelerator.num_processes)
            history.append(record)
            log_record(accelerator, out, record, bar)
        if step % cfg.run.checkpoint_every == 0 or step == o.max_steps:
            last_checkpoint = checkpoint()
            window.restart_clock()
        if cfg.validation.every and (step % cfg.validation.every == 0 or step == o.max_steps):
            validate()
            window.restart_clock()
    bar.close()

    # 10. the end: every rank must hold the same weights (DDP keeps them in step); a summary for people and scripts
    prints = None
    if not sharded:
        prints = accelerator.gather_for_metrics([fingerprint(raw.trainable_state_dict())], use_gather_object=True)
        if len(set(prints)) != 1:
            raise RuntimeError(f"the ranks ended with different weights ({prints}): distributed training desynchronised")
    if accelerator.is_main_process:
        summary = {
            "nadm_version": __version__,
            "step": state.step,
            "processes": accelerator.num_processes,
            "distributed": accelerator.distributed_type.value,
            "mixed_precision": accelerator.mixed_precision,
            "frozen_dtype": str(next(p.dtype for p in raw.unet.parameters() if not p.requires_grad)).removeprefix("torch."),
            "checkpoint": str(last_checkpoint) if last_checkpoint else None,
            "motion": str(last_checkpoint / EXPORT) if last_checkpoint else None,
            "rank_fingerprints": prints,
            "last": history[-1] if history else None,
        }
        (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        if last_checkpoint:
            say(f"done at step {state.step}; motion weights: {last_checkpoint / EXPORT}")
    accelerator.wait_for_everyone()
    return TrainResult(out, state.step, last_checkpoint, history, raw)


def _hparams(cfg: TrainConfig) -> dict:
    """The config flattened to TensorBoard's hparam types."""
    flat = _flatten(cfg.to_dict())
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in flat.items()}


def _diverged(values: torch.Tensor, step: int, last: Path | None, what: str | None = None) -> str:
    """The one-paragraph message of a run stopped by a NaN/inf."""
    diff, con, total = values.tolist()
    what = what or f"the loss {total} (diffusion {diff}, contrastive {con})"
    where = (
        f"the last good checkpoint is {last}: continue from it with --resume latest, perhaps with a lower --lr"
        if last
        else "no checkpoint had been written yet"
    )
    return f"training stopped at step {step}: {what} is not finite; nothing was saved after it; {where}"
