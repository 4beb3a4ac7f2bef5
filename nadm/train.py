"""Training NADM on accelerate (Sec. III-D3, IV-A1, Alg. 1): only the motion module and the noise adapter learn.

`train(config, output_dir)` runs Alg. 1's training loop on a frozen Stable Diffusion 1.5 with accelerate
(mixed precision, gradient accumulation, DDP under `accelerate launch`): nadm.train_step holds the trained
module and Alg. 1's step, nadm.train_data the batches, nadm.runfolder the output folder. Determinism: the data
order is a function of (seed, epoch), each clip's frames and caption dropout of (seed, epoch, index), the noise
and timesteps of (seed, step, micro-batch, rank). A resumed run skips the batches already seen, so it
reproduces the losses of an uninterrupted one.
"""

# accelerate and diffusers are imported inside functions: `nadm train` reports a config mistake before they load.

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from nadm import __version__
from nadm.base import load_base
from nadm.checkpoint import ADAPTER_FILE, MotionWeights, load_motion_source, load_noise_adapter, save_checkpoint
from nadm.config import (
    NADMConfig,
    TrainConfig,
    load_yaml,
    merge_dicts,
    save_train_config,
    set_dotted,
    to_dict,
    train_config_from_dict,
    train_preset,
)
from nadm.errors import NADMError, RunFailed
from nadm.losses import NoiseAdapter
from nadm.motion import (
    build_video_unet,
    check_compatible,
    check_state_dict,
    motion_shape_of,
    motion_state_dict,
    parameter_counts,
)
from nadm.motion_lora import (
    MotionLora,
    add_motion_lora,
    base_motion_state_dict,
    layers_from_trained,
    read_sidecar,
    save_motion_lora,
)
from nadm.runfolder import (
    CHECKPOINTS,
    EXPORT,
    LORA_EXPORT,
    RUN_CONFIG,
    SUMMARY,
    WEIGHTS,
    MetricsWindow,
    check_output,
    check_resumable,
    find_checkpoint,
    fingerprint,
    log_record,
    prune,
    read_trainable,
    start_metrics,
    state_files,
    validation_videos,
    write_checkpoint,
)
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

if TYPE_CHECKING:
    from accelerate import Accelerator
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from diffusers.training_utils import EMAModel
    from torch.optim.lr_scheduler import LRScheduler

    from nadm.base import BaseModel

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


class TrainingDiverged(RunFailed):
    """The loss or the gradient norm became NaN/inf: the run stops without saving anything after it (exit 3)."""


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
    if config.motion_lora.rank and config.init_motion is None:
        raise NADMError(
            "a motion LoRA trains on top of motion weights: pass --init-motion (an NADM checkpoint or AnimateDiff "
            "weights, e.g. guoyww/animatediff-motion-adapter-v1-5-2)"
        )
    if config.loss.lambda_con > 0 and config.data.frames < config.loss.m + 2:
        raise NADMError(
            f"with {config.data.frames} frames no two frames are more than loss.m={config.loss.m} apart, so the "
            f"contrastive loss has no negatives (Eq. 10): use >= {config.loss.m + 2} frames, a smaller loss.m, "
            "or loss.lambda_con 0"
        )
    return config


# ------------------------------------------------------------------------------------------ base, init weights


def load_frozen_base(config: TrainConfig) -> BaseModel:
    """SD 1.5's UNet, VAE, CLIP text encoder and tokenizer (Sec. III-C), frozen, from a hub id, a diffusers folder
    or a single file (+ base_config), through nadm.base."""
    return load_base(config.base, config=config.base_config)


