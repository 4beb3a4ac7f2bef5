"""nadm.pipeline and nadm.base in process: sampling (Alg. 1), seeds, schedulers, memory options, single files, LoRAs."""

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

from nadm.base import LoraSpec, load_base
from nadm.checkpoint import MotionWeights
from nadm.devices import resolve_device, resolve_dtype
from nadm.errors import InvalidRequest, NADMError, RunFailed
from nadm.pipeline import (
    NADMPipeline,
    check_compile,
    check_request,
    default_fps,
    make_scheduler,
)
from nadm.tiny import TINY_MOTION, TINY_UNET, TINY_VAE, build_tiny_base

PROMPT = "mountains in mist, ink wash"
SMALL = dict(num_frames=4, height=32, width=48, steps=2)  # latents (1, 4, 4, 4, 6)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny models


def _frames(pipe, prompt=PROMPT, **kw):
    """Keyframes of a small clip (seed 0 unless given), without interpolation."""
    return pipe(prompt, **{**SMALL, "seed": 0, "interpolate": False, **kw}).keyframes


# ---------------------------------------------------------------------------------------- sampling


def test_clip_shape_interpolation_and_settings(pipe, tiny):
    video = pipe(PROMPT, seed=3, **SMALL)
    assert video.keyframes.shape == (4, 32, 48, 3) and video.keyframes.dtype == np.uint8
    assert video.frames.shape == (7, 32, 48, 3) and video.frames.dtype == np.uint8
    assert np.array_equal(video.frames[::2], video.keyframes)  # SOFP inserts frames, keeps the generated ones
    assert video.keyframes.std() > 1 and not np.array_equal(video.keyframes[0], video.keyframes[1])
    assert video.fps == 14.0 == default_fps(4, 7)  # 7 frames last as long as 4 at 8 fps
    assert set(video.timings) == {"encode", "denoise", "decode", "interpolate"}
    s = video.settings
    assert (s["prompt"], s["negative_prompt"], s["seed"], s["seed_drawn"]) == (PROMPT, "", 3, False)
    assert (s["steps"], s["guidance"], s["scheduler"], s["keyframes"], s["frames_out"]) == (2, 8.0, "ddim", 4, 7)
    assert s["size"] == {"height": 32, "width": 48} and (s["interpolation"]["method"], s["interpolation"]["flow"]) == ("sofp", "dis")
    assert s["base"] == {"source": str(tiny["base"]), "kind": "folder", "config": None, "loras": []}
    assert s["motion"] == {"source": str(tiny["motion"]), "format": "nadm", "kind": "nadm"}
    assert s["motion_config"]["attn2"] == "sparse_causal" and s["device"] == "cpu" and s["dtype"] == "float32"
    assert s["environment"]["torch"] == torch.__version__
    json.dumps(s)  # JSON-ready


def test_same_seed_same_frames_and_different_seed_different(pipe):
    a, b, c = _frames(pipe, seed=11), _frames(pipe, seed=11), _frames(pipe, seed=12)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 1
    drawn = pipe(PROMPT, interpolate=False, **SMALL)  # no seed: one is drawn, recorded, and reproduces the clip
    assert drawn.settings["seed_drawn"] and isinstance(drawn.settings["seed"], int)
    assert np.array_equal(drawn.keyframes, _frames(pipe, seed=drawn.settings["seed"]))


def test_prompt_negative_prompt_and_guidance_reach_the_unet(pipe):
    ref = _frames(pipe)
    for changed in (_frames(pipe, prompt="a river at night"), _frames(pipe, negative_prompt="blurry"), _frames(pipe, guidance=1.0)):
        assert not np.array_equal(ref, changed)


def test_long_prompts_are_cut_with_a_note(pipe, capsys):
    long = "mountain " * 20  # the tiny tokenizer has one token per byte: 180 > 77
    assert np.array_equal(_frames(pipe, prompt=long), _frames(pipe, prompt=long + "and a river"))  # the tail is cut
    assert "prompt cut to the text encoder's 77 tokens" in capsys.readouterr().err


