"""The NADM checkpoint format and AnimateDiff weights (diffusers folder, original-format file)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from nadm.checkpoint import (
    convert_original_motion_state_dict,
    load_checkpoint,
    load_motion_source,
    load_noise_adapter,
    save_checkpoint,
    sinusoidal_table,
)
from nadm.errors import NADMError
from nadm.losses import NoiseAdapter
from nadm.motion import build_video_unet, motion_attention_types, motion_state_dict, predict_noise
from nadm.tiny import TINY_MOTION, tiny_motion_config, tiny_unet


def _trained_video_unet(config=TINY_MOTION, seed=1):
    """A video UNet whose motion modules hold random (non-zero) weights, as after training."""
    video = build_video_unet(tiny_unet(), config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in video.named_parameters():
            if "motion_modules" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return video


def _run(video):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 4, 8, 8, generator=g)
    with torch.no_grad():
        return predict_noise(video, x, torch.tensor([300]), torch.randn(1, 77, 32, generator=g))


def test_save_load_reproduces_outputs_exactly(tmp_path):
    video = _trained_video_unet()
    adapter = NoiseAdapter.from_config(TINY_MOTION)
    path = save_checkpoint(tmp_path / "ckpt", TINY_MOTION, motion_state_dict(video), adapter.state_dict())
    meta = json.loads((path / "config.json").read_text())
    assert meta["format"] == "nadm" and meta["format_version"] == 1 and meta["kind"] == "nadm"
    assert "nadm_version" in meta and meta["config"]["attn2"] == "sparse_causal"
    weights = load_motion_source(path)
    assert weights.config == TINY_MOTION and weights.source_format == "nadm"
    reloaded = build_video_unet(tiny_unet(), weights.config, weights.motion)
    assert torch.equal(_run(reloaded), _run(video))
    adapter2 = NoiseAdapter.from_config(weights.config)
    load_noise_adapter(adapter2, weights.noise_adapter)
    assert all(torch.equal(a, b) for a, b in zip(adapter.state_dict().values(), adapter2.state_dict().values()))


def test_refuses_to_overwrite(tmp_path):
    video = _trained_video_unet()
    save_checkpoint(tmp_path / "ckpt", TINY_MOTION, motion_state_dict(video))
    before = (tmp_path / "ckpt" / "motion_modules.safetensors").read_bytes()
    with pytest.raises(NADMError, match="already exists"):
        save_checkpoint(tmp_path / "ckpt", TINY_MOTION, motion_state_dict(_trained_video_unet(seed=2)))
    assert (tmp_path / "ckpt" / "motion_modules.safetensors").read_bytes() == before
    save_checkpoint(tmp_path / "ckpt", TINY_MOTION, motion_state_dict(_trained_video_unet(seed=2)), overwrite=True)
    assert (tmp_path / "ckpt" / "motion_modules.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folders left


@pytest.mark.parametrize("damage", ["missing", "extra", "shape"])
def test_strict_loading_names_the_key(tmp_path, damage):
    video = _trained_video_unet()
    sd = motion_state_dict(video)
    key = "down_blocks.0.motion_modules.0.proj_in.weight"
    if damage == "missing":
        del sd[key]
        match = f"missing key {key}"
    elif damage == "extra":
        sd["down_blocks.0.motion_modules.0.bogus.weight"] = torch.zeros(3)
        match = "unexpected key down_blocks.0.motion_modules.0.bogus.weight"
    else:
        sd[key] = torch.zeros(3, 3)
        match = f"key {key} has shape"
    save_checkpoint(tmp_path / "ckpt", TINY_MOTION, sd)
    weights = load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(NADMError, match=match):
        build_video_unet(tiny_unet(), weights.config, weights.motion)


def test_noise_adapter_strict(tmp_path):
    adapter = NoiseAdapter.from_config(TINY_MOTION)
    sd = adapter.state_dict()
    sd.pop("net.0.bias")
    with pytest.raises(NADMError, match="missing key net.0.bias"):
        load_noise_adapter(NoiseAdapter.from_config(TINY_MOTION), sd)


def test_config_with_unknown_key_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", TINY_MOTION, motion_state_dict(_trained_video_unet()))
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["temporal_window"] = 3
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(NADMError, match="unknown key.*temporal_window"):
        load_checkpoint(path)


def _diffusers_adapter(video, config):
    from diffusers import MotionAdapter

    adapter = MotionAdapter(**config.adapter_kwargs())
    adapter.load_state_dict(motion_state_dict(video), strict=True)
    return adapter


def to_original_keys(sd):
    """The test's own inverse mapping: diffusers MotionAdapter keys -> original AnimateDiff layout."""
    out = {}
    for key, value in sd.items():
        head, rest = key.split(".motion_modules.", 1)
        index, rest = rest.split(".", 1)
        prefix = f"{head}.motion_modules.{index}.temporal_transformer."
        if rest.endswith("pos_embed.pe"):
            block = rest[: -len("pos_embed.pe")]
            table = value[:, :24].clone()  # original AnimateDiff v1 tables stop at 24 frames
            out[prefix + block + "attention_blocks.0.pos_encoder.pe"] = table
            out[prefix + block + "attention_blocks.1.pos_encoder.pe"] = table.clone()
            continue
        for new, old in [(".attn1.", ".attention_blocks.0."), (".attn2.", ".attention_blocks.1."),
                         (".norm1.", ".norms.0."), (".norm2.", ".norms.1."), (".norm3.", ".ff_norm.")]:
            rest = rest.replace(new, old)
        out[prefix + rest] = value
    return out


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_original_animatediff_file_loads_like_the_diffusers_folder(tmp_path, suffix):
    baseline = tiny_motion_config(attn2="versatile")
    video = _trained_video_unet(baseline)
    _diffusers_adapter(video, baseline).save_pretrained(tmp_path / "adapter")
    original = to_original_keys(motion_state_dict(video))
    assert any(".attention_blocks.0." in k for k in original)
    file = tmp_path / f"mm{suffix}"
    if suffix == ".safetensors":
        save_file(original, str(file))
    else:
        torch.save({"state_dict": original}, file)
    from_folder = load_motion_source(tmp_path / "adapter", heads_from=TINY_MOTION)
    from_file = load_motion_source(file, heads_from=TINY_MOTION)
    assert from_folder.source_format == "diffusers-motion-adapter"
    assert from_file.source_format == "animatediff-original"
    assert from_folder.config == from_file.config == baseline
    assert from_file.config.kind == "animatediff"
    assert from_folder.motion.keys() == from_file.motion.keys()
    for k in from_folder.motion:
        torch.testing.assert_close(from_file.motion[k], from_folder.motion[k], rtol=0, atol=1e-6)
    # The AnimateDiff baseline keeps its own attention types when loaded for generation.
    unet = build_video_unet(tiny_unet(), from_file.config, from_file.motion)
    assert set(motion_attention_types(unet).values()) == {"versatile"}
    assert torch.equal(_run(unet), _run(video))


def test_position_table_is_the_standard_sinusoid():
    table = sinusoidal_table(32, 32)
    video = build_video_unet(tiny_unet(), TINY_MOTION)
    pe = video.down_blocks[0].motion_modules[0].transformer_blocks[0].pos_embed.pe
    torch.testing.assert_close(pe, table)
    with pytest.raises(NADMError, match="sinusoidal"):
        convert_original_motion_state_dict(
            {"down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe": torch.randn(1, 24, 32)}
        )


def test_missing_sources_are_clear(tmp_path):
    with pytest.raises(NADMError, match="not found"):
        load_motion_source(tmp_path / "nope.ckpt")
    with pytest.raises(NADMError, match="pass a local path"):
        load_motion_source("someone/not-a-real-motion-adapter")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NADMError, match="neither an NADM checkpoint nor a diffusers MotionAdapter"):
        load_motion_source(tmp_path / "empty")
