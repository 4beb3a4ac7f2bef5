"""`nadm animate` (issue 14): reading and fitting paintings, the painting hold in the one loop, the exact first frame,
still regions, SDEdit strength, colour anchoring, motion scale, the command line and every bad input."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from nadm.animate import (
    FEATHER,
    PaintingCondition,
    PaintingHold,
    feathered,
    lab,
    prepare_painting,
    sdedit_start,
)
from nadm.errors import NADMError
from nadm.image import output_size, paper_colour, read_picture
from nadm.pipeline import InvalidRequest, NADMPipeline, make_scheduler
from nadm.sampling import OnePrompt, denoise
from nadm.tiny import build_tiny_base, build_tiny_motion, tiny_motion_config

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny models

LEAF = "paintings/stevenling_landscape/shanshui_train_068.jpg"  # 458x265 album leaf (about 16:9)
SCROLL = "paintings/stevenling_landscape/shanshui_train_085.jpg"  # 127x458 hanging scroll (about 1:3.6)
PROMPT = "mist drifting over mountains, ink wash"
LEAF_SIZE = dict(height=72, width=128)  # exactly 16:9
SMALL = dict(num_frames=4, steps=2, seed=0)


@pytest.fixture
def leaf(shared_data) -> Path:
    return shared_data / LEAF


@pytest.fixture
def scroll(shared_data) -> Path:
    return shared_data / SCROLL


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random base, a tiny NADM checkpoint and a tiny AnimateDiff-kind checkpoint (both attentions versatile)."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "base": build_tiny_base(root / "base"),
        "nadm": build_tiny_motion(root / "motion"),
        "animatediff": build_tiny_motion(root / "motion-ad", tiny_motion_config(attn2="versatile")),
    }


@pytest.fixture(scope="module")
def pipe(tiny):
    return NADMPipeline.from_pretrained(tiny["base"], motion=tiny["nadm"], progress=False)


def _painting(path, size, **kw) -> np.ndarray:
    """A real painting scaled down to `size` (w, h), as uint8 RGB."""
    return np.asarray(Image.open(path).convert("RGB").resize(size, Image.Resampling.LANCZOS))


# ------------------------------------------------------------------------------------------ image input


def test_jpeg_exif_orientation_is_applied(leaf, tmp_path):
    stored = np.rot90(_painting(leaf, (160, 96)))  # stored on its side (96 wide, 160 tall); EXIF 6 turns it upright
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    decoded = np.asarray(Image.open(tmp_path / "turned.jpg").convert("RGB"))  # the JPEG's own pixels, not turned
    picture = read_picture(tmp_path / "turned.jpg")
    assert picture.size == (96, 160)
    assert np.array_equal(picture.pixels, np.rot90(decoded, -1))


def test_png_alpha_is_composited_on_the_paper_colour(leaf, tmp_path):
    rgb = _painting(leaf, (160, 96))
    alpha = np.zeros((96, 160), np.uint8)
    alpha[10:-10, 12:-12] = 255  # a cut-out painting on a transparent surround...
    alpha[40:50, 60:70] = 128  # ...with a half-transparent patch
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "cutout.png")
    picture = read_picture(tmp_path / "cutout.png")
    # the paper colour is the median colour along the edge of the opaque painting
    ring = np.zeros((96, 160), bool)
    ring[10:-10, 12:-12] = True
    ring[12:-12, 14:-14] = False  # 2 px: EDGE (2%) of the shorter side, 96 px
    paper = tuple(int(v) for v in np.median(rgb[ring & (alpha >= 128)], axis=0).round())
    assert picture.paper == paper == paper_colour(rgb, alpha / 255.0)
    assert (picture.pixels[alpha == 0] == paper).all()
    assert np.array_equal(picture.pixels[alpha == 255], rgb[alpha == 255])
    expected = np.rint(rgb[45, 65] * (128 / 255) + np.array(paper) * (1 - 128 / 255))
    assert np.array_equal(picture.pixels[45, 65], expected.astype(np.uint8))


def test_sixteen_bit_webp_tiff_greyscale_and_cmyk(leaf, tmp_path):
    import cv2

    rgb = _painting(leaf, (160, 96))
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    cv2.imwrite(str(tmp_path / "rgb16.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey.astype(np.uint16) * 257)
    Image.fromarray(rgb).save(tmp_path / "leaf.webp", lossless=True)
    Image.fromarray(rgb).save(tmp_path / "leaf.tif")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")  # Pillow would clip it at 255 unscaled
    for name in ("rgb16.png", "leaf.webp", "leaf.tif"):
        assert np.array_equal(read_picture(tmp_path / name).pixels, rgb), name
    for name in ("grey16.png", "grey.png"):
        assert np.array_equal(read_picture(tmp_path / name).pixels, np.dstack([grey] * 3)), name
    cmyk = read_picture(tmp_path / "cmyk.jpg")
    assert cmyk.size == (96, 160) and np.abs(cmyk.pixels.astype(int) - rgb).mean() < 6  # JPEG-lossy, same picture


def test_default_size_keeps_the_aspect_ratio_with_long_side_512(leaf, scroll):
    assert output_size((265, 458)) == (296, 512)  # the 16:9-ish leaf
    assert output_size((458, 127)) == (512, 144)  # the hanging scroll
    assert output_size((265, 458), height=64) == (64, 112) and output_size((458, 127), width=32) == (112, 32)
    assert output_size((265, 458), 72, 128) == (72, 128)
    painting = prepare_painting(leaf)
    assert painting.size == (296, 512) and painting.image["sha256"] == hashlib.sha256(leaf.read_bytes()).hexdigest()


def test_fit_crop_pad_and_stretch(scroll):
    picture = read_picture(scroll)
    for fit in ("crop", "pad", "stretch"):
        p = prepare_painting(scroll, fit=fit, height=96, width=32)  # 1:3; the scroll is narrower (1:3.6)
        assert p.pixels.shape == (96, 32, 3) and p.fit == fit
        assert p.still.any() == (fit == "pad")  # only padding is still without a mask
    pad = prepare_painting(scroll, fit="pad", height=96, width=32)
    band = pad.still.all(axis=0)  # whole columns of paper on the left and right
    assert band[0] and band[-1] and not band[16] and pad.still[:, 16].sum() == 0
    assert (pad.pixels[pad.still] == picture.paper).all()
    crop = prepare_painting(scroll, fit="crop", height=96, width=32)
    assert not np.array_equal(crop.pixels[:, :3], pad.pixels[:, :3])  # crop fills the frame with painting


# ------------------------------------------------------------------------------------------ bad input


def _bad_inputs(root: Path, leaf: Path) -> dict:
    """name -> (image, mask, message): every kind of unusable input of the issue's item 2."""
    (root / "notes.jpg").write_text("not a picture")
    (root / "cut.jpg").write_bytes(leaf.read_bytes()[:300])  # a truncated JPEG
    Image.new("RGB", (60, 200), "white").save(root / "tiny.png")
    frames = [Image.new("RGB", (100, 100), c) for c in ("white", "black")]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(root / "pages.tif", save_all=True, append_images=frames[1:])
    Image.new("L", (100, 100), 255).save(root / "square-mask.png")
    Image.new("RGBA", (100, 100), (255, 255, 255, 0)).save(root / "clear.png")
    return {
        "not an image": (root / "notes.jpg", None, "not an image, or damaged"),
        "damaged": (root / "cut.jpg", None, "not an image, or damaged"),
        "missing": (root / "nowhere.png", None, "image not found"),
        "too small": (root / "tiny.png", None, "is 60x200: both sides must be at least 64 pixels"),
        "transparent": (root / "clear.png", None, "is fully transparent"),
        "animation": (root / "anim.gif", None, "has 2 frames (an animation or multi-page file)"),
        "multi-page": (root / "pages.tif", None, "has 2 frames (an animation or multi-page file)"),
        "mask aspect": (leaf, root / "square-mask.png", "draw the mask at the image's proportions"),
        "mask not an image": (leaf, root / "notes.jpg", "cannot read still mask"),
        "mask missing": (leaf, root / "nowhere.png", "still mask not found"),
    }