def resolve_model_config(run_model: NADMConfig, unet2d: UNet2DConditionModel, init: MotionWeights | None = None) -> NADMConfig:
    """The run's motion config: the architecture from --init-motion weights when given, else the base UNet's
    (`motion_shape_of`) wherever the run leaves it at SD 1.5's defaults; attention types and the noise adapter
    always from the run (so an AnimateDiff init trains as NADM). Checked against the base UNet."""
    if init is not None:
        model = run_model.replace(**{name: getattr(init.config, name) for name in ARCHITECTURE_FIELDS})
    else:  # any diffusers UNet2DConditionModel: what the run did not set follows the base
        defaults, base = NADMConfig(), motion_shape_of(unet2d)
        model = run_model.replace(**{k: v for k, v in base.items() if getattr(run_model, k) == getattr(defaults, k)})
    try:
        check_compatible(unet2d, model)
    except ValueError as e:
        shape = ", ".join(f"model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in motion_shape_of(unet2d).items())
        raise NADMError(f"{e}; the base UNet needs {shape}: set these, or leave them unset to follow the base") from None
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


@dataclass
class Run:
    """A training run's state between its named steps: what accelerate prepared, and the run's bookkeeping."""

    accelerator: Accelerator
    cfg: TrainConfig  # with the motion architecture resolved (step 3)
    out: Path
    module: torch.nn.Module  # the NADMTrainModule as accelerate prepared it (DDP-wrapped where distributed)
    raw: NADMTrainModule  # the same module unwrapped
    parts: BaseModel  # the frozen VAE and text encoder (None with a latent cache); the UNet lives in `module`
    weight_dtype: torch.dtype  # the frozen weights' type: float32, or the mixed-precision half type
    optimizer: torch.optim.Optimizer
    lr_scheduler: LRScheduler
    ema: EMAModel | None
    noise_scheduler: DDPMScheduler  # the training forward process (Eq. 2)
    progress: _Progress = field(default_factory=_Progress)  # the optimisation step reached
    history: list[dict] = field(default_factory=list)  # the logged records
    last_checkpoint: Path | None = None
    window: MetricsWindow = field(default_factory=MetricsWindow)

    @property
    def step(self) -> int:
        return self.progress.step

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters the optimiser (and EMA) update, in a fixed order."""
        return [p for p in self.raw.parameters() if p.requires_grad]

    def say(self, message: str) -> None:
        _say(self.accelerator, message)


def _say(accelerator: Accelerator, message: str) -> None:
    """A console line from the main process that does not break the progress bar."""
    if accelerator.is_main_process:
        tqdm.write(message)


def _sharded(accelerator: Accelerator) -> bool:
    """Whether accelerate shards the model (FSDP, DeepSpeed): they save it and cast it by their own policies."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


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
        if resume_dir is not None:  # every file resuming reads is there and whole, before any model loads
            files = state_files(config.optim.ema, _sharded(accelerator), accelerator.scaler is not None)
            check_resumable(resume_dir, files, config.optim.ema, lora=config.motion_lora.rank > 0)
        return _run(accelerator, config, out, resume_dir, overwrite, progress)
    finally:
        accelerator.end_training()


def _run(accelerator: Accelerator, cfg: TrainConfig, out: Path, resume_dir: Path | None, overwrite: bool,
         progress: bool) -> TrainResult:  # fmt: skip
    """The body of `train`, numbered as it runs (step 1 is in `train`); nothing is written before step 8."""
    if cfg.optim.ema and _sharded(accelerator):
        raise NADMError("EMA is not supported with FSDP or DeepSpeed here: train with DDP, or without --ema")
    # 2. data, first: its mistakes show before any model loads
    dataset, sampler, loader = make_loader(accelerator, cfg)
    # 3-6. the frozen base, the trainable module, precision, the optimiser; prepared by accelerate
    run, loader = build_run(accelerator, cfg, out, loader, fresh=resume_dir is None)
    # 7. what a checkpoint holds; the resumed state
    register_checkpointing(run)
    if resume_dir is not None:
        resume(run, resume_dir)
    # 8. bookkeeping: the folder, the resolved config, the metrics history, TensorBoard
    start_bookkeeping(run, replace=resume_dir is None and overwrite)
    # 9. the loop: one optimisation step (Alg. 1 on `accum` micro-batches), then its log/checkpoint/validation
    batches = batch_stream(loader, sampler, dataset, accelerator, run.step * run.cfg.optim.gradient_accumulation_steps)
    run.last_checkpoint = resume_dir
    max_steps = run.cfg.optim.max_steps
    show = progress and accelerator.is_main_process
    bar = tqdm(total=max_steps, initial=run.step, desc="train", unit="step", disable=not show, dynamic_ncols=True)
    if run.step >= max_steps:
        run.say(f"already at step {run.step} (max_steps {max_steps}): nothing to train")
    run.module.train()
    run.window.restart_clock()
    while run.step < max_steps:
        means, grad_norm, lr = optimisation_step(run, batches)
        bar.update(1)
        after_step(run, means, grad_norm, lr, bar)
    bar.close()
    # 10. the end: the ranks' weights compared, the summary
    return finish(run)


# ------------------------------------------------------------------------------------------ steps 2-6: set up


def make_loader(accelerator: Accelerator, cfg: TrainConfig):
    """Step 2: the dataset, its order per epoch (a function of (seed, epoch)) and the DataLoader accelerate deals
    each process its batches from."""
    dataset = make_dataset(cfg)
    needed = cfg.optim.batch_size * accelerator.num_processes
    if len(dataset) < needed:
        raise NADMError(f"the dataset has {len(dataset)} clip(s), fewer than batch_size x processes = {needed}")
    sampler = EpochShuffleSampler(len(dataset), cfg.run.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.optim.batch_size, sampler=sampler, drop_last=True, num_workers=cfg.data.num_workers
    )
    return dataset, sampler, loader


def build_module(cfg: TrainConfig, fresh: bool, say=print):
    """Steps 3-4 of a run: the frozen base, the motion config and initial weights, the trainable module, freezing.

    Returns (config with the resolved motion architecture, base components, module, names of the parameters no
    gradient reaches and that stay frozen). `fresh=False` (resuming) skips --init-motion, which the checkpoint
    holds, except under a motion LoRA, which holds only the LoRA (the module's `base_fingerprint` identifies the
    motion weights it adapts).
    """
    # 3. frozen base, then the motion config and its initial weights
    parts = load_frozen_base(cfg)
    if cfg.data.latent_cache is not None:  # cached latents and text: the encoders are not needed
        parts.vae = parts.text_encoder = None
    lora = cfg.motion_lora
    needs_init = cfg.init_motion is not None and (fresh or lora.rank > 0)
    init = load_motion_source(cfg.init_motion, heads_from=cfg.model) if needs_init else None
    model_cfg = resolve_model_config(cfg.model, parts.unet, init)
    if model_cfg != cfg.model:
        changed = [f"{k}={getattr(model_cfg, k)!r}" for k in ARCHITECTURE_FIELDS
                   if getattr(model_cfg, k) != getattr(cfg.model, k)]  # fmt: skip
        source = f"--init-motion ({init.source_format})" if init is not None else "the base UNet"
        say(f"motion architecture from {source}: {', '.join(changed)}")
        cfg = cfg.replace(model=model_cfg)
    video_unet = build_video_unet(parts.unet, model_cfg, init.motion if init is not None else None)
    parts.unet = None  # the video UNet holds its own copy of these weights
    adapter = NoiseAdapter.from_config(model_cfg)
    if init is not None and init.noise_adapter is not None and fresh:
        load_noise_adapter(adapter, init.noise_adapter)
        say(f"noise adapter initialised from {init.source}")
    base_fingerprint = None
    if lora.rank:  # a LoRA on the attention projections learns; the motion module stays as --init-motion gave it
        base_fingerprint = fingerprint(motion_state_dict(video_unet))
        targets = add_motion_lora(video_unet, model_cfg, lora.rank, lora.scale_alpha)
        say(f"motion LoRA: rank {lora.rank}, alpha {lora.scale_alpha:g} on {len(targets)} attention projections of "
            f"the motion module from {cfg.init_motion} (frozen)")  # fmt: skip
    # 4. freeze SD; then also the motion parameters no gradient reaches under these attention types
    module, unused = trainable_module(video_unet, adapter, cfg.run.gradient_checkpointing, cfg.run.compile)
    module.base_fingerprint = base_fingerprint
    for part in (parts.vae, parts.text_encoder):
        if part is not None:
            part.requires_grad_(False).eval()
    return cfg, parts, module, unused


def build_run(accelerator: Accelerator, cfg: TrainConfig, out: Path, loader, fresh: bool):
    """Steps 3-6: the frozen base and the trainable module (the same fresh weights on every rank), precision, AdamW
    and its schedule, prepared by accelerate with the loader; optional EMA. Returns (the Run, the prepared loader)."""
    from accelerate.utils import set_seed

    # 3-4. the frozen base and the trainable module (`build_module`)
    set_seed(cfg.run.seed)
    cfg, parts, module, unused = build_module(cfg, fresh=fresh, say=lambda message: _say(accelerator, message))
    counts = parameter_counts(module)
    _say(
        accelerator,
        f"nadm {__version__}: {cfg.model.kind} (attn1={cfg.model.attn1}, attn2={cfg.model.attn2}); trainable "
        f"{counts['trainable'] / 1e6:.2f}M of {counts['total'] / 1e6:.2f}M parameters"
        + (f"; {len(unused)} tensors unused by these attention types stay frozen" if unused else ""),
    )
    # 5. precision
    weight_dtype = set_precision(accelerator, module, parts)
    # 6. AdamW with its schedule, prepared by accelerate; optional EMA
    optimizer, lr_scheduler = make_optimizer(accelerator, cfg, module)
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    raw = accelerator.unwrap_model(module)
    run = Run(accelerator, cfg, out, module, raw, parts, weight_dtype, optimizer, lr_scheduler, ema=None,
              noise_scheduler=make_noise_scheduler(cfg.noise))  # fmt: skip
    if cfg.optim.ema:
        from diffusers.training_utils import EMAModel

        run.ema = EMAModel(run.trainable, decay=cfg.optim.ema_decay)
        run.ema.to(accelerator.device)
    return run, loader


def set_precision(accelerator: Accelerator, module: NADMTrainModule, parts: BaseModel) -> torch.dtype:
    """Step 5: frozen weights in the half type, trainable ones float32 (AMP); SD's VAE stays float32 in fp16; the
    VAE and text encoder onto the device. Returns the frozen weights' dtype."""
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    if weight_dtype != torch.float32 and not _sharded(accelerator):  # FSDP/DeepSpeed cast by their own policies
        cast_frozen(module.unet, weight_dtype)
    for part in (parts.vae, parts.text_encoder):
        if part is not None:
            part.to(accelerator.device)
            if weight_dtype == torch.bfloat16 or (weight_dtype == torch.float16 and part is parts.text_encoder):
                cast_frozen(part, weight_dtype)
    return weight_dtype


def make_optimizer(accelerator: Accelerator, cfg: TrainConfig, module: NADMTrainModule):
    """Step 6: AdamW (fused where torch has it) on the trainable parameters, and its learning-rate schedule
    (linear warm-up into constant, linear or cosine)."""
    from diffusers.optimization import get_scheduler

    o = cfg.optim
    optimizer = torch.optim.AdamW(
        [p for p in module.parameters() if p.requires_grad],
        lr=o.learning_rate,
        betas=(o.adam_beta1, o.adam_beta2),
        eps=o.adam_epsilon,
        weight_decay=o.weight_decay,
        fused=accelerator.device.type in ("cuda", "cpu", "xpu") and not _sharded(accelerator),
    )
    schedule = "constant_with_warmup" if o.lr_scheduler == "constant" and o.warmup_steps else o.lr_scheduler
    lr_scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=o.warmup_steps, num_training_steps=o.max_steps)
    return optimizer, lr_scheduler


