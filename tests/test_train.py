"""Training (issue 5, items 4-5): `nadm train` on accelerate with a tiny random SD, on videos written here."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nadm.cli import main
from nadm.config import TRAIN_PRESETS, LossConfig, NoiseScheduleConfig, TrainConfig, load_train_config
from nadm.errors import NADMError
from nadm.io import write_video
from nadm.runfolder import EXPORT, WEIGHTS, checkpoints, fingerprint, read_metrics, read_trainable
from nadm.train import resolve_config, train

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = {
    "model": {
        "block_out_channels": [32, 64],
        "motion_layers_per_block": 1,
        "motion_num_attention_heads": 2,
        "motion_norm_num_groups": 8,
        "adapter_grid": 4,
        "adapter_hidden": 32,
        "adapter_dim": 16,
    },
    "data": {"frames": 4, "stride": 2, "resolution": 32, "empty_caption_prob": 0.2},
    "loss": {"m": 1},  # 4 frames: with the paper's m = 4 no frame would have a negative
    "optim": {"learning_rate": 1.0e-3},
    "run": {"log_every": 1, "checkpoint_every": 3},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny models


def moving_clip(n: int, channel: int, speed: int, h: int = 40, w: int = 48) -> np.ndarray:
    """n frames of stripes drifting sideways in one colour channel."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        frames[t, ..., channel] = (127 + 100 * np.sin((xx + yy // 4 + speed * t) / 5)).astype(np.uint8)
    return frames