def test_bad_images_are_refused_by_the_api(leaf, tmp_path):
    for name, (image, mask, message) in _bad_inputs(tmp_path, leaf).items():
        with pytest.raises(NADMError, match=message.replace("(", r"\(").replace(")", r"\)")):
            prepare_painting(image, mask)


# ------------------------------------------------------------------------------------------ the pieces


def test_sdedit_start_and_feathered_edge():
    assert [sdedit_start(25, s) for s in (1.0, 0.8, 0.5, 0.0)] == [0, 5, 13, 25]
    still = np.zeros((40, 60), bool)
    still[:20] = True
    alpha = feathered(still, 8)
    assert (alpha[:16] == 1).all() and (alpha[24:] == 0).all()  # exact beyond width/2 from the edge
    assert 0 < alpha[17, 0] < 1 and alpha[19, 0] > 0.5 > alpha[20, 0]  # a ramp across it
    assert np.array_equal(feathered(still, 0), still.astype(np.float32))


@pytest.mark.parametrize("start", [0, 3])
@pytest.mark.parametrize("name", ["ddim", "euler", "dpm++"])
def test_hold_puts_the_painting_back_at_the_samplers_own_noise_level(name, start):
    """With a denoiser that knows the clean clip, each sampler's state lies on add_noise(painting, noise, t) at every
    step: a hold at the right level changes (almost) nothing, one a step off changes a lot."""
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(8)
    g = torch.Generator().manual_seed(0)
    painting, noise = torch.randn(1, 4, 1, 4, 4, generator=g), torch.randn(1, 4, 1, 4, 4, generator=g)
    clip, clip_noise = painting.expand(1, 4, 3, 4, 4), noise.expand(1, 4, 3, 4, 4)
    alphas = scheduler.alphas_cumprod

    def perfect(x, t, text):  # x is the scaled model input, sqrt(a) z_0 + sqrt(1 - a) eps for every sampler
        a = alphas[int(t)]
        return (x - a.sqrt() * clip) / (1 - a).sqrt()

    held = torch.zeros(1, 1, 3, 4, 4, dtype=torch.bool)
    held[:, :, 0], held[:, :, 1:, :2] = True, True  # frame 0 and a still patch in the other frames
    hold = PaintingHold(painting, noise, held)
    changes, off_by_one = [], []

    def recording(latents, sched, index):
        out = hold(latents, sched, index)
        changes.append(float((out - latents).abs().max() / (1 + latents.abs().max())))
        if 0 < index < len(sched.timesteps):
            off_by_one.append(float((hold.target(sched, index - 1) - out[:, :, :1]).abs().max()))
        return out

    steps = scheduler.timesteps
    latents = scheduler.add_noise(clip, clip_noise, steps[start : start + 1])
    out = denoise(perfect, scheduler, latents, OnePrompt(torch.zeros(1, 5, 8)), 1.0, holds=[recording], start=start, progress=False)
    assert len(changes) == len(steps) - start + 1
    assert max(changes) < 1e-4, changes
    assert min(off_by_one) > 1e-2
    torch.testing.assert_close(out, clip, atol=1e-4, rtol=1e-4)  # the loop ends clean, on the painting


