"""A training run's folder (Sec. IV-A1 runs): checkpoints, the metrics log, validation videos and the summary.

    DIR/train_config.yaml                  the resolved TrainConfig (defaults <- preset <- file <- flags)
    DIR/metrics.jsonl                      one record per logged step: losses, lr, grad norm, throughput
    DIR/logs/nadm/events.out.tfevents.*    the same in TensorBoard (accelerate's tracker)
    DIR/checkpoints/checkpoint-000100/     accelerate `save_state` (optimizer, scheduler, RNG, EMA, step) plus
        nadm/                              the motion module + noise adapter as an NADM checkpoint (SD's frozen
                                           weights are not saved): `nadm generate --motion .../checkpoint-000100/nadm`
        motion_lora/                       instead of nadm/ in a motion-LoRA run: the LoRA in diffusers' layout +
                                           its sidecar (`nadm generate --motion INIT --motion-lora .../motion_lora`)
        noise_adapter.safetensors          beside motion_lora/: the noise adapter, for resuming
        trainable_weights.safetensors      with EMA only: the raw trained weights (nadm/ then holds the EMA ones)
        train_config.yaml                  the config again, beside the weights
    DIR/validation/step-000100/*.mp4       validation videos (fixed prompts and seeds) with JSON sidecars
    DIR/summary.json                       written when the run ends

A checkpoint is written into a hidden `.checkpoint-N.partial` folder and renamed into place when complete, so
every visible `checkpoint-N` folder is whole; a run that fails leaves the last one untouched.
"""

# accelerate is imported inside a function: `nadm train` finds its checkpoint and checks its config before it loads.

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from nadm.checkpoint import ADAPTER_FILE, load_checkpoint
from nadm.errors import NADMError
from nadm.motion_lora import LORA_FILE, SIDECAR, read_motion_lora, trained_keys
from nadm.outputs import foreign_file, safe_replace
from nadm.pipeline import NADMPipeline, save_result
from nadm.weights import read_weights

RUN_CONFIG = "train_config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
EXPORT = "nadm"
LORA_EXPORT = "motion_lora"  # a motion-LoRA run's export (nadm.motion_lora), in place of EXPORT
WEIGHTS = "trainable_weights.safetensors"


# ------------------------------------------------------------------------------------------ checkpoints


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("checkpoint-") and p.name[11:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[11:]))


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = checkpoints(output_dir)
    return found[-1] if found else None


def find_checkpoint(output_dir: str | os.PathLike, resume: str) -> Path:
    """The checkpoint `--resume` names: 'latest' (in the output folder), `checkpoint-N` (in the output folder), a
    checkpoint folder or another run's folder."""
    if resume == "latest":
        found = latest_checkpoint(output_dir)
        if found is None:
            raise NADMError(f"--resume latest: no checkpoint in {Path(output_dir) / CHECKPOINTS}")
        return found.resolve()
    path = Path(resume).expanduser()
    if not path.exists() and re.fullmatch(r"checkpoint-\d+", resume):  # a name in this run's checkpoints folder
        path = Path(output_dir) / CHECKPOINTS / f"checkpoint-{int(resume[11:]):06d}"
    if (path / CHECKPOINTS).is_dir() and not (path / RUN_CONFIG).is_file():
        found = latest_checkpoint(path)
        if found is None:
            raise NADMError(f"--resume {resume}: no checkpoint in {path / CHECKPOINTS}")
        return found.resolve()
    if not ((path / EXPORT).is_dir() or (path / LORA_EXPORT).is_dir()) or not (path / RUN_CONFIG).is_file():
        raise NADMError(
            f"--resume {resume}: not a training checkpoint (expected {EXPORT}/ or {LORA_EXPORT}/, and {RUN_CONFIG} in it)"
        )
    return path.resolve()