def make_dataset(root: Path, clips: int = 3, frames: int = 12) -> Path:
    """ROOT/videos/clipK.mp4 (written with PyAV through nadm.io) + ROOT/captions.csv."""
    rows = ["video,caption"]
    for k in range(clips):
        write_video(moving_clip(frames, k % 3, k + 1), root / "videos" / f"clip{k}.mp4", fps=8)
        rows.append(f"clip{k}.mp4,stripes drifting number {k}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny base, a 3-clip dataset, a 1-clip dataset (one fixed clip) and the tiny run's YAML config."""
    from nadm.tiny import build_tiny_base

    root = tmp_path_factory.mktemp("train")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    return {
        "root": root,
        "base": build_tiny_base(root / "base"),
        "data": make_dataset(root / "data"),
        "config": config,
    }


def tiny_config(env, **overrides) -> TrainConfig:
    """The tiny run's config with `section.key` overrides."""
    return resolve_config(config_file=env["config"], overrides={"base": str(env["base"]), "data.root": str(env["data"]), **overrides})


def run_cli(*args) -> int:
    """`nadm ...` in process; the exit status (0 when it returns)."""
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code
    return 0


def cli_train(env, out, *extra) -> int:
    return run_cli("train", "--config", env["config"], "--base", env["base"], "--data", env["data"], "-o", out, "--quiet", *extra)


# ------------------------------------------------------------------------------------------ configs


def test_paper_preset_is_sec_iv_a1_and_config_files_match_presets():
    paper = TrainConfig()
    assert (paper.data.frames, paper.data.stride, paper.data.resolution) == (8, 4, 256)
    assert (paper.optim.batch_size, paper.optim.learning_rate, paper.optim.max_steps) == (1, 1e-5, 40_000)
    assert (paper.loss.m, paper.loss.tau, paper.loss.lambda_diff, paper.loss.lambda_con, paper.loss.positive) == (4, 0.07, 1.0, 0.07, "next")
    assert (paper.noise.beta_schedule, paper.noise.beta_start, paper.noise.beta_end) == ("linear", 0.00085, 0.012)
    assert (paper.noise.num_train_timesteps, paper.noise.prediction_type) == (1000, "epsilon")
    assert (paper.model.attn1, paper.model.attn2) == ("versatile", "sparse_causal")
    data = {"data.root": "/nowhere"}
    assert resolve_config(preset="paper", overrides=data) == resolve_config(config_file=REPO / "configs" / "paper.yaml", overrides=data)
    assert load_train_config(REPO / "configs" / "paper.yaml") == paper
    for name in TRAIN_PRESETS:
        if name != "paper":
            file = REPO / "configs" / "ablations" / f"{name}.yaml"
            file = file if file.is_file() else REPO / "configs" / f"{name}.yaml"  # presets that are not ablations
            assert resolve_config(preset=name, overrides=data) == resolve_config(config_file=file, overrides=data), name
    assert resolve_config(preset="no-versatile", overrides=data).model.attn1 == "off"
    assert resolve_config(preset="no-sparse-causal", overrides=data).model.attn2 == "off"
    assert resolve_config(preset="no-contrastive", overrides=data).loss.lambda_con == 0
    assert resolve_config(preset="positive-window", overrides=data).loss.positive == "window"
    assert [resolve_config(preset=f"m{m}", overrides=data).loss.m for m in (2, 3, 5, 6)] == [2, 3, 5, 6]


def test_config_layers_and_strictness(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("optim:\n  learning_rate: 3.0e-5\n  max_steps: 100\nloss:\n  m: 3\n")
    cfg = resolve_config(preset="positive-window", config_file=file, overrides={"optim.max_steps": 7, "data.root": "x"})
    assert (cfg.loss.positive, cfg.loss.m, cfg.optim.learning_rate, cfg.optim.max_steps) == ("window", 3, 3e-5, 7)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    file.write_text("optim:\n  lr: 1\n")
    with pytest.raises(NADMError, match="unknown key.*lr"):
        resolve_config(config_file=file, overrides={"data.root": "x"})
    for key, value, message in [
        ("optim.ema", "yes", "ema must be bool"),
        ("data.frames", "8", "frames must be int"),
        ("loss.positive", "prev", "positive must be one of"),
        ("model.attn2", "causal", "attn2 must be one of"),
        ("colour", 1, "unknown key"),
    ]:
        with pytest.raises(NADMError, match=message):
            resolve_config(overrides={"data.root": "x", key: value})
    with pytest.raises(NADMError, match="no training data"):
        resolve_config()
    with pytest.raises(NADMError, match="no negatives"):  # 4 frames, m = 4: L_con would be identically 0
        resolve_config(overrides={"data.root": "x", "data.frames": 4})


def test_cli_refuses_user_mistakes_with_one_line(env, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli_train(env, out) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and len(err.strip().splitlines()) == 1
    assert cli_train(env, out, "--overwrite") == 2  # not a training folder: never deleted
    assert "refusing to delete" in capsys.readouterr().err and (out / "notes.txt").is_file()
    assert cli_train(env, tmp_path / "new", "--resume", "latest") == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli_train(env, tmp_path / "new", "--set", "optim.lr=1") == 2
    assert "unknown key" in capsys.readouterr().err
    assert cli_train(env, tmp_path / "r2", "--data", tmp_path / "nodata") == 2
    assert "nodata" in capsys.readouterr().err
    # a motion module shape set explicitly that does not fit the tiny base: said before anything is written
    args = ("--base", env["base"], "--data", env["data"], "--frames", 4, "--stride", 2, "--set", "loss.m=1", "-o", tmp_path / "r3",
            "--set", "model.block_out_channels=[64, 128]")  # fmt: skip
    assert run_cli("train", *args, "--quiet") == 2
    assert "block_out_channels" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("new", "r2", "r3"))


def test_a_base_of_another_shape_gives_the_motion_module_its_shape(env, tmp_path, capsys):
    """Issue 12: on a base UNet that is not SD 1.5's shape (the tiny one), the motion module takes the base's block
    widths, layers per block and GroupNorm groups, and says so; nothing to set by hand."""
    from nadm.checkpoint import load_checkpoint

    out = tmp_path / "fit"
    args = ("--base", env["base"], "--data", env["data"], "--frames", 4, "--stride", 2, "--resolution", 32,
            "--set", "loss.m=1", "--max-steps", 1, "-o", out, "--quiet")  # fmt: skip
    assert run_cli("train", *args) == 0, capsys.readouterr().err
    said = "motion architecture from the base UNet: block_out_channels=(32, 64), motion_layers_per_block=1, motion_norm_num_groups=8"
    assert said in capsys.readouterr().out
    export = load_checkpoint(checkpoints(out)[-1] / EXPORT)
    model = export.config
    assert (model.block_out_channels, model.motion_layers_per_block, model.motion_norm_num_groups) == ((32, 64), 1, 8)
    assert model.motion_num_attention_heads == 8  # not fixed by the base: the run's (default) value
    assert load_train_config(out / "train_config.yaml").model == model


# ------------------------------------------------------------------------------------------ a short run


def test_short_run_logs_exports_and_keeps_sd_frozen(env, tmp_path, capsys):
    from diffusers import UNet2DConditionModel
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nadm.checkpoint import load_checkpoint

    cfg = tiny_config(env, **{"optim.max_steps": 4})
    result = train(cfg, tmp_path / "run", progress=False)
    out = result.output_dir
    # 1. losses finite, logged to metrics.jsonl and TensorBoard
    history = read_metrics(out)
    assert [r["step"] for r in history] == [1, 2, 3, 4] and history == result.history
    for r in history:
        assert all(np.isfinite(r[k]) for k in ("loss", "loss_diffusion", "loss_contrastive", "lr", "samples_per_s"))
        assert r["loss_contrastive"] > 0 and r["loss"] == pytest.approx(r["loss_diffusion"] + 0.07 * r["loss_contrastive"], rel=1e-5)
    events = EventAccumulator(str(out / "logs" / "nadm"))
    events.Reload()
    for tag, key in [("loss/total", "loss"), ("loss/diffusion", "loss_diffusion"), ("loss/contrastive", "loss_contrastive"),
                     ("lr", "lr"), ("throughput/samples_per_s", "samples_per_s")]:  # fmt: skip
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3, 4]
        assert [e.value for e in logged] == pytest.approx([r[key] for r in history], rel=1e-6)
    # 2. checkpoints at 3 and at the end, each with the resolved config and an NADM export
    assert [p.name for p in checkpoints(out)] == ["checkpoint-000003", "checkpoint-000004"]
    assert result.checkpoint == checkpoints(out)[-1] and result.step == 4
    assert load_train_config(out / "train_config.yaml") == cfg == load_train_config(result.checkpoint / "train_config.yaml")
    export = load_checkpoint(result.checkpoint / EXPORT)
    assert export.config == cfg.model and export.config.attn2 == "sparse_causal"
    weights = result.module.trainable_state_dict()
    assert all(torch.equal(export.motion[k], weights["unet." + k]) for k in export.motion)
    assert all(torch.equal(export.noise_adapter[k], weights["adapter." + k]) for k in export.noise_adapter)
    assert not (result.checkpoint / WEIGHTS).exists()  # without EMA the export is the one copy of the weights
    assert read_trainable(result.checkpoint).keys() == weights.keys()
    assert not any(p.name.startswith(".") for p in (out / "checkpoints").iterdir())
    # 3. SD's weights bitwise unchanged and frozen; the motion module did train (its zero output projections moved)
    unet2d = UNet2DConditionModel.from_pretrained(env["base"], subfolder="unet")
    video = result.module.unet.state_dict()
    assert all(torch.equal(video[k], v) for k, v in unet2d.state_dict().items())
    assert not any(p.requires_grad for n, p in result.module.unet.named_parameters() if "motion_modules" not in n)
    assert any(k.endswith("proj_out.weight") and v.abs().sum() > 0 for k, v in export.motion.items())
    # 4. the export samples with `nadm generate --motion`
    video_path = tmp_path / "clip.mp4"
    code = run_cli("generate", "stripes drifting", "--base", env["base"], "--motion", result.checkpoint / EXPORT, "-o", video_path,
                   "--frames", 4, "--height", 32, "--width", 32, "--steps", 2, "--seed", 0, "--no-interpolate", "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert video_path.is_file() and json.loads(Path(f"{video_path}.json").read_text())["motion"]["kind"] == "nadm"


def test_compiled_checkpointed_training_follows_the_eager_run_and_exports_the_same_keys(env, tmp_path):
    """`--compile --gradient-checkpointing` (both in place): the eager run's losses up to float reassociation, and
    checkpoints keyed as eager."""
    from nadm.checkpoint import load_checkpoint

    eager = train(tiny_config(env, **{"optim.max_steps": 2}), tmp_path / "eager", progress=False)
    fast = {"optim.max_steps": 2, "run.compile": True, "run.gradient_checkpointing": True}
    compiled = train(tiny_config(env, **fast), tmp_path / "compiled", progress=False)
    assert compiled.module._compiled_call_impl is not None and eager.module._compiled_call_impl is None
    assert any(type(m).__name__ == "CheckpointWrapper" for m in compiled.module.modules())
    for key in ("loss", "loss_diffusion", "loss_contrastive"):
        assert [r[key] for r in compiled.history] == pytest.approx([r[key] for r in eager.history], rel=1e-3)
    got = load_checkpoint(compiled.checkpoint / EXPORT)
    want = load_checkpoint(eager.checkpoint / EXPORT)
    assert got.motion.keys() == want.motion.keys() and got.noise_adapter.keys() == want.noise_adapter.keys()
    assert all(torch.allclose(got.motion[k], want.motion[k], atol=1e-4) for k in want.motion)


def test_checkpointing_recomputes_the_same_step_and_keeps_the_keys():
    """Gradient checkpointing (diffusers' plus every motion module) changes memory, not the step or the keys."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    from nadm.losses import NoiseAdapter
    from nadm.motion import build_video_unet
    from nadm.tiny import TINY_MOTION, tiny_unet
    from nadm.train_step import make_noise_scheduler, step_generator, trainable_module, training_step

    g = torch.Generator().manual_seed(1)
    latents, text = torch.randn(2, 4, 4, 4, 4, generator=g), torch.randn(2, 77, 32, generator=g)
    scheduler, loss_cfg = make_noise_scheduler(NoiseScheduleConfig()), LossConfig(m=1)
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        adapter = NoiseAdapter.from_config(TINY_MOTION)
        module, _ = trainable_module(build_video_unet(tiny_unet(), TINY_MOTION), adapter, checkpointing)
        module.train()
        losses = training_step(module, latents, text, step_generator(0, 1, 0, 0), scheduler, loss_cfg)
        losses.total.backward()
        grads = {n.replace("_checkpoint_wrapped_module.", ""): p.grad for n, p in module.named_parameters() if p.requires_grad}
        wrapped = sum(type(m).__name__ == "CheckpointWrapper" for m in module.modules())
        results.append((losses.total.item(), grads, module.state_dict().keys(), wrapped))
    (loss, grads, keys, none), (loss_c, grads_c, keys_c, wrapped) = results
    motion_modules = sum(isinstance(m, AnimateDiffTransformer3D) for m in build_video_unet(tiny_unet(), TINY_MOTION).modules())
    assert none == 0 and wrapped == motion_modules > 0
    assert list(keys_c) == list(keys) and loss_c == pytest.approx(loss, rel=1e-6)
    assert grads_c.keys() == grads.keys() and all(torch.allclose(grads_c[n], grads[n], atol=1e-6) for n in grads)


def test_contrastive_loss_falls_on_a_fixed_batch():
    """Alg. 1's step, repeated on one fixed batch (latents, noise, t): L_con falls; with lambda_con = 0 it does not."""
    from nadm.losses import NoiseAdapter
    from nadm.motion import build_video_unet, freeze_for_training
    from nadm.tiny import TINY_MOTION, tiny_unet
    from nadm.train_step import NADMTrainModule, make_noise_scheduler, step_generator, training_step

    def run(lambda_con: float) -> list[float]:
        torch.manual_seed(0)
        module = NADMTrainModule(build_video_unet(tiny_unet(), TINY_MOTION), NoiseAdapter.from_config(TINY_MOTION))
        freeze_for_training(module.unet, module.adapter)
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        g = torch.Generator().manual_seed(1)
        latents, text = torch.randn(2, 4, 4, 4, 4, generator=g), torch.randn(2, 77, 32, generator=g)  # 2 videos, 4 frames
        scheduler, loss_cfg = make_noise_scheduler(NoiseScheduleConfig()), LossConfig(m=1, lambda_con=lambda_con)
        values = []
        for _ in range(50):
            losses = training_step(module, latents, text, step_generator(0, 1, 0, 0), scheduler, loss_cfg)
            optimizer.zero_grad()
            losses.total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            values.append(losses.contrastive.item())
        return values

    with_con, without = run(0.07), run(0.0)
    assert with_con[0] == without[0]  # the same start
    assert np.mean(with_con[-5:]) < 0.1 * with_con[0]
    assert np.mean(without[-5:]) > 0.5 * without[0]


# ------------------------------------------------------------------------------------------ resume, scale-out, NaN


def test_resume_reproduces_the_uninterrupted_run(env, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    ema = ("--ema", "--set", "optim.ema_decay=0.5")  # the EMA must carry over too
    assert cli_train(env, whole, "--max-steps", 6, *ema) == 0
    # stopped after step 2 (mid-epoch: 3 clips, one per step), then after step 4 (the next epoch), then to the end
    assert cli_train(env, parts, "--max-steps", 2, *ema) == 0
    assert cli_train(env, parts, "--max-steps", 4, "--resume", "latest", *ema) == 0
    assert cli_train(env, parts, "--max-steps", 6, "--resume", "latest", *ema) == 0
    a, b = read_metrics(whole), read_metrics(parts)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "loss_diffusion", "loss_contrastive", "lr", "grad_norm"):
        assert [r[key] for r in a] == [r[key] for r in b], key  # bitwise: the same data, noise, t and weights
    assert a[3]["loss"] != a[4]["loss"]  # steps differ from each other, so the equality above says something
    from nadm.checkpoint import load_checkpoint

    end = "checkpoints/checkpoint-000006"
    assert fingerprint(read_trainable(whole / end)) == fingerprint(read_trainable(parts / end))  # raw weights
    a_ema, b_ema = load_checkpoint(whole / end / EXPORT), load_checkpoint(parts / end / EXPORT)  # EMA weights
    assert fingerprint(a_ema.motion) == fingerprint(b_ema.motion) != fingerprint(_split_motion(read_trainable(whole / end)))
    # a resumed run may not change the recipe
    assert cli_train(env, parts, "--max-steps", 8, "--resume", "latest", "--lr", "0.5", *ema) == 2


def _split_motion(trainable: dict) -> dict:
    return {k[len("unet."):]: v for k, v in trainable.items() if k.startswith("unet.")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_end_with_identical_weights(env, tmp_path):
    """DDP on two CPU processes (gloo), launched as `accelerate launch` does on GPUs: torch's elastic launcher;
    with bf16 autocast and gradient checkpointing (a fresh process: accelerate fixes the precision per process)."""
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
               "-m", "nadm", "train", "--config", str(env["config"]), "--base", str(env["base"]), "--data", str(env["data"]),
               "-o", str(out), "--max-steps", "3", "--mixed-precision", "bf16", "--gradient-checkpointing", "--quiet"]  # fmt: skip
    environ = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["step"] == 3
    prints = summary["rank_fingerprints"]
    saved = fingerprint(read_trainable(out / "checkpoints" / "checkpoint-000003"))
    assert len(prints) == 2 and prints[0] == prints[1] == saved
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in records)
    assert (summary["distributed"], summary["mixed_precision"], summary["frozen_dtype"]) == ("MULTI_CPU", "bf16", "bfloat16")
    assert all(v.dtype == torch.float32 for v in read_trainable(out / "checkpoints" / "checkpoint-000003").values())
    assert records[0]["samples_per_s"] == pytest.approx(2 * records[0]["steps_per_s"])  # one clip per process


def test_nan_loss_stops_with_a_message_and_keeps_the_last_checkpoint(env, tmp_path, monkeypatch, capsys):
    import nadm.train_step

    calls = {"n": 0}
    real = nadm.train_step.diffusion_loss

    def nan_at_step_5(pred, target):
        calls["n"] += 1
        loss = real(pred, target)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(nadm.train_step, "diffusion_loss", nan_at_step_5)
    out = tmp_path / "nan"
    assert cli_train(env, out, "--max-steps", 8, "--checkpoint-every", 2) == 3  # a failed run: its own exit code
    err = capsys.readouterr().err
    assert "training stopped at step 5" in err and "not finite" in err and "checkpoint-000004" in err
    assert err.startswith("error: ") and err.count("\n") == 1  # one line, no traceback
    assert [p.name for p in checkpoints(out)] == ["checkpoint-000002", "checkpoint-000004"]
    assert not any(p.name.startswith(".") for p in (out / "checkpoints").iterdir())  # no partial checkpoint
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]
    # the last good checkpoint is whole: it resumes
    monkeypatch.setattr(nadm.train_step, "diffusion_loss", real)
    assert cli_train(env, out, "--max-steps", 5, "--checkpoint-every", 2, "--resume", "latest") == 0
    assert np.isfinite(read_metrics(out)[-1]["loss"]) and read_metrics(out)[-1]["step"] == 5