# ------------------------------------------------------------------------------------------ the pipeline


@pytest.mark.parametrize("kind, guidance", [("nadm", 8.0), ("nadm", 1.0), ("animatediff", 8.0)])
def test_first_frame_is_the_fitted_painting_exactly(tiny, pipe, leaf, scroll, kind, guidance):
    p = pipe if kind == "nadm" else NADMPipeline.from_pretrained(tiny["base"], motion=tiny["animatediff"], progress=False)
    assert p.motion_config.kind == kind
    for image, size, fit in ((leaf, LEAF_SIZE, "crop"), (scroll, dict(height=96, width=32), "pad")):
        video = p.animate(image, PROMPT, fit=fit, guidance=guidance, **size, **SMALL)
        fitted = prepare_painting(image, fit=fit, **size).pixels
        assert video.keyframes.shape == (4, *fitted.shape) and video.frames.shape == (7, *fitted.shape)
        assert np.array_equal(video.keyframes[0], fitted) and np.array_equal(video.frames[0], fitted)
        assert np.array_equal(video.frames[::2], video.keyframes)  # interpolation keeps the generated frames
        moved = np.abs(video.keyframes[1:].astype(int) - fitted).mean()
        assert moved > 1, (kind, guidance, image.name)  # the later frames are generated, not copies
        s = video.settings
        assert s["animate"]["fit"] == fit and s["guidance"] == guidance and s["motion"]["kind"] == kind