# ------------------------------------------------------------------------------------------ steps 7-8: state


def _drop_full_model(models: list, weights: list, directory: str) -> None:
    """accelerate's save hook: the NADM export (written by `_write_contents`) replaces accelerate's copy of the
    whole UNet (DDP and single process; under FSDP/DeepSpeed accelerate saves the model its own way as well)."""
    weights.clear()


def _load_trainable(raw: NADMTrainModule, models: list, directory: str) -> None:
    """accelerate's load hook: the trained weights back from the checkpoint's own files, strictly."""
    if not models:
        return  # FSDP/DeepSpeed: accelerate loads its own model files
    tensors = read_trainable(directory)
    check_state_dict({k: v.shape for k, v in raw.trainable_state_dict().items()}, tensors, f"the weights in {directory}")
    _, unexpected = raw.load_state_dict(tensors, strict=False)
    assert not unexpected, "the strict check above guarantees this"
    models.clear()


def register_checkpointing(run: Run) -> None:
    """Step 7: a checkpoint holds accelerate's state (optimizer, RNG), the LR schedule, the step, the EMA, and the
    trainable weights as an NADM export (the hooks above)."""
    run.accelerator.register_save_state_pre_hook(_drop_full_model)
    run.accelerator.register_load_state_pre_hook(functools.partial(_load_trainable, run.raw))
    run.accelerator.register_for_checkpointing(run.lr_scheduler, run.progress)
    if run.ema is not None:
        run.accelerator.register_for_checkpointing(run.ema)


