"""The NADM motion module (Sec. III-D1): identity at init, attention masks of Eq. 7-8, freezing."""

import math

import pytest
import torch

from nadm.config import NADMConfig
from nadm.motion import (
    SparseCausalAttnProcessor,
    build_video_unet,
    freeze_for_training,
    motion_attention_types,
    parameter_counts,
    predict_noise,
)
from nadm.tiny import TINY_MOTION, tiny_motion_config, tiny_unet

B, C, F, H, W = 2, 4, 4, 8, 8


def _inputs(seed=0, frames=F):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, frames, H, W, generator=g)
    t = torch.tensor([10, 700])
    text = torch.randn(B, 77, 32, generator=g)
    return x, t, text


def test_fresh_motion_modules_leave_each_frame_as_the_image_unet():
    unet2d = tiny_unet()
    video = build_video_unet(unet2d, TINY_MOTION)
    x, t, text = _inputs()
    with torch.no_grad():
        out = predict_noise(video, x, t, text)
        ref = torch.stack([unet2d(x[:, :, i], t, encoder_hidden_states=text).sample for i in range(F)], dim=2)
    assert out.shape == (B, C, F, H, W)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_attention_types_follow_the_config():
    video = build_video_unet(tiny_unet(), TINY_MOTION)
    types = motion_attention_types(video)
    assert {v for k, v in types.items() if ".attn1." in k} == {"versatile"}
    assert {v for k, v in types.items() if ".attn2." in k} == {"sparse_causal"}
    base = build_video_unet(tiny_unet(), tiny_motion_config(attn2="versatile"))
    assert set(motion_attention_types(base).values()) == {"versatile"}
    assert tiny_motion_config(attn2="versatile").kind == "animatediff"
    assert NADMConfig.ablation(versatile=False).attn1 == "off"
    assert NADMConfig.ablation(sparse_causal=False).kind == "ablation"
    assert NADMConfig().motion_max_seq_length >= 32


def _first_attention(video, which):
    block = video.down_blocks[0].motion_modules[0].transformer_blocks[0]
    return getattr(block, which)


def _masked_softmax_attention(attn, x, mask):
    """Plain multi-head softmax attention with a boolean (frames, frames) mask, straight from Eq. 6."""
    n, f, c = x.shape
    heads = attn.heads
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    split = lambda y: y.reshape(n, f, heads, c // heads).transpose(1, 2)  # (n, heads, f, d)
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(c // heads)
    scores = scores.masked_fill(~mask, float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, f, c)
    return attn.to_out[0](out)


def _eq8_mask(f):
    """(M_sparse-causal)_ij = 1 iff j = i - 1; frame 1 (no predecessor) attends to itself."""
    mask = torch.zeros(f, f, dtype=torch.bool)
    for i in range(f):
        mask[i, max(i - 1, 0)] = True
    return mask


def _randomise(module):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("frames", [1, 4, 8])
def test_sparse_causal_equals_masked_softmax_attention(frames):
    video = build_video_unet(tiny_unet(), TINY_MOTION)
    attn = _first_attention(video, "attn2")
    _randomise(attn)
    assert isinstance(attn.processor, SparseCausalAttnProcessor)
    x = torch.randn(5, frames, attn.to_q.in_features)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _masked_softmax_attention(attn, x, _eq8_mask(frames)), atol=1e-5, rtol=1e-5)


def _dependence(attn, frames=6):
    """dep[i][j]: does the output at frame i change when only frame j's input changes?"""
    x = torch.randn(3, frames, attn.to_q.in_features)
    with torch.no_grad():
        base = attn(x)
        dep = []
        for j in range(frames):
            y = x.clone()
            y[:, j] += torch.randn_like(y[:, j])
            dep.append([(attn(y)[:, i] - base[:, i]).abs().max().item() > 1e-6 for i in range(frames)])
    return [[dep[j][i] for j in range(frames)] for i in range(frames)]


def test_sparse_causal_sees_only_the_previous_frame():
    video = build_video_unet(tiny_unet(), TINY_MOTION)
    attn = _first_attention(video, "attn2")
    _randomise(attn)
    dep = _dependence(attn)
    for i, row in enumerate(dep):
        expected = [j == max(i - 1, 0) for j in range(len(row))]
        assert row == expected, f"frame {i} depends on {row}"


def test_versatile_sees_every_frame():
    video = build_video_unet(tiny_unet(), TINY_MOTION)
    attn = _first_attention(video, "attn1")
    _randomise(attn)
    assert all(all(row) for row in _dependence(attn))


def test_too_many_frames_is_refused():
    video = build_video_unet(tiny_unet(), TINY_MOTION)
    x, t, text = _inputs(frames=TINY_MOTION.motion_max_seq_length + 1)
    with pytest.raises(ValueError, match="position encoding"):
        predict_noise(video, x, t, text)


def test_mismatched_motion_module_is_refused():
    with pytest.raises(ValueError, match="block_out_channels"):
        build_video_unet(tiny_unet(), NADMConfig())


def test_only_motion_and_adapter_train_and_frozen_weights_stay_bitwise():
    from nadm.losses import NoiseAdapter, diffusion_loss, noise_contrastive_loss, total_loss

    video = build_video_unet(tiny_unet(), TINY_MOTION)
    adapter = NoiseAdapter.from_config(TINY_MOTION)
    freeze_for_training(video, adapter)
    trainable = [n for n, p in video.named_parameters() if p.requires_grad]
    assert trainable and all("motion_modules" in n for n in trainable)
    assert all(p.requires_grad for p in adapter.parameters())
    counts = parameter_counts(video)
    assert counts["trainable"] == counts["motion"] > 0 and counts["frozen"] > 0
    frozen = {n: p.detach().clone() for n, p in video.named_parameters() if not p.requires_grad}
    motion_before = {n: p.detach().clone() for n, p in video.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in video.parameters() if p.requires_grad] + list(adapter.parameters()), lr=1e-3)
    x, t, text = _inputs()
    noise = torch.randn_like(x)
    pred = predict_noise(video, x, t, text)
    loss = total_loss(diffusion_loss(pred, noise), noise_contrastive_loss(adapter(pred), m=1))
    loss.backward()
    assert all(p.grad is not None for p in adapter.parameters())
    opt.step()
    for n, p in video.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen weight {n} changed"
    assert any(not torch.equal(p, motion_before[n]) for n, p in video.named_parameters() if p.requires_grad)