def test_still_regions_equal_the_painting_outside_the_feather_band(pipe, leaf, tmp_path):
    mask = np.zeros((132, 229), np.uint8)  # the leaf's proportions at half its size
    mask[:60] = 255  # the top (sky, trees) stays; the bottom moves
    Image.fromarray(mask).save(tmp_path / "still.png")
    video = pipe.animate(leaf, PROMPT, still=tmp_path / "still.png", **LEAF_SIZE, **SMALL)
    painting = prepare_painting(leaf, tmp_path / "still.png", **LEAF_SIZE)
    # pixels deeper than FEATHER/2 inside the still region (measured independently of nadm's own alpha)
    depth = ndimage.distance_transform_edt(painting.still)
    core = depth > FEATHER / 2 + 0.5
    assert core.sum() > 500 and painting.still[:25].all() and not painting.still[40:].any()
    for frame in video.frames:  # generated and interpolated frames alike
        assert np.array_equal(frame[core], painting.pixels[core])
    moving = ndimage.distance_transform_edt(~painting.still) > FEATHER / 2 + 0.5
    assert np.abs(video.keyframes[1:, moving].astype(int) - painting.pixels[moving]).mean() > 1
    assert video.settings["animate"]["still_mask"]["sha256"] == hashlib.sha256((tmp_path / "still.png").read_bytes()).hexdigest()


def test_strength_zero_gives_copies_and_lower_strength_stays_nearer(pipe, leaf):
    video = pipe.animate(leaf, PROMPT, strength=0.0, **LEAF_SIZE, **SMALL)
    fitted = prepare_painting(leaf, **LEAF_SIZE).pixels
    assert all(np.array_equal(frame, fitted) for frame in video.frames) and len(video.frames) == 7
    assert video.settings["animate"]["start_step"] == 2
    # below 1 the later frames start from the noised painting: nearer its VAE reconstruction, the lower the strength
    with torch.inference_mode():
        reconstruction = pipe.decode_latents(pipe.encode_frames(fitted[None]))[0].astype(int)
    distance = {}
    for strength in (1.0, 0.3, 0.1):
        frames = pipe.animate(leaf, PROMPT, strength=strength, color_anchor=False, interpolate=False, **LEAF_SIZE,
                              **{**SMALL, "steps": 10}).keyframes  # fmt: skip
        distance[strength] = np.abs(frames[1:].astype(int) - reconstruction).mean()
    assert distance[1.0] > distance[0.3] > distance[0.1], distance


def test_seeds_and_colour_anchoring(pipe, leaf, tmp_path):
    mask = np.zeros((265, 458), np.uint8)
    mask[:, :150] = 255  # the left third stays
    Image.fromarray(mask).save(tmp_path / "still.png")
    run = dict(still=tmp_path / "still.png", **LEAF_SIZE, num_frames=4, steps=2)
    a, b, c = (pipe.animate(leaf, PROMPT, seed=s, **run) for s in (5, 5, 6))
    assert np.array_equal(a.frames, b.frames)
    painting = prepare_painting(leaf, tmp_path / "still.png", **LEAF_SIZE)
    alpha = feathered(painting.still)
    moving, held = alpha == 0, alpha == 1
    assert np.abs(a.keyframes[1:, moving].astype(int) - c.keyframes[1:, moving]).mean() > 1  # another clip...
    assert held.sum() > 1000 and np.array_equal(a.keyframes[:, held], c.keyframes[:, held])  # ...the same still part
    # every output frame's Lab mean per channel in the moving region within 1.0 of frame 0's (the painting's)
    def drift(frames):
        means = lab(frames)[:, moving].mean(axis=1)  # (n, 3)
        return np.abs(means[1:] - means[0]).max()

    assert drift(a.frames) <= 1.0, drift(a.frames)
    free = pipe.animate(leaf, PROMPT, seed=5, color_anchor=False, **run)
    assert drift(free.frames) > 5.0 and a.settings["animate"]["color_anchor"] and not free.settings["animate"]["color_anchor"]


class PerFrameSD(torch.nn.Module):
    """SD's own UNet2D run on every frame alone, behind the video UNet's interface: what motion scale 0 must equal."""

    def __init__(self, unet2d, max_frames: int = 32):
        super().__init__()
        self.unet = unet2d
        self.config = SimpleNamespace(motion_max_seq_length=max_frames, in_channels=unet2d.config.in_channels)

    @property
    def dtype(self):
        return self.unet.dtype

    def forward(self, latents, t, encoder_hidden_states):
        b, c, f, h, w = latents.shape
        x = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # (b*f, c, h, w): frame-major per video
        eps = self.unet(x, t, encoder_hidden_states=encoder_hidden_states).sample
        return SimpleNamespace(sample=eps.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4))