def resume(run: Run, checkpoint: Path) -> None:
    """Step 7, resuming: the state of `checkpoint` (weights, optimizer, schedule, step, EMA, RNG); a motion LoRA
    only on the motion weights it was trained on."""
    if run.raw.lora:
        trained_on = read_sidecar(checkpoint / LORA_EXPORT).get("init_motion_fingerprint")
        if trained_on != run.raw.base_fingerprint:
            raise NADMError(
                f"--resume: the motion weights {run.cfg.init_motion} are not the ones the motion LoRA in {checkpoint} "
                "was trained on (their fingerprints differ); resume with the same --init-motion weights"
            )
    run.accelerator.load_state(str(checkpoint))
    run.say(f"resumed from {checkpoint} at step {run.step}")


def start_bookkeeping(run: Run, replace: bool) -> None:
    """Step 8: the run folder (an earlier run's deleted when `replace`), the resolved config, the metrics history
    cut back to the resumed step, TensorBoard."""
    accelerator, out = run.accelerator, run.out
    if accelerator.is_main_process:
        if replace and out.exists():
            shutil.rmtree(out)
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    run.history = start_metrics(accelerator, out, run.step)
    if accelerator.is_main_process:
        save_train_config(run.cfg, out / RUN_CONFIG)
    accelerator.init_trackers("nadm", config=_hparams(run.cfg))