def test_a_long_negative_prompt_is_named_as_the_negative_one(pipe, capsys):
    """Issue 11, item 12: a 5,000-character negative prompt is reported as the negative prompt, not as the prompt."""
    _frames(pipe, negative_prompt="blurry, " * 625)
    notes = [line for line in capsys.readouterr().err.splitlines() if "cut to the text encoder's 77 tokens" in line]
    assert len(notes) == 1 and notes[0].startswith("nadm: negative prompt cut")
    assert int(re.search(r"\(it has (\d+)\)", notes[0]).group(1)) > 77
    _frames(pipe, prompt="mist " * 40, negative_prompt="blurry")  # the prompt alone: named as the prompt
    notes = [line for line in capsys.readouterr().err.splitlines() if "cut to the text encoder's 77 tokens" in line]
    assert len(notes) == 1 and notes[0].startswith("nadm: prompt cut")


def test_motion_module_is_in_the_loop(tiny, pipe):
    """The same base with the motion module's output projections zeroed (identity) gives a different video."""
    zeroed = NADMPipeline.from_pretrained(tiny["base"], motion=tiny["motion"], progress=False)
    with torch.no_grad():
        for name, p in zeroed.video_unet.named_parameters():
            if "motion_modules" in name and ".proj_out." in name:
                p.zero_()
    assert not np.array_equal(_frames(pipe), _frames(zeroed))


def test_numerical_blow_up_is_reported_not_written(tiny):
    broken = NADMPipeline.from_pretrained(tiny["base"], motion=tiny["motion"], progress=False)
    with torch.no_grad():
        broken.video_unet.conv_out.bias.fill_(math.inf)
    with pytest.raises(RunFailed, match="NaN/inf latents in float32: are the base or motion weights broken"):
        _frames(broken)


# -------------------------------------------------------------------------------------- schedulers


def test_schedulers_use_the_paper_schedule_whatever_the_base_folder_says(tiny, pipe):
    ddim = make_scheduler("ddim")
    cfg = ddim.config
    assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps) == ("linear", 0.00085, 0.012, 1000)
    assert (cfg.steps_offset, cfg.clip_sample, cfg.prediction_type) == (1, False, "epsilon")
    ddim.set_timesteps(25)
    assert ddim.timesteps[0] == 961 and ddim.timesteps[-1] == 1 and len(ddim.timesteps) == 25
    assert make_scheduler("dpm++").config.algorithm_type == "dpmsolver++"
    assert type(make_scheduler("euler")).__name__ == "EulerDiscreteScheduler"
    with pytest.raises(InvalidRequest, match="unknown scheduler"):
        make_scheduler("pndm")
    # a base folder with a different scheduler config changes nothing
    other = tiny["root"] / "base-other-scheduler"
    shutil.copytree(tiny["base"], other)
    sched_file = other / "scheduler" / "scheduler_config.json"
    sched_file.write_text(json.dumps({**json.loads(sched_file.read_text()), "beta_schedule": "scaled_linear", "steps_offset": 0}))
    assert np.array_equal(_frames(pipe), _frames(NADMPipeline.from_pretrained(other, motion=tiny["motion"], progress=False)))
    # the other samplers run and sample differently
    ref = _frames(pipe)
    for name in ("dpm++", "euler"):
        pipe.scheduler = name
        try:
            frames = _frames(pipe)
        finally:
            pipe.scheduler = "ddim"
        assert frames.std() > 1 and not np.array_equal(frames, ref)


# ---------------------------------------------------------------------------------------- checks