def test_motion_scale_zero_equals_per_frame_sd(tiny, pipe, leaf):
    from nadm.base import load_base
    from nadm.motion import predict_noise, scaled_motion

    unet2d = load_base(tiny["base"]).unet
    sd = NADMPipeline(PerFrameSD(unet2d), pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.motion_config, progress=False)
    # one noise prediction
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(2, 4, 4, 9, 16, generator=g), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad(), scaled_motion(pipe.video_unet, 0.0):
        eps = predict_noise(pipe.video_unet, x, torch.tensor(500), text)
    torch.testing.assert_close(eps, predict_noise(sd.video_unet, x, torch.tensor(500), text), atol=1e-5, rtol=1e-5)
    # whole clips, text-to-video and animated
    size = dict(**LEAF_SIZE, **SMALL, interpolate=False)
    for run in (lambda p, **kw: p(PROMPT, **size, **kw), lambda p, **kw: p.animate(leaf, PROMPT, **size, **kw)):
        still, reference = run(pipe, motion_scale=0.0).keyframes, run(sd).keyframes
        assert np.abs(still.astype(int) - reference).max() <= 1
        moving = run(pipe).keyframes
        assert np.abs(moving.astype(int) - reference).mean() > 1  # the motion modules act at scale 1...
        assert not np.array_equal(run(pipe, motion_scale=0.5).keyframes, moving)  # ...and in part at 0.5
        assert np.array_equal(run(pipe).keyframes, moving)  # the hooks are gone after each call
    assert pipe(PROMPT, **size, motion_scale=0.5).settings["motion_scale"] == 0.5


def test_bad_animation_settings_are_refused(pipe, leaf):
    for kwargs, message in [
        (dict(strength=1.5), "strength must be a number from 0 to 1"),
        (dict(context=1), "context must be an integer >= 2"),
        (dict(motion_scale=-1.0), "motion scale must be a finite number >= 0"),
        (dict(fit="zoom"), "unknown fit 'zoom'"),
        (dict(height=100), "height must be a positive multiple of 8"),
    ]:
        with pytest.raises(NADMError, match=message):
            pipe.animate(leaf, **{**LEAF_SIZE, **kwargs}, **SMALL)
    with pytest.raises(InvalidRequest, match="strength"):  # a ValueError to Python callers
        PaintingCondition(prepare_painting(leaf, **LEAF_SIZE), strength=-0.1)


def test_a_painting_loops_back_to_itself_in_a_long_travelling_clip(pipe, leaf):
    """Issue 15 with issue 14: 64 frames in windows, prompt travel and a loop, from a painting held as frame 0."""
    size = dict(height=32, width=56)
    video = pipe.animate(leaf, {0: "spring mist over the peaks", 40: "autumn rain"}, num_frames=64, loop=True, steps=2,
                         seed=0, **size)  # fmt: skip
    painting = prepare_painting(leaf, **size).pixels
    assert video.frames.shape == (128, 32, 56, 3) and video.keyframes.shape[0] == 64  # 2N: the wrap pair filled too
    assert np.array_equal(video.frames[0], painting) and np.array_equal(video.keyframes[0], painting)
    s = video.settings
    assert s["loop"] is True and s["animate"]["loop"] is True and s["interpolation"]["loop"] is True
    assert s["prompt"] == {"0": "spring mist over the peaks", "40": "autumn rain"} and s["travel"]["keys"] == 2
    assert s["windows"]["loop"] is True and s["windows"]["windows_per_step"] > 1  # ring windows over 64 frames
    # the wrap frame (between the last keyframe and the painting) lies between them
    last, wrap = video.keyframes[-1].astype(float), video.frames[-1].astype(float)
    assert np.abs(wrap - painting).mean() < np.abs(last - painting).mean()


