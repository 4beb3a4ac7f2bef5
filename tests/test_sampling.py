"""The one denoising loop (nadm.sampling): windows fuse to the whole-clip prediction, holds run after every step."""

import torch

from nadm.sampling import OnePrompt, Window, all_frames, denoise, fused_noise, guided


def _framewise_unet(x, t, text):
    """A UNet stand-in that treats frames independently, so any window split must fuse back to the same noise."""
    return torch.tanh(x * 0.5 + text.mean()) * (1 + t.float() / 1000)


def _latents(frames=7):
    return torch.randn(1, 4, frames, 3, 3, generator=torch.Generator().manual_seed(0))


def test_guidance_combines_negative_and_prompt_and_passes_single_batch():
    eps = torch.stack([torch.zeros(2), torch.ones(2)])
    assert torch.equal(guided(eps, 8.0), torch.full((1, 2), 8.0))
    assert torch.equal(guided(eps[1:], 8.0), eps[1:])


def test_overlapping_windows_fuse_to_the_whole_clip_prediction():
    x, t = _latents(), torch.tensor(500)
    text = OnePrompt(torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1)))
    whole = fused_noise(_framewise_unet, x, t, all_frames(0, 7), text, 8.0)
    # windows 0-3 and 2-6 overlap on frames 2, 3: weights there split 0.25 / 0.75, elsewhere 1
    w1 = Window((0, 1, 2, 3), torch.tensor([1.0, 1.0, 0.25, 0.25]))
    w2 = Window((2, 3, 4, 5, 6), torch.tensor([0.75, 0.75, 1.0, 1.0, 1.0]))
    split = fused_noise(_framewise_unet, x, t, [w1, w2], text, 8.0)
    torch.testing.assert_close(split, whole, rtol=1e-6, atol=1e-6)


def test_holds_run_before_the_first_step_and_after_every_step():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    scheduler.set_timesteps(4)
    seen = []

    def hold(latents, sched, index):
        seen.append(index)
        latents = latents.clone()
        latents[:, :, 0] = 0.0  # frame 0 held to a constant
        return latents

    out = denoise(_framewise_unet, scheduler, _latents(), OnePrompt(torch.zeros(1, 5, 8)), 1.0, holds=[hold], progress=False)
    assert seen == [0, 1, 2, 3, 4]
    assert torch.equal(out[:, :, 0], torch.zeros_like(out[:, :, 0]))
    assert out[:, :, 1:].abs().sum() > 0