@pytest.mark.parametrize("kwargs, message", [
    (dict(height=36), "height must be a positive multiple of 8"),
    (dict(width=0), "width must be a positive multiple of 8"),
    (dict(height=8), "height must be at least 16 for interpolation"),
    (dict(num_frames=1), "frames must be at least 2"),
    (dict(context=33), "context must be at most 32"),  # issue 15: N > 32 frames run in windows of C <= 32
    (dict(steps=0), "steps must be an integer from 1 to 1000"),
    (dict(steps=1001), "steps must be an integer from 1 to 1000"),
    (dict(eta=1.5), "eta must be in [0, 1]"),
    (dict(guidance=0.5), "guidance must be a finite number >= 1"),
    (dict(guidance=math.nan), "guidance must be a finite number >= 1"),
    (dict(seed=-1), "seed must be an integer"),
])  # fmt: skip
def test_bad_requests_are_refused_before_sampling(pipe, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        pipe(PROMPT, **{**SMALL, **kwargs})
    assert isinstance(err.value, NADMError)  # the CLI prints it as one line


def test_devices_and_dtypes(monkeypatch):
    assert resolve_device("cpu").type == "cpu" and resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    for native, expected in ((True, torch.bfloat16), (False, torch.float16)):  # auto on CUDA: bf16 where it is native
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, ok=native: ok or including_emulation)
        assert resolve_dtype(None, torch.device("cuda")) == expected
    with pytest.raises(InvalidRequest, match="unsupported dtype 'int8'"):
        resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(InvalidRequest, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidRequest, match="device 'cuda' is not available here"):
            resolve_device("cuda")


def test_one_device_resolver_for_the_sampler_and_the_metric_networks(monkeypatch):
    """Issue 13: nadm.devices is the one resolver; 'auto' takes the first accelerator of `prefer` this machine has."""
    from nadm import metric_networks

    with pytest.raises(InvalidRequest, match="unknown device 'gpu0'"):
        metric_networks.I3DFeatures(None, device="gpu0")  # refused before any weights are looked for
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "mps" and resolve_device(None).type == "mps"  # the sampler's order
    assert resolve_device("auto", prefer=metric_networks.AUTO_DEVICES).type == "cpu"  # metric networks: CUDA or CPU
    assert resolve_device("", prefer=()).type == "cpu"


def test_check_request_without_a_motion_module_has_no_frame_limit():
    check_request(64, 512, 512)
    with pytest.raises(InvalidRequest, match="at most 24"):
        check_request(25, 512, 512, max_frames=24)


def test_default_motion_is_animatediff_and_needs_the_hub(tiny, capsys):
    with pytest.raises(NADMError, match="pass a local path"):
        NADMPipeline.from_pretrained(tiny["base"])
    assert "guoyww/animatediff-motion-adapter-v1-5-2" in capsys.readouterr().err


def test_motion_that_does_not_fit_the_base_is_refused(tiny):
    weights = MotionWeights(TINY_MOTION.replace(block_out_channels=(16, 32)), {}, source="wide-motion")
    with pytest.raises(NADMError, match="wide-motion do not fit the base"):
        NADMPipeline.from_pretrained(tiny["base"], motion=weights)


# -------------------------------------------------------------------------------- memory options


def test_cpu_offload_and_vae_slicing_give_the_same_video(tiny, pipe):
    lean = NADMPipeline.from_pretrained(tiny["base"], motion=tiny["motion"], cpu_offload=True, vae_slicing=True, progress=False)
    assert lean.decode_chunk == 1 and next(lean.video_unet.parameters()).device.type == "cpu"
    ref, got = _frames(pipe), _frames(lean)
    assert np.abs(ref.astype(int) - got).max() <= 1  # the VAE batch size changes float rounding only


def test_to_changes_dtype_and_back(tiny):
    moved = NADMPipeline.from_pretrained(tiny["base"], motion=tiny["motion"], progress=False)
    ref = _frames(moved)
    moved.to("cpu", "bfloat16")
    assert moved.dtype == torch.bfloat16 and moved.video_unet.dtype == moved.vae.dtype == torch.bfloat16
    half = _frames(moved)
    assert half.shape == ref.shape and not np.array_equal(half, ref)  # bfloat16 rounds differently
    moved.to(dtype="float32")  # weights keep their bfloat16 rounding: close to the original, not equal
    assert moved.video_unet.dtype == torch.float32 and np.abs(_frames(moved).astype(int) - ref).mean() < 3
    assert moved(PROMPT, seed=0, interpolate=False, **SMALL).settings["dtype"] == "float32"