# ------------------------------------------------------------------------------------------ step 9: the loop


def optimisation_step(run: Run, batches: Iterator[dict]) -> tuple[torch.Tensor, float | None, float]:
    """One optimisation step: Alg. 1's step (nadm.train_step) on each of `accum` micro-batches, gradients clipped,
    AdamW, the LR schedule and the EMA advanced. Returns the mean (diffusion, contrastive, total) losses, the
    gradient norm and the learning rate used; TrainingDiverged on a NaN/inf loss or gradient."""
    accelerator, cfg = run.accelerator, run.cfg
    accum, step = cfg.optim.gradient_accumulation_steps, run.step + 1
    means, grad_norm = torch.zeros(3, device=accelerator.device), None
    for micro in range(accum):
        batch = next(batches)
        with accelerator.accumulate(run.module):
            latents, text = batch_inputs(batch, run.parts, accelerator.device, run.weight_dtype)
            generator = step_generator(cfg.run.seed, step, micro, accelerator.process_index)
            losses = training_step(run.module, latents, text, generator, run.noise_scheduler, cfg.loss)
            # every rank sees the mean losses, so a NaN on any rank stops all of them together
            values = accelerator.reduce(torch.stack([losses.diffusion, losses.contrastive, losses.total]).detach(), "mean")
            if not torch.isfinite(values).all():
                raise TrainingDiverged(_diverged(values, step, run.last_checkpoint))
            means += values / accum
            accelerator.backward(losses.total)
            if accelerator.sync_gradients:
                grad_norm = _clip_gradients(run, values, step)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
    lr = run.lr_scheduler.get_last_lr()[0]
    run.lr_scheduler.step()
    if run.ema is not None:
        run.ema.step(run.trainable)
    run.progress.step = step
    return means, grad_norm, lr