# ------------------------------------------------------------------------------------------ command line

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_animate_command_writes_png_frames_and_a_sidecar(tiny, leaf, tmp_path):
    mask = np.zeros((265, 458), np.uint8)
    mask[:100] = 255
    Image.fromarray(mask).save(tmp_path / "still.png")
    out = tmp_path / "frames"
    args = [leaf, "-o", out, "--still", tmp_path / "still.png", "--height", "72", "--width", "128", "--frames", "4",
            "--steps", "2", "--seed", "3", "--strength", "0.8", "--motion-scale", "0.5", "--base", tiny["base"],
            "--motion", tiny["nadm"], "--quiet"]  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "nadm", "animate", *map(str, args)], capture_output=True, text=True,
                         timeout=300, env=ENV)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}: 7 frames (4 generated), 128x72, 14 fps, seed 3" in run.stdout
    painting = prepare_painting(leaf, tmp_path / "still.png", **LEAF_SIZE)
    files = sorted(out.glob("*.png"))
    assert len(files) == 7
    assert np.array_equal(np.asarray(Image.open(files[0]).convert("RGB")), painting.pixels)
    core = ndimage.distance_transform_edt(painting.still) > FEATHER / 2 + 0.5
    assert all(np.array_equal(np.asarray(Image.open(f).convert("RGB"))[core], painting.pixels[core]) for f in files)
    side = json.loads((tmp_path / "frames.json").read_text())
    a = side["animate"]
    assert a["image"]["sha256"] == hashlib.sha256(leaf.read_bytes()).hexdigest() and a["image"]["source"] == str(leaf)
    assert a["still_mask"]["sha256"] == hashlib.sha256((tmp_path / "still.png").read_bytes()).hexdigest()
    assert (a["fit"], a["strength"], a["color_anchor"], a["loop"], a["start_step"]) == ("crop", 0.8, True, False, 1)
    assert side["motion_scale"] == 0.5 and side["prompt"].startswith("a Chinese landscape painting")


def _cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """`nadm ARGS` in this process, with model loading made to fail loudly: (exit code, stderr)."""
    from nadm import checkpoint, cli

    def loading(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(checkpoint, "load_motion_source", loading)
    monkeypatch.setattr(NADMPipeline, "from_pretrained", loading)
    with pytest.raises(SystemExit) as exit:
        cli.main([str(a) for a in args])
    return exit.value.code, capsys.readouterr().err


def test_every_bad_input_is_one_line_exit_2_and_writes_nothing(tiny, leaf, tmp_path, monkeypatch, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cases = {name: ([image] + (["--still", mask] if mask else []), message)
             for name, (image, mask, message) in _bad_inputs(inputs, leaf).items()}  # fmt: skip
    cases |= {
        "strength": ([leaf, "--strength", "1.5"], "strength must be a number from 0 to 1, got 1.5"),
        "prompt and travel": ([leaf, "mist", "--travel", "0: rain"], "give PROMPT or --travel/--travel-file, not both"),
        "overlap": ([leaf, "--context", "4", "--overlap", "4"], "overlap must be smaller than the context (4 frames)"),
        "motion scale": ([leaf, "--motion-scale", "-1"], "motion scale must be a finite number >= 0"),
        "size": ([leaf, "--height", "100"], "height must be a positive multiple of 8 (the VAE downsamples by 8), got 100"),
        "empty prompt": ([leaf, " "], "the prompt is empty"),
        "exists": ([leaf, "--no-overwrite"], "already exists: pass --overwrite to replace it"),
    }
    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    for name, (args, message) in cases.items():
        out.write_bytes(b"precious")  # a previous result that must survive any failure
        overwrite = [] if "--no-overwrite" in args else ["--overwrite"]
        args = [a for a in args if a != "--no-overwrite"]
        code, err = _cli(monkeypatch, capsys, "animate", *args, "-o", out, "--base", tiny["base"], "--motion", tiny["nadm"],
                         "--frames", 4, "--steps", 2, *overwrite)  # fmt: skip
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(errors) == 1 and message in errors[0], (name, err)
        assert out.read_bytes() == b"precious" and [p.name for p in out.parent.iterdir()] == ["clip.mp4"], name


def test_not_an_image_from_a_real_process(tmp_path):
    (tmp_path / "scan.jpg").write_bytes(b"\x00" * 100)
    run = subprocess.run([sys.executable, "-m", "nadm", "animate", str(tmp_path / "scan.jpg"), "-o", str(tmp_path / "o.mp4")],
                         capture_output=True, text=True, timeout=120, env=ENV)  # fmt: skip
    assert run.returncode == 2 and run.stderr.startswith("error: cannot read image") and "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.jpg"]


def test_generate_records_its_motion_scale(tiny, tmp_path, monkeypatch, capsys):
    from nadm import cli

    out = tmp_path / "clip.gif"
    with pytest.raises(SystemExit) as exit:
        cli.main(["generate", PROMPT, "-o", str(out), "--base", str(tiny["base"]), "--motion", str(tiny["nadm"]),
                  "--frames", "4", "--steps", "2", "--height", "32", "--width", "32", "--motion-scale", "0.25",
                  "--no-interpolate", "--quiet"])  # fmt: skip
    assert exit.value.code == 0, capsys.readouterr().err
    assert json.loads(Path(f"{out}.json").read_text())["motion_scale"] == 0.25