def test_vae_tiling_decodes_in_tiles(tiny, pipe):
    tiled = NADMPipeline.from_pretrained(tiny["base"], motion=tiny["motion"], vae_tiling=True, progress=False)
    assert tiled.vae.use_tiling and TINY_VAE["sample_size"] < 64  # 64 px frames are split into 32 px tiles
    ref, got = _frames(pipe, height=64, width=64), _frames(tiled, height=64, width=64)
    assert got.shape == ref.shape == (4, 64, 64, 3)
    assert not np.array_equal(ref, got) and np.abs(ref.astype(int) - got).mean() < 40  # blended tiles, same picture


# -------------------------------------------------------------------------------------- single file

# Our own diffusers -> original (LDM) key mapping for the tiny SD layout: the layout community checkpoints use.
_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]  # fmt: skip


def _ldm_resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    raise KeyError(rest)


def unet_to_ldm(sd: dict, layers: int) -> dict:
    """diffusers UNet2DConditionModel keys -> `model.diffusion_model.` input/middle/output_blocks keys."""
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}  # fmt: skip
    out = {}
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        if module in fixed:
            out[f"{fixed[module]}.{param}"] = value
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key):
            block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            i = 1 + block * (layers + 1) + (layers if kind == "downsamplers" else j)  # input_blocks.0 is conv_in
            new = {"attentions": f"1.{rest}", "downsamplers": f"0.op.{rest.removeprefix('conv.')}"}.get(kind)
            out[f"input_blocks.{i}.{new or '0.' + _ldm_resnet(rest)}"] = value
        elif m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
            kind, j, rest = m[1], int(m[2]), m[3]
            out[f"middle_block.{2 * j}.{_ldm_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"] = value
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", key):
            block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            i = block * (layers + 1) + (layers if kind == "upsamplers" else j)
            has_attention = any(k.startswith(f"up_blocks.{block}.attentions.") for k in sd)
            new = {"attentions": f"1.{rest}", "upsamplers": f"{2 if has_attention else 1}.{rest}"}.get(kind)
            out[f"output_blocks.{i}.{new or '0.' + _ldm_resnet(rest)}"] = value
        else:
            raise KeyError(key)
    return {f"model.diffusion_model.{k}": v for k, v in out.items()}


def vae_to_ldm(sd: dict, levels: int) -> dict:
    """diffusers AutoencoderKL keys -> `first_stage_model.` encoder/decoder keys (attention as 1x1 convs)."""
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    plain = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}
    out = {}
    for key, value in sd.items():
        part, _, rest = key.partition(".")  # encoder, decoder, quant_conv, post_quant_conv
        if part in ("quant_conv", "post_quant_conv"):
            out[key] = value
        elif m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", rest):
            level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])  # the decoder's levels count bottom-up
            if m[3] == "resnets":
                out[f"{part}.{m[1]}.{level}.block.{m[4]}.{m[5].replace('conv_shortcut', 'nin_shortcut')}"] = value
            else:
                out[f"{part}.{m[1]}.{level}.{m[1]}sample.{m[5]}"] = value
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
            out[f"{part}.mid.block_{int(m[1]) + 1}.{m[2]}"] = value
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.*)\.(weight|bias)", rest):
            out[f"{part}.mid.attn_1.{attention[m[1]]}.{m[2]}"] = value[:, :, None, None] if value.ndim == 2 else value
        else:
            module, _, param = rest.rpartition(".")
            out[f"{part}.{plain[module]}.{param}"] = value
    return {f"first_stage_model.{k}": v for k, v in out.items()}


def text_to_ldm(sd: dict) -> dict:
    """transformers CLIPTextModel keys -> `cond_stage_model.transformer.text_model.` keys."""
    return {f"cond_stage_model.transformer.text_model.{k.removeprefix('text_model.')}": v for k, v in sd.items()}


