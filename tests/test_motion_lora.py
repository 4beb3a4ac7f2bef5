"""Motion LoRAs (issue 20): fused into the motion modules from every layout, trained by `nadm train
--motion-lora-rank`, exported in diffusers' layout and loaded by diffusers' own AnimateDiffPipeline."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import SHARED_DATA
from nadm.checkpoint import load_motion_source
from nadm.motion import new_motion_adapter, predict_noise
from nadm.motion_lora import LORA_FILE, SIDECAR
from nadm.pipeline import NADMPipeline
from nadm.tiny import TINY_MOTION
from test_train import run_cli  # `nadm ...` in process, returning the exit status

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny models

ATTN = "transformer_blocks.0"
# linear layers of the tiny motion module a test LoRA adapts: attention projections of both attentions, a
# feed-forward and an input projection (any linear layer of a motion module can carry a LoRA)
LAYERS = [
    f"down_blocks.0.motion_modules.0.{ATTN}.attn1.to_q",
    f"down_blocks.0.motion_modules.0.{ATTN}.attn1.to_out.0",
    f"down_blocks.1.motion_modules.0.{ATTN}.attn2.to_v",
    f"up_blocks.1.motion_modules.1.{ATTN}.attn2.to_out.0",
    f"mid_block.motion_modules.0.{ATTN}.ff.net.2",
    "down_blocks.1.motion_modules.0.proj_in",
]
UNUSED_BY_NADM = f"up_blocks.0.motion_modules.0.{ATTN}.attn2.to_q"  # sparse-causal attention has no query
TINY_RUN = {
    "model": {"motion_num_attention_heads": 2, "adapter_grid": 4, "adapter_hidden": 32, "adapter_dim": 16},
    "data": {"frames": 4, "stride": 2, "resolution": 32, "empty_caption_prob": 0.0},
    "loss": {"m": 1},
    "optim": {"learning_rate": 1.0e-2},
    "run": {"log_every": 1, "checkpoint_every": 2},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny base, AnimateDiff-style motion weights (a MotionAdapter folder, random trained-like weights) and a tiny
    NADM checkpoint."""
    from nadm.tiny import build_tiny_base, build_tiny_motion

    root = tmp_path_factory.mktemp("motion-lora")
    torch.manual_seed(3)
    adapter = new_motion_adapter(TINY_MOTION.replace(attn2="versatile"))
    for p in adapter.parameters():
        p.data.normal_(0, 0.1)
    adapter.save_pretrained(root / "animatediff")
    return {"root": root, "base": build_tiny_base(root / "base"), "animatediff": root / "animatediff",
            "nadm": build_tiny_motion(root / "nadm")}  # fmt: skip


def random_lora(env, layers, rank=4, seed=0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (down (rank, in), up (out, rank))} with random factors for layers of the tiny motion module."""
    motion = load_motion_source(env["animatediff"]).motion
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layer in layers:
        w = motion[f"{layer}.weight"]
        out[layer] = (torch.randn(rank, w.shape[1], generator=g) * 0.1, torch.randn(w.shape[0], rank, generator=g) * 0.1)
    return out


def save_diffusers_lora(folder: Path, lora: dict, alpha: float) -> Path:
    """A motion LoRA in diffusers' layout, written by diffusers itself (`unet.`-prefixed PEFT keys, LoraConfig with
    lora_alpha in the safetensors metadata)."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    state = {}
    for layer, (down, up) in lora.items():
        state[f"{layer}.lora_A.weight"], state[f"{layer}.lora_B.weight"] = down, up
    rank = next(iter(lora.values()))[0].shape[0]
    meta = {"r": rank, "lora_alpha": alpha, "target_modules": sorted(lora)}
    StableDiffusionLoraLoaderMixin.save_lora_weights(folder, unet_lora_layers=state, unet_lora_adapter_metadata=meta)
    return folder


def video_weights(env, motion, motion_loras=()) -> dict[str, torch.Tensor]:
    pipe = NADMPipeline.from_pretrained(env["base"], motion=motion, motion_loras=motion_loras, device="cpu", progress=False)
    return pipe.video_unet.state_dict()


def delta(lora: dict, layer: str, scale: float, alpha: float) -> torch.Tensor:
    down, up = lora[layer]
    return scale * (up @ down) * alpha / down.shape[0]


# ------------------------------------------------------------------------------------------ fusing