def _clip_gradients(run: Run, values: torch.Tensor, step: int) -> float | None:
    """Clip the gradient norm to optim.max_grad_norm (0: measure only); a NaN/inf norm is fatal except under fp16,
    whose loss scaler skips such steps by itself."""
    accelerator = run.accelerator
    grad_norm = accelerator.clip_grad_norm_(run.module.parameters(), run.cfg.optim.max_grad_norm or float("inf"))
    fatal = accelerator.mixed_precision != "fp16"
    if grad_norm is not None and not math.isfinite(float(grad_norm)) and fatal:
        raise TrainingDiverged(_diverged(values, step, run.last_checkpoint, f"gradient norm {float(grad_norm)}"))
    return grad_norm


def after_step(run: Run, means: torch.Tensor, grad_norm, lr: float, bar) -> None:
    """After each optimisation step: a log record every run.log_every steps, a checkpoint every
    run.checkpoint_every, validation videos every validation.every, and each of them at the last step."""
    cfg, step = run.cfg, run.step
    last = step == cfg.optim.max_steps
    run.window.add(means, grad_norm)
    if step % cfg.run.log_every == 0 or last:
        samples = cfg.optim.batch_size * cfg.optim.gradient_accumulation_steps * run.accelerator.num_processes
        record = run.window.record(step, lr, samples)
        run.history.append(record)
        log_record(run.accelerator, run.out, record, bar)
    if step % cfg.run.checkpoint_every == 0 or last:
        run.last_checkpoint = checkpoint(run)
        run.window.restart_clock()
    if cfg.validation.every and (step % cfg.validation.every == 0 or last):
        validate(run)
        run.window.restart_clock()


def _trainable_weights(accelerator, module, ema=None, trainable=None, lora: bool = False) -> dict[str, torch.Tensor]:
    """The motion-module (with `lora`, motion-LoRA) and adapter weights (the EMA ones with `ema`), gathered whole
    where accelerate shards them (FSDP, DeepSpeed ZeRO-3): every rank must call it; copies on the CPU."""
    if ema is not None:
        ema.store(trainable)
        ema.copy_to(trainable)
    try:
        state = accelerator.get_state_dict(module)
        return {k: v.detach().to("cpu", copy=True) for k, v in state.items() if is_trainable_key(k, lora)}
    finally:
        if ema is not None:
            ema.restore(trainable)