def read_trainable(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint's trained weights as the training module's keys (`unet.<motion>`, `adapter.<...>`): the raw
    ones (trainable_weights.safetensors) when EMA wrote them apart, else the NADM (or motion-LoRA) export's."""
    folder = Path(folder)
    if (folder / WEIGHTS).is_file():
        return load_file(str(folder / WEIGHTS))
    if (folder / LORA_EXPORT).is_dir():
        lora = trained_keys(read_motion_lora(str(folder / LORA_EXPORT)).layers)
        adapter = read_weights(folder / ADAPTER_FILE)
        return {**{f"unet.{k}": v for k, v in lora.items()}, **{f"adapter.{k}": v for k, v in adapter.items()}}
    export = load_checkpoint(folder / EXPORT)
    if export.noise_adapter is None:
        raise NADMError(f"{folder / EXPORT} has no noise adapter: it cannot resume training")
    motion = {f"unet.{k}": v for k, v in export.motion.items()}
    return {**motion, **{f"adapter.{k}": v for k, v in export.noise_adapter.items()}}


# What `accelerator.load_state` reads from a checkpoint besides our own files: the optimizer (DDP and single
# process), the fp16 loss scaler, and the registered objects (LR schedule, step, EMA); name -> torch.load weights_only.
# The RNG states are left out: accelerate loads them only where it can, and nadm's noise does not depend on them.
def state_files(ema: bool, sharded: bool, scaler: bool) -> dict[str, bool]:
    """The accelerate files a resumed run loads, mapped to whether accelerate loads them weights-only."""
    from accelerate.utils.constants import OPTIMIZER_NAME, SCALER_NAME

    files = {} if sharded else {f"{OPTIMIZER_NAME}.bin": True}
    if scaler:
        files[SCALER_NAME] = True
    files.update({f"custom_checkpoint_{i}.pkl": False for i in range(2 + ema)})  # accelerate's save_custom_state
    return files


def checkpoint_problem(folder: Path, files: dict[str, bool], ema: bool, lora: bool = False) -> str | None:
    """Why `folder` cannot resume training (its first missing, truncated or unreadable file), or None: accelerate's
    files through accelerate's own loader, the weights through their headers (which cover the whole file)."""
    from accelerate.utils import load

    if lora:
        config, weights = f"{LORA_EXPORT}/{SIDECAR}", [f"{LORA_EXPORT}/{LORA_FILE}", ADAPTER_FILE]
    else:
        config, weights = f"{EXPORT}/config.json", [f"{EXPORT}/motion_modules.safetensors", f"{EXPORT}/{ADAPTER_FILE}"]
    weights = [WEIGHTS] if ema else weights
    for name in [*files, RUN_CONFIG, config, *weights]:
        if not (folder / name).is_file():
            return f"{name} is missing"
    for name in [*files, *weights]:
        try:
            if name.endswith(".safetensors"):
                with safe_open(str(folder / name), framework="pt"):
                    pass
            else:
                load(folder / name, map_location="cpu", weights_only=files[name])
        except (OSError, RuntimeError, EOFError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            return f"{name} is truncated or unreadable ({reason})"
    return None


def damaged_checkpoint(folder: Path, problem: str, files: dict[str, bool], ema: bool, lora: bool = False) -> NADMError:
    """The one-line error for a checkpoint that cannot resume: what is wrong, and the newest earlier checkpoint of
    the same run that is whole (`--resume checkpoint-N`), if any."""
    step = int(folder.name[11:]) if folder.name[11:].isdigit() else None
    earlier = [c for c in reversed(checkpoints(folder.parent.parent)) if step is None or int(c.name[11:]) < step]
    good = next((c for c in earlier if checkpoint_problem(c, files, ema, lora) is None), None)
    offer = (
        f"resume from the previous complete one with --resume {good.name} ({good})"
        if good is not None
        else "no earlier checkpoint of this run is complete: start over with --overwrite"
    )
    return NADMError(f"the checkpoint {folder} is damaged: {problem}; {offer}")


def check_resumable(folder: Path, files: dict[str, bool], ema: bool, lora: bool = False) -> None:
    """NADMError (`damaged_checkpoint`) unless every file resuming from `folder` reads is present and whole."""
    problem = checkpoint_problem(folder, files, ema, lora)
    if problem is not None:
        raise damaged_checkpoint(folder, problem, files, ema, lora)


def check_output(out: Path, resume: Path | None, overwrite: bool) -> None:
    """NADMError unless the output folder may be used: new or empty, resumed, or --overwrite of an earlier run."""
    if out.exists() and not out.is_dir():
        raise NADMError(f"--output {out} is a file")
    if resume is not None and overwrite:
        raise NADMError("--resume and --overwrite exclude each other")
    nonempty = out.is_dir() and any(out.iterdir())
    if resume is not None:
        if nonempty and out.resolve() not in resume.resolve().parents:
            raise NADMError(f"--output {out} is not empty and the checkpoint {resume} belongs to another run")
        return
    if nonempty and not overwrite:
        raise NADMError(
            f"--output {out} is not empty: pass --resume latest to continue its run or --overwrite to start over"
        )
    if nonempty and not (out / RUN_CONFIG).is_file():
        raise NADMError(f"--output {out} is not an nadm training folder (no {RUN_CONFIG}); refusing to delete it")
    foreign = foreign_file(out) if nonempty else None
    if foreign is not None:
        raise NADMError(f"--output {out} holds {foreign}, which nadm did not write; refusing to delete it")


def write_checkpoint(accelerator, out: Path, step: int, write_contents) -> Path:
    """accelerate's state and `write_contents(folder)` into a hidden folder, renamed to `checkpoint-<step>` when
    complete (an existing one of an abandoned continuation is replaced); older ones pruned by `prune`."""
    root = out / CHECKPOINTS
    name = f"checkpoint-{step:06d}"
    partial, final = root / f".{name}.partial", root / name
    # 1. a clean partial folder that every rank can write its RNG state into
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    # 2. optimizer, scheduler, RNG, registered objects; then our own files
    accelerator.save_state(str(partial))
    write_contents(partial)
    accelerator.wait_for_everyone()
    # 3. into place
    if accelerator.is_main_process:
        safe_replace(partial, final, overwrite=True)
    accelerator.wait_for_everyone()
    return final


def prune(out: Path, keep: int | None) -> list[Path]:
    """Delete all but the newest `keep` checkpoints (None: keep all); returns the deleted ones."""
    if keep is None:
        return []
    old = checkpoints(out)[:-keep]
    for path in old:
        shutil.rmtree(path)
    return old


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and bytes of a state dict (to compare weights across ranks and files)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ metrics


class MetricsWindow:
    """Losses and timing since the last log record; throughput excludes checkpoint and validation time."""

    def __init__(self):
        self.sums, self.steps, self.grad_norm = None, 0, None
        self.start = time.perf_counter()

    def add(self, values: torch.Tensor, grad_norm) -> None:
        """One optimisation step's mean (diffusion, contrastive, total) losses and its gradient norm."""
        self.sums = values if self.sums is None else self.sums + values
        self.steps += 1
        if grad_norm is not None:
            self.grad_norm = float(grad_norm)

    def restart_clock(self) -> None:
        """Start timing afresh (after a checkpoint or validation)."""
        self.start = time.perf_counter()

    def record(self, step: int, lr: float, samples_per_step: int) -> dict:
        """The window's means and throughput as one log record; the window starts over."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        diff, con, total = (self.sums / self.steps).tolist()
        record = {
            "step": step,
            "loss": total,
            "loss_diffusion": diff,
            "loss_contrastive": con,
            "lr": lr,
            "grad_norm": self.grad_norm,
            "steps_per_s": self.steps / elapsed,
            "samples_per_s": self.steps * samples_per_step / elapsed,
        }
        self.sums, self.steps = None, 0
        self.restart_clock()
        return record


def log_record(accelerator, out: Path, record: dict, bar) -> None:
    """One record to TensorBoard (accelerate's tracker), DIR/metrics.jsonl and the progress bar."""
    scalars = {
        "loss/total": record["loss"],
        "loss/diffusion": record["loss_diffusion"],
        "loss/contrastive": record["loss_contrastive"],
        "lr": record["lr"],
        "throughput/steps_per_s": record["steps_per_s"],
        "throughput/samples_per_s": record["samples_per_s"],
    }
    if record["grad_norm"] is not None:
        scalars["grad_norm"] = record["grad_norm"]
    accelerator.log(scalars, step=record["step"])
    if accelerator.is_main_process:
        with open(out / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        bar.set_postfix(
            loss=f"{record['loss']:.4f}",
            diff=f"{record['loss_diffusion']:.4f}",
            con=f"{record['loss_contrastive']:.3f}",
            lr=f"{record['lr']:.2e}",
            samples_s=f"{record['samples_per_s']:.2f}",
        )


def start_metrics(accelerator, out: Path, step: int) -> list[dict]:
    """The logged history up to `step`; later records (an abandoned continuation's) are dropped from the file."""
    path = out / METRICS
    history = []
    if path.is_file():
        history = [r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r["step"] <= step]
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        path.write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")
    return history


def read_metrics(output_dir: str | os.PathLike) -> list[dict]:
    """DIR/metrics.jsonl as a list of records."""
    path = Path(output_dir) / METRICS
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


# ------------------------------------------------------------------------------------------ validation


def validation_videos(config, motion_weights, out: Path, step: int, device, motion_loras=()) -> Path:
    """One clip per fixed prompt and seed from the frozen base + `motion_weights` (+ `motion_loras`), sampled as at
    inference (DDIM, guidance; Sec. IV-A2) by nadm.pipeline, written to DIR/validation/step-<step>/."""
    folder = out / "validation" / f"step-{step:06d}"
    v = config.validation
    size = v.resolution or config.data.resolution
    pipe = NADMPipeline.from_pretrained(
        config.base, motion=motion_weights, base_config=config.base_config, device=device, progress=False,
        motion_loras=motion_loras,
    )
    for i, prompt in enumerate(v.prompts):
        for seed in v.seeds:
            result = pipe(
                prompt, num_frames=v.frames or config.data.frames, height=size, width=size, steps=v.steps,
                guidance=v.guidance, seed=seed, interpolate=v.interpolate, progress=False,
            )  # fmt: skip
            save_result(result, folder / f"prompt{i}-seed{seed}.mp4", overwrite=True)
    del pipe
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return folder