@pytest.fixture(scope="module")
def other_base(tiny):
    """A second tiny base (another seed) as a diffusers folder and as an original-layout single file."""
    from safetensors.torch import save_file

    folder = build_tiny_base(tiny["root"] / "base-seed1", seed=1)
    model = load_base(folder)
    sd = {
        **unet_to_ldm(model.unet.state_dict(), TINY_UNET["layers_per_block"]),
        **vae_to_ldm(model.vae.state_dict(), len(TINY_VAE["block_out_channels"])),
        **text_to_ldm(model.text_encoder.state_dict()),
    }
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in sd)
    single = tiny["root"] / "ink-finetune.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(single))
    return {"folder": folder, "single": single, "state_dict": sd}


def test_single_file_base_loads_exactly_and_changes_the_output(tiny, pipe, other_base):
    # --base-config needs only the configs and the tokenizer of a diffusers folder: copy them without any weights
    configs = tiny["root"] / "configs-only"
    shutil.copytree(tiny["base"], configs, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    single = NADMPipeline.from_pretrained(other_base["single"], base_config=configs, motion=tiny["motion"], progress=False)
    folder = NADMPipeline.from_pretrained(other_base["folder"], motion=tiny["motion"], progress=False)
    got = _frames(single)
    assert np.array_equal(got, _frames(folder))  # every weight came through the original layout
    assert np.abs(got.astype(int) - _frames(pipe)).mean() > 1  # and it is another model than the default base
    s = single(PROMPT, interpolate=False, seed=0, **SMALL).settings["base"]
    assert s == {"source": str(other_base["single"]), "kind": "single-file", "config": str(configs), "loras": []}


def test_single_file_needs_its_configs_offline(tiny, other_base):
    with pytest.raises(NADMError, match="pass --base-config DIR"):
        load_base(other_base["single"])
    with pytest.raises(NADMError, match="base config folder not found: /nonexistent/sd15"):
        load_base(other_base["single"], config="/nonexistent/sd15")
    with pytest.raises(NADMError, match="is not a diffusers pipeline folder"):
        load_base(other_base["single"], config=tiny["base"] / "unet")


def test_single_file_with_missing_weights_is_refused(tiny, other_base):
    from safetensors.torch import save_file

    sd = dict(other_base["state_dict"])
    del sd["model.diffusion_model.out.2.weight"]
    broken = tiny["root"] / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(broken))
    with pytest.raises(NADMError, match="broken.safetensors: weights are missing from it"):
        load_base(str(broken), config=str(tiny["base"]))


# ------------------------------------------------------------------------------------------- LoRA