def _split(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Trainable weights -> (motion modules keyed as a MotionAdapter-bearing UNet, noise adapter)."""
    motion = {k[len("unet."):]: v for k, v in weights.items() if k.startswith("unet.")}
    adapter = {k[len("adapter."):]: v for k, v in weights.items() if k.startswith("adapter.")}
    return motion, adapter


def _write_contents(run: Run, folder: Path) -> None:
    """A checkpoint's own files: the NADM export, or the motion-LoRA export and the noise adapter (EMA weights with
    EMA, the raw ones apart for resuming), the config."""
    lora = run.raw.lora
    weights = _trainable_weights(run.accelerator, run.module, lora=lora)
    export = weights if run.ema is None else _trainable_weights(run.accelerator, run.module, run.ema, run.trainable, lora)
    if run.accelerator.is_main_process:
        if run.ema is not None:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / WEIGHTS))
        motion, adapter = _split(export)
        extra = {"step": run.step, "ema": run.ema is not None, "train_config": run.cfg.to_dict()}
        if lora:
            extra.update(rank=run.cfg.motion_lora.rank, alpha=run.cfg.motion_lora.scale_alpha, init_motion=run.cfg.init_motion,
                         init_motion_fingerprint=run.raw.base_fingerprint, motion_config=to_dict(run.cfg.model))  # fmt: skip
            save_motion_lora(folder / LORA_EXPORT, layers_from_trained(motion, run.cfg.motion_lora.scale_alpha), extra)
            save_file({k: v.contiguous() for k, v in adapter.items()}, str(folder / ADAPTER_FILE))
        else:
            save_checkpoint(folder / EXPORT, run.cfg.model, motion, adapter, extra=extra, trained_frames=run.cfg.data.frames)
        save_train_config(run.cfg, folder / RUN_CONFIG)


def checkpoint(run: Run) -> Path:
    """Write checkpoint-<step> (whole or not at all, nadm.runfolder) and prune the oldest beyond the limit."""
    folder = write_checkpoint(run.accelerator, run.out, run.step, functools.partial(_write_contents, run))
    if run.accelerator.is_main_process:
        prune(run.out, run.cfg.run.checkpoints_total_limit)
    run.accelerator.wait_for_everyone()
    run.say(f"step {run.step}: checkpoint {folder}")
    return folder


def validate(run: Run) -> None:
    """Validation videos from the current (EMA) weights, sampled as at inference (nadm.runfolder); a motion LoRA is
    fused into the motion weights it adapts, as `nadm generate --motion-lora` would."""
    lora = run.raw.lora
    motion, _ = _split(_trainable_weights(run.accelerator, run.module, run.ema, run.trainable, lora))
    if run.accelerator.is_main_process:
        name, loras = f"{run.out} at step {run.step}", []
        if lora:
            layers = layers_from_trained(motion, run.cfg.motion_lora.scale_alpha)
            loras, motion = [MotionLora(layers, name, "diffusers")], base_motion_state_dict(run.raw.unet)
        weights = MotionWeights(run.cfg.model, motion, None, name, "nadm")
        folder = validation_videos(run.cfg, weights, run.out, run.step, run.accelerator.device, loras)
        run.say(f"step {run.step}: validation videos in {folder}")
    run.accelerator.wait_for_everyone()


# ------------------------------------------------------------------------------------------ step 10: the end


def finish(run: Run) -> TrainResult:
    """Step 10: every rank must hold the same weights (DDP keeps them in step); a summary for people and scripts."""
    accelerator, last = run.accelerator, run.last_checkpoint
    prints = None
    if not _sharded(accelerator):
        prints = accelerator.gather_for_metrics([fingerprint(run.raw.trainable_state_dict())], use_gather_object=True)
        if len(set(prints)) != 1:
            raise RunFailed(f"the ranks ended with different weights ({prints}): distributed training desynchronised")
    if accelerator.is_main_process:
        frozen = next(p.dtype for p in run.raw.unet.parameters() if not p.requires_grad)
        summary = {
            "nadm_version": __version__,
            "step": run.step,
            "processes": accelerator.num_processes,
            "distributed": accelerator.distributed_type.value,
            "mixed_precision": accelerator.mixed_precision,
            "frozen_dtype": str(frozen).removeprefix("torch."),
            "checkpoint": str(last) if last else None,
            "motion": str(last / EXPORT) if last and not run.raw.lora else None,
            "motion_lora": str(last / LORA_EXPORT) if last and run.raw.lora else None,
            "rank_fingerprints": prints,
            "last": run.history[-1] if run.history else None,
        }
        (run.out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        if last and run.raw.lora:
            run.say(f"done at step {run.step}; motion LoRA: {last / LORA_EXPORT} (for --motion {run.cfg.init_motion})")
        elif last:
            run.say(f"done at step {run.step}; motion weights: {last / EXPORT}")
    accelerator.wait_for_everyone()
    return TrainResult(run.out, run.step, last, run.history, run.raw)


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