def test_a_diffusers_layout_lora_fuses_exactly_and_scale_0_is_no_lora(env, tmp_path):
    lora = random_lora(env, LAYERS)
    folder = save_diffusers_lora(tmp_path / "lora", lora, alpha=8.0)  # rank 4, alpha 8: factor 2
    plain = video_weights(env, env["animatediff"])
    fused = video_weights(env, env["animatediff"], [f"{folder}:0.7"])
    assert fused.keys() == plain.keys()
    for key in plain:
        layer = key.removesuffix(".weight")
        if layer in lora:
            assert torch.allclose(fused[key], plain[key] + delta(lora, layer, 0.7, 8.0), atol=1e-6), key
            assert not torch.equal(fused[key], plain[key])
        else:
            assert torch.equal(fused[key], plain[key]), key  # nothing else moves; no adapter layers stay behind
    zero = video_weights(env, env["animatediff"], [f"{folder}:0"])
    assert all(torch.equal(zero[k], plain[k]) for k in plain)


def test_two_loras_add_and_each_layout_reads_the_same(env, tmp_path, monkeypatch):
    """Two LoRAs at their own scales add; the same factors in the hub repositories' old diffusers keys (from a
    folder, and by hub id from the Hugging Face cache, offline) and in AnimateDiff's original release layout (.ckpt,
    alpha = rank) fuse to the same weights."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    a, b = random_lora(env, LAYERS[:4], seed=1), random_lora(env, LAYERS[2:], rank=2, seed=2)
    folder_a, folder_b = save_diffusers_lora(tmp_path / "a", a, 4.0), save_diffusers_lora(tmp_path / "b", b, 1.0)
    plain = video_weights(env, env["animatediff"])
    both = video_weights(env, env["animatediff"], [f"{folder_a}:0.5", f"{folder_b}:-1.5"])
    for layer in LAYERS:
        want = plain[f"{layer}.weight"].clone()
        want += delta(a, layer, 0.5, 4.0) if layer in a else 0
        want += delta(b, layer, -1.5, 1.0) if layer in b else 0
        assert torch.allclose(both[f"{layer}.weight"], want, atol=1e-6), layer
    # the same factors as guoyww/animatediff-motion-lora-* store them, and as AnimateDiff's v2_lora_*.ckpt do
    old, original = {}, {}
    for layer, (down, up) in a.items():
        head, proj = layer.rsplit(".attn", 1)[0], layer.split(".")[-2 if layer.endswith("to_out.0") else -1]
        attn = "attn1" if ".attn1." in layer else "attn2"
        old[f"unet.{head}.{attn}.processor.{proj}_lora.down.weight"] = down
        old[f"unet.{head}.{attn}.processor.{proj}_lora.up.weight"] = up
        block = head.replace(".transformer_blocks.", ".temporal_transformer.transformer_blocks.")
        orig = f"{block}.attention_blocks.{int(attn[-1]) - 1}.processor.{proj}_lora"
        original[f"{orig}.down.weight"], original[f"{orig}.up.weight"] = down, up
    (tmp_path / "hub").mkdir()
    save_file(old, str(tmp_path / "hub" / "diffusion_pytorch_model.safetensors"))
    torch.save({"state_dict": original}, tmp_path / "v2_lora_Test.ckpt")
    snapshot = tmp_path / "hf" / "models--guoyww--animatediff-motion-lora-pan-left" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(tmp_path / "hub" / "diffusion_pytorch_model.safetensors", snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    want = video_weights(env, env["animatediff"], [f"{folder_a}:0.5"])
    for source in (tmp_path / "hub", tmp_path / "v2_lora_Test.ckpt", "guoyww/animatediff-motion-lora-pan-left"):
        got = video_weights(env, env["animatediff"], [f"{source}:0.5"])  # alpha = rank, as in folder_a
        assert all(torch.allclose(got[f"{layer}.weight"], want[f"{layer}.weight"], atol=1e-6) for layer in a), source


def test_on_nadm_motion_unused_query_and_key_are_said_once_and_left_out(env, tmp_path, capsys):
    lora = random_lora(env, [LAYERS[0], LAYERS[2], UNUSED_BY_NADM, UNUSED_BY_NADM.replace("to_q", "to_k")])
    folder = save_diffusers_lora(tmp_path / "lora", lora, alpha=4.0)
    capsys.readouterr()
    plain = video_weights(env, env["nadm"])
    fused = video_weights(env, env["nadm"], [str(folder)])
    notes = [line for line in capsys.readouterr().err.splitlines() if "never uses" in line]
    assert len(notes) == 1 and "2 layer(s)" in notes[0] and "sparse-causal" in notes[0]
    assert torch.equal(fused[f"{UNUSED_BY_NADM}.weight"], plain[f"{UNUSED_BY_NADM}.weight"])
    for layer in (LAYERS[0], LAYERS[2]):
        assert torch.allclose(fused[f"{layer}.weight"], plain[f"{layer}.weight"] + delta(lora, layer, 1.0, 4.0), atol=1e-6)


@pytest.mark.parametrize("case", ["image-lora", "unknown-key", "shape", "damaged", "missing", "scale", "hub"])
def test_bad_motion_loras_are_one_line_errors_before_the_base_loads(env, tmp_path, capsys, case):
    from safetensors.torch import save_file

    lora = random_lora(env, LAYERS[:2])
    source, message = tmp_path / "lora.safetensors", None
    if case == "image-lora":  # a LoRA of SD's image attention, not of a motion module
        key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
        save_file({key: torch.zeros(4, 32), key.replace("lora_A", "lora_B"): torch.zeros(32, 4)}, str(source))
        message = f"key {key} fits no motion module"
    elif case == "unknown-key":
        save_file({"unet.down_blocks.0.motion_modules.0.bogus.weight": torch.zeros(4, 4)}, str(source))
        message = "key unet.down_blocks.0.motion_modules.0.bogus.weight is not a LoRA weight"
    elif case == "shape":  # a LoRA for a wider motion module (SD 1.5's 320 channels)
        key = f"unet.{LAYERS[0]}.lora_A.weight"
        save_file({key: torch.zeros(4, 320), key.replace("lora_A", "lora_B"): torch.zeros(320, 4)}, str(source))
        message = "is for a 320 -> 320 layer"
    elif case == "damaged":
        save_diffusers_lora(tmp_path / "good", lora, 4.0)
        whole = (tmp_path / "good" / LORA_FILE).read_bytes()
        source.write_bytes(whole[: len(whole) // 2])
        message = f"{source}"
    elif case == "missing":
        source, message = tmp_path / "nowhere.safetensors", "motion LoRA not found"
    elif case == "scale":
        save_diffusers_lora(tmp_path / "good", lora, 4.0)
        source, message = f"{tmp_path / 'good'}:strong", "scale 'strong'"
    else:
        source, message = "someone/motion-lora-not-cached", "cannot load the motion LoRA 'someone/motion-lora-not-cached'"
    code = run_cli("generate", "mist", "-o", tmp_path / "clip.mp4", "--base", env["base"], "--motion", env["animatediff"],
                   "--motion-lora", source, "--frames", 4, "--height", 32, "--width", 32, "--steps", 1, "--quiet")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "clip.mp4").exists()


# ------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def clips(env):
    """A dataset of 6 real sky time-lapse clips (../shared/data: MD-GAN's Sky-Timelapse tiles, 32 frames each)."""
    from nadm.io import read_video, write_video

    tiles = SHARED_DATA / "landscape_motion" / "mdgan_sky_timelapse"
    if not tiles.is_dir():
        pytest.skip("../shared/data is not present")
    root, rows = env["root"] / "clips", ["video,caption"]
    for tile in sorted(p for p in tiles.iterdir() if p.is_dir() and p.name.startswith("tile_")):
        frames, _ = read_video(tile)
        write_video(frames[:16], root / "videos" / f"{tile.name}.mp4", fps=8)
        rows.append(f"{tile.name}.mp4,clouds drifting across the sky")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    config = env["root"] / "lora.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    return {"data": root, "config": config}


def lora_train(env, clips, out, *extra) -> int:
    return run_cli("train", "--config", clips["config"], "--base", env["base"], "--data", clips["data"], "--init-motion",
                   env["animatediff"], "--motion-lora-rank", 4, "-o", out, "--quiet", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def trained(env, clips):
    """`nadm train --motion-lora-rank 4` for 4 steps on the real clips, on top of the AnimateDiff weights, with a
    validation video at the end."""
    out = env["root"] / "trained"
    validation = ("--validate-every", 4, "--set", "validation.steps=1", "--set", "validation.prompts=[clouds]")
    assert lora_train(env, clips, out, "--max-steps", 4, *validation) == 0
    return out / "checkpoints" / "checkpoint-000004"


def fixed_batch_loss(env, clips, checkpoint: Path | None) -> float:
    """The training loss (Eq. 13) of the module `nadm train` builds, on every clip with fixed noise and timesteps,
    with the LoRA of `checkpoint` loaded (None: as it starts, up = 0)."""
    from accelerate.utils import set_seed

    from nadm.runfolder import read_trainable
    from nadm.train import build_module, resolve_config
    from nadm.train_data import batch_inputs, make_dataset
    from nadm.train_step import make_noise_scheduler, step_generator, training_step

    overrides = {"base": str(env["base"]), "data.root": str(clips["data"]), "init_motion": str(env["animatediff"]),
                 "motion_lora.rank": 4}  # fmt: skip
    cfg = resolve_config(config_file=clips["config"], overrides=overrides)
    set_seed(cfg.run.seed)
    cfg, parts, module, _ = build_module(cfg, fresh=True, say=lambda m: None)
    if checkpoint is not None:
        missing, unexpected = module.load_state_dict(read_trainable(checkpoint), strict=False)
        assert not unexpected and not any("lora_" in k for k in missing)
    dataset, scheduler, total = make_dataset(cfg), make_noise_scheduler(cfg.noise), 0.0
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = torch.utils.data.default_collate([dataset[i]])
            latents, text = batch_inputs(batch, parts, torch.device("cpu"), torch.float32)
            total += training_step(module, latents, text, step_generator(9, i, 0, 0), scheduler, cfg.loss).total.item()
    return total / len(dataset)


def test_a_trained_motion_lora_lowers_the_loss_exports_and_loads_in_nadm_generate(env, clips, trained, tmp_path):
    from safetensors import safe_open

    from nadm.motion_lora import read_motion_lora

    # 1. what the checkpoint holds: the LoRA in diffusers' layout + sidecar, the noise adapter; no motion module
    export = trained / "motion_lora"
    assert {p.name for p in export.iterdir()} == {LORA_FILE, SIDECAR} and not (trained / "nadm").exists()
    with safe_open(str(export / LORA_FILE), framework="pt") as handle:
        keys = set(handle.keys())
        meta = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert all(k.startswith("unet.") and ".motion_modules." in k and (".lora_A." in k or ".lora_B." in k) for k in keys)
    assert (meta["unet.r"], meta["unet.lora_alpha"]) == (4, 4.0)
    # the NADM run trains every attention projection its attention types use: not attn2's query and key
    assert any(".attn1.to_q." in k for k in keys) and not any(".attn2.to_q." in k or ".attn2.to_k." in k for k in keys)
    sidecar = json.loads((export / SIDECAR).read_text())
    assert (sidecar["rank"], sidecar["alpha"], sidecar["step"]) == (4, 4.0, 4)
    assert sidecar["init_motion"] == str(env["animatediff"]) and sidecar["train_config"]["motion_lora"]["rank"] == 4
    full = (env["animatediff"] / "diffusion_pytorch_model.safetensors").stat().st_size
    assert (export / LORA_FILE).stat().st_size < full / 4
    assert read_motion_lora(str(export)).layers  # and it reads back as a motion LoRA
    summary = json.loads((trained.parent.parent / "summary.json").read_text())
    assert summary["motion_lora"] == str(export) and summary["motion"] is None
    assert (trained.parent.parent / "validation" / "step-000004" / "prompt0-seed0.mp4").is_file()
    # 2. the training loss on a fixed batch (every clip, fixed noise and t) is lower with the trained LoRA
    before, after = fixed_batch_loss(env, clips, None), fixed_batch_loss(env, clips, trained)
    assert after < before, (before, after)
    # 3. it loads in `nadm generate`, whose sidecar records it
    out = tmp_path / "clip.mp4"
    code = run_cli("generate", "clouds over ink mountains", "-o", out, "--base", env["base"], "--motion", env["animatediff"],
                   "--motion-lora", f"{export}:0.8", "--frames", 4, "--height", 32, "--width", 32, "--steps", 2,
                   "--seed", 1, "--no-interpolate", "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0
    side = json.loads(Path(f"{out}.json").read_text())
    [record] = side["motion_loras"]
    assert (record["source"], record["scale"], record["rank"]) == (str(export), 0.8, 4)
    assert record["sha256"] == hashlib.sha256((export / LORA_FILE).read_bytes()).hexdigest()


def test_diffusers_animatediff_pipeline_loads_the_export_and_sees_the_same_change(env, trained):
    """diffusers' own AnimateDiffPipeline (built from the same tiny components and motion weights) loads the export
    with `load_lora_weights`; one UNet pass changes by what it changes in nadm, where the LoRA is fused."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    export = trained / "motion_lora"
    base = env["base"]
    pipe = AnimateDiffPipeline(
        vae=None, text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(base, subfolder="unet"),
        motion_adapter=MotionAdapter.from_pretrained(env["animatediff"]), scheduler=DDIMScheduler(),
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    latents, text, t = torch.randn(1, 4, 4, 4, 4, generator=g), torch.randn(1, 77, 32, generator=g), torch.tensor([500])

    def diffusers_pass():
        with torch.no_grad():
            return pipe.unet(latents, t, encoder_hidden_states=text.repeat_interleave(4, 0)).sample

    def nadm_pass(motion_loras=()):
        nadm = NADMPipeline.from_pretrained(base, motion=env["animatediff"], motion_loras=motion_loras, device="cpu")
        with torch.no_grad():
            return predict_noise(nadm.video_unet, latents, t, text)

    plain_d, plain_n = diffusers_pass(), nadm_pass()
    assert torch.allclose(plain_d, plain_n, atol=1e-5)  # the same model before any LoRA
    pipe.load_lora_weights(str(export))
    change_d, change_n = diffusers_pass() - plain_d, nadm_pass([str(export)]) - plain_n
    assert change_d.abs().max() > 1e-3  # the LoRA does change the output ...
    assert torch.allclose(change_n, change_d, atol=1e-5, rtol=1e-3)  # ... by the same amount in both


def safetensors_contents(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


def test_resumed_lora_run_reproduces_the_uninterrupted_one(env, clips, tmp_path, capsys):
    from nadm.runfolder import fingerprint, read_metrics, read_trainable

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    ema = ("--ema", "--set", "optim.ema_decay=0.5")
    assert lora_train(env, clips, whole, "--max-steps", 4, *ema) == 0
    assert lora_train(env, clips, parts, "--max-steps", 2, *ema) == 0
    assert lora_train(env, clips, parts, "--max-steps", 4, "--resume", "latest", *ema) == 0
    a, b = read_metrics(whole), read_metrics(parts)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("loss", "loss_diffusion", "loss_contrastive", "lr", "grad_norm"):
        assert [r[key] for r in a] == [r[key] for r in b], key  # bitwise
    assert a[1]["loss"] != a[2]["loss"]
    end = "checkpoints/checkpoint-000004"
    assert fingerprint(read_trainable(whole / end)) == fingerprint(read_trainable(parts / end))
    exports = [safetensors_contents(run / end / "motion_lora" / LORA_FILE) for run in (whole, parts)]
    assert exports[0][1] == exports[1][1] and exports[0][0].keys() == exports[1][0].keys()  # (the header's order varies)
    assert all(torch.equal(exports[0][0][k], exports[1][0][k]) for k in exports[0][0])  # the EMA weights, bitwise
    # a LoRA resumes only on the motion weights it was trained on
    init = tmp_path / "init"
    shutil.copytree(env["animatediff"], init)
    assert lora_train(env, clips, tmp_path / "moved", "--max-steps", 2, "--init-motion", init) == 0
    other = new_motion_adapter(TINY_MOTION.replace(attn2="versatile"))  # different weights, same place
    other.save_pretrained(init)
    capsys.readouterr()
    assert lora_train(env, clips, tmp_path / "moved", "--max-steps", 4, "--init-motion", init, "--resume", "latest") == 2
    err = capsys.readouterr().err
    assert "are not the ones the motion LoRA" in err and err.count("\n") == 1
    # a LoRA needs motion weights to adapt: said in one line before anything loads
    capsys.readouterr()
    code = run_cli("train", "--config", clips["config"], "--base", env["base"], "--data", clips["data"],
                   "--motion-lora-rank", 4, "-o", tmp_path / "none", "--quiet")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "pass --init-motion" in err and err.count("\n") == 1


def test_motion_lora_preset_and_config_file():
    from nadm.train import resolve_config

    data = {"data.root": "/nowhere"}
    cfg = resolve_config(preset="motion-lora", overrides=data)
    repo = Path(__file__).resolve().parents[1]
    assert cfg == resolve_config(config_file=repo / "configs" / "motion-lora.yaml", overrides=data)
    assert (cfg.motion_lora.rank, cfg.motion_lora.scale_alpha, cfg.init_motion) == (16, 16.0, "guoyww/animatediff-motion-adapter-v1-5-2")
    assert (cfg.optim.learning_rate, cfg.optim.max_steps, cfg.data.frames) == (1e-4, 1000, 16)
    assert np.isclose(resolve_config(preset="motion-lora", overrides={**data, "motion_lora.alpha": 8}).motion_lora.scale_alpha, 8)