def test_resume_from_a_damaged_checkpoint_names_it_and_offers_the_previous_one(env, tmp_path, capsys):
    """Issue 11, item 5: with optimizer.bin truncated or missing, `--resume latest` says which checkpoint is damaged
    and offers the newest whole one as `--resume checkpoint-N` (one line, exit 2, before any model loads)."""
    out = tmp_path / "damaged"
    assert cli_train(env, out, "--max-steps", 4, "--checkpoint-every", 2) == 0
    capsys.readouterr()
    optimizer = out / "checkpoints" / "checkpoint-000004" / "optimizer.bin"
    whole = optimizer.read_bytes()
    for damage in ("truncated", "missing"):
        if damage == "truncated":
            optimizer.write_bytes(whole[: len(whole) // 2])
        else:
            optimizer.unlink()
        assert cli_train(env, out, "--max-steps", 6, "--resume", "latest") == 2
        err = capsys.readouterr().err
        assert err.startswith("error: the checkpoint ") and err.count("\n") == 1, err
        assert f"checkpoint-000004 is damaged: optimizer.bin is {damage}" in err
        assert "--resume checkpoint-000002" in err
    # the offered command resumes and continues the run
    assert cli_train(env, out, "--max-steps", 6, "--checkpoint-every", 2, "--resume", "checkpoint-000002") == 0
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in checkpoints(out)] == ["checkpoint-000002", "checkpoint-000004", "checkpoint-000006"]
    # nothing whole left to offer: said so
    for folder in checkpoints(out):
        (folder / "optimizer.bin").unlink()
    assert cli_train(env, out, "--max-steps", 8, "--resume", "latest") == 2
    assert "no earlier checkpoint of this run is complete" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ options


def test_init_motion_from_animatediff_weights_trains_with_the_runs_attention(env, tmp_path):
    """AnimateDiff-format weights (a MotionAdapter folder, both attentions versatile) initialise an NADM run."""
    from nadm.checkpoint import load_checkpoint
    from nadm.motion import new_motion_adapter

    torch.manual_seed(5)
    source = tiny_config(env).model.replace(attn2="versatile")
    adapter = new_motion_adapter(source)
    for p in adapter.parameters():
        p.data.normal_()  # not zero: a trained module
    adapter.save_pretrained(tmp_path / "animatediff")
    cfg = tiny_config(env, **{"init_motion": str(tmp_path / "animatediff"), "optim.max_steps": 1, "optim.learning_rate": 0.0})
    result = train(cfg, tmp_path / "run", progress=False)
    export = load_checkpoint(result.checkpoint / EXPORT)
    assert (export.config.attn1, export.config.attn2) == ("versatile", "sparse_causal")
    assert export.motion.keys() == adapter.state_dict().keys()
    assert all(torch.equal(export.motion[k], v) for k, v in adapter.state_dict().items())  # lr 0: still the init


def test_ablation_with_ema_and_gradient_accumulation(env, tmp_path):
    """Table II's w/o SC-Attn: attn2 is skipped, so its weights get no gradient and stay as initialised; EMA export."""
    from accelerate.utils import set_seed

    from nadm.checkpoint import load_checkpoint
    from nadm.train import build_module

    cfg = tiny_config(env, **{"model.attn2": "off", "optim.max_steps": 3, "optim.ema": True, "optim.ema_decay": 0.5,
                              "optim.gradient_accumulation_steps": 2, "optim.warmup_steps": 2})  # fmt: skip
    result = train(cfg, tmp_path / "run", progress=False)
    assert [r["lr"] for r in result.history] == [0.0, 0.5e-3, 1e-3]  # linear warm-up over 2 steps, then constant
    assert result.history[-1]["samples_per_s"] == pytest.approx(2 * result.history[-1]["steps_per_s"])  # 2 micro-batches
    set_seed(cfg.run.seed)
    _, _, fresh, unused = build_module(cfg, fresh=True, say=lambda m: None)
    assert unused and all(".attn2." in n or ".norm2." in n for n in unused)
    trained, initial = result.module.state_dict(), fresh.state_dict()
    assert all(torch.equal(trained[n], initial[n]) for n in unused)
    assert any(not torch.equal(trained[n], initial[n]) for n in trained if ".attn1." in n)
    export = load_checkpoint(result.checkpoint / EXPORT)
    assert export.config.attn2 == "off" and json.loads((result.checkpoint / EXPORT / "config.json").read_text())["ema"] is True
    raw = result.module.trainable_state_dict()
    moved = [k for k in export.motion if not torch.equal(export.motion[k], raw["unet." + k])]
    assert moved  # the EMA weights, not the raw ones, are exported; the raw ones are kept apart for resuming
    assert fingerprint(read_trainable(result.checkpoint)) == fingerprint(raw)
    assert json.loads((result.output_dir / "summary.json").read_text())["last"]["samples_per_s"] > 0


def test_training_on_cached_latents(env, tmp_path):
    cache = tmp_path / "cache"
    code = run_cli("data", "cache", env["data"], cache, "--base", env["base"], "--frames", 4, "--stride", 2,
                   "--resolution", 32, "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0 and (cache / "cache.json").is_file()
    assert run_cli("data", "cache", env["data"], cache, "--base", env["base"], "--quiet") == 2  # never replaced silently
    cfg = tiny_config(env, **{"data.latent_cache": str(cache), "data.root": None, "optim.max_steps": 2})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.step == 2 and all(np.isfinite(r["loss"]) for r in result.history)
    wrong = tiny_config(env, **{"data.latent_cache": str(cache), "data.resolution": 64, "optim.max_steps": 1})
    with pytest.raises(NADMError, match="resolution 32"):
        train(wrong, tmp_path / "wrong", progress=False)


def test_validation_videos_every_k_steps(env, tmp_path):
    from nadm.io import read_video

    out = tmp_path / "val"
    settings = ("--set", "validation.steps=2", "--set", "validation.seeds=[0, 1]", "--set", 'validation.prompts=["mist over the river"]')
    assert cli_train(env, out, "--max-steps", 2, "--validate-every", 1, "--checkpoint-every", 1, "--keep-checkpoints", 1, *settings) == 0
    assert [p.name for p in checkpoints(out)] == ["checkpoint-000002"]  # step 1's was pruned
    for step in (1, 2):
        videos = sorted((out / "validation" / f"step-{step:06d}").glob("*.mp4"))
        assert [v.name for v in videos] == ["prompt0-seed0.mp4", "prompt0-seed1.mp4"]
        frames, _ = read_video(videos[0])
        assert frames.shape == (4, 32, 32, 3)
    a, _ = read_video(out / "validation" / "step-000002" / "prompt0-seed0.mp4")
    b, _ = read_video(out / "validation" / "step-000002" / "prompt0-seed1.mp4")
    assert not np.array_equal(a, b)  # fixed seeds, different clips