@pytest.fixture(scope="module")
def lora(tiny):
    """A LoRA (rank 4, attention projections) with random weights for the tiny UNet, saved as diffusers does."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = load_base(tiny["base"]).unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(tiny["root"] / "lora", unet_lora_layers=layers)
    return {"file": tiny["root"] / "lora" / "pytorch_lora_weights.safetensors", "layers": layers}


def test_lora_spec_parsing(lora, tmp_path):
    assert LoraSpec.parse(f"{lora['file']}:0.5") == LoraSpec(lora["file"], 0.5)
    assert LoraSpec.parse(str(lora["file"])) == LoraSpec(lora["file"], 1.0)
    odd = tmp_path / "style:v2.safetensors"  # a ':' inside the name is part of the path
    odd.write_bytes(b"")
    assert LoraSpec.parse(str(odd)) == LoraSpec(odd, 1.0)
    with pytest.raises(NADMError, match="LoRA file not found: /nonexistent/x.safetensors"):
        LoraSpec.parse("/nonexistent/x.safetensors:0.8")


def test_lora_is_fused_with_its_scale(tiny, lora):
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    plain = load_base(tiny["base"]).unet.state_dict()[f"{key}.weight"]
    fused = load_base(tiny["base"], loras=(LoraSpec(lora["file"], 0.5),)).unet
    delta = lora["layers"][f"{key}.lora.up.weight"] @ lora["layers"][f"{key}.lora.down.weight"]  # alpha / r = 1
    assert torch.allclose(fused.state_dict()[f"{key}.weight"], plain + 0.5 * delta, atol=1e-6)
    assert not any("lora" in k for k in fused.state_dict())  # adapters unloaded after fusing


def test_kohya_lora_with_text_encoder_layers_is_fused_into_both(tiny, tmp_path):
    """A LoRA in kohya's format (`lora_unet_*`/`lora_te_*`, lora_down/lora_up/alpha), as community styles ship."""
    from safetensors.torch import save_file

    plain, rank, alpha, scale = load_base(tiny["base"]), 2, 1.0, 0.5
    layers = {f"lora_unet_{key.replace('.', '_')}": ("unet", key) for key in
              (f"down_blocks.0.attentions.0.transformer_blocks.0.attn1.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0"))}
    layers |= {f"lora_te_text_model_{key.replace('.', '_')}": ("text_encoder", key) for key in
               (f"encoder.layers.0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj"))}  # fmt: skip
    g, tensors, expected = torch.Generator().manual_seed(0), {}, {}
    for name, (part, key) in layers.items():
        w = getattr(plain, part).state_dict()[f"{key}.weight"]
        down, up = torch.randn(rank, w.shape[1], generator=g) * 0.1, torch.randn(w.shape[0], rank, generator=g) * 0.1
        tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(alpha)}
        expected[part, key] = w + scale * alpha / rank * up @ down
    save_file(tensors, str(tmp_path / "style.safetensors"))
    fused = load_base(tiny["base"], loras=(LoraSpec(tmp_path / "style.safetensors", scale),))
    for (part, key), want in expected.items():
        got = getattr(fused, part).state_dict()[f"{key}.weight"]
        assert torch.allclose(got, want, atol=1e-6) and not torch.equal(got, getattr(plain, part).state_dict()[f"{key}.weight"])


def test_lora_changes_the_output_and_scale_zero_does_not(tiny, pipe, lora):
    ref = _frames(pipe)
    with_lora = NADMPipeline.from_pretrained(tiny["base"], motion=tiny["motion"], loras=[f"{lora['file']}:1.0"], progress=False)
    assert np.abs(_frames(with_lora).astype(int) - ref).mean() > 1
    assert with_lora.sources["base"]["loras"] == [{"path": str(lora["file"]), "scale": 1.0}]
    off = NADMPipeline.from_pretrained(tiny["base"], motion=tiny["motion"], loras=[(lora["file"], 0.0)], progress=False)
    assert np.array_equal(_frames(off), ref)


# ---------------------------------------------------------------------------------------------- speed


def test_compiled_unet_gives_the_same_video(tiny, pipe):
    fast = NADMPipeline.from_pretrained(tiny["base"], motion=tiny["motion"], compile="default", progress=False)
    got = fast(PROMPT, **{**SMALL, "seed": 0, "interpolate": False})
    assert got.settings["compile"] == "default" and _frames(pipe).shape == got.keyframes.shape
    assert np.abs(_frames(pipe).astype(int) - got.keyframes).max() <= 1  # inductor reorders float sums only
    assert pipe(PROMPT, **{**SMALL, "seed": 0, "interpolate": False}).settings["compile"] is None


def test_compile_modes_are_checked(tiny, pipe):
    assert check_compile("off") is None and check_compile("reduce-overhead") == "reduce-overhead"
    with pytest.raises(InvalidRequest, match="unknown compile mode 'fast'"):
        check_compile("fast")
    with pytest.raises(InvalidRequest, match="compile and cpu_offload do not mix"):
        NADMPipeline.from_pretrained(tiny["base"], motion=tiny["motion"], compile="default", cpu_offload=True)
    with pytest.raises(InvalidRequest, match="compile needs a mode"):
        pipe.compile("off")
