"""Long clips, seamless loops and prompt travel (issue 15): window schedules, ring windows, travel schedules, loop
interpolation, their sidecars and their errors, on the tiny models."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nadm.checkpoint import load_checkpoint, load_motion_source, save_checkpoint
from nadm.cli import main
from nadm.errors import NADMError
from nadm.interpolate import sofp
from nadm.io import read_video
from nadm.loops import interpolate_loop
from nadm.motion import predict_noise
from nadm.pipeline import NADMPipeline, make_scheduler
from nadm.sampling import OnePrompt, all_frames, denoise, fused_noise
from nadm.tiny import TINY_MOTION
from nadm.travel import InvalidTravel, TravelSchedule, check_travel, parse_travel, read_travel_file, travel_schedule
from nadm.windows import DEFAULT_CONTEXT, ContextPlan, InvalidWindows, plan_windows, pyramid, trained_frames

SMALL = dict(height=32, width=32, steps=2)
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny models


def _unet(pipe):
    return lambda x, t, text: predict_noise(pipe.video_unet, x, t, text)


def _framewise_unet(x, t, text):
    """Frames independent of each other: any window split must fuse back to the whole-clip prediction."""
    return torch.tanh(x * 0.5 + text.float().mean()) * (1 + t.float() / 1000)


def _noise(frames, seed=0, size=4):
    return torch.randn(1, 4, frames, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- windows


CASES = [(n, c, o) for n in (2, 3, 5, 16, 17, 31, 64, 100) for c in (2, 3, 8, 16) for o in (0, 1, c // 4, c - 1) if o < c]


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("schedule", ["static", "shifting"])
def test_weights_sum_to_one_and_every_frame_is_covered_at_every_step(loop, schedule):
    for n, c, o in CASES:
        if loop and n < 3:
            continue
        plan = ContextPlan(n, c, o, schedule, loop)
        for step in range(4):
            windows = plan(step, n)
            total = torch.zeros(n, dtype=torch.float64)
            for w in windows:
                assert len(w.frames) == min(c, n) == len(set(w.frames)) == len(w.weights)
                assert all((b - a) % n == 1 for a, b in zip(w.frames, w.frames[1:]))  # consecutive on the ring
                assert loop or list(w.frames) == sorted(w.frames)  # no wrap without a loop
                total.index_add_(0, torch.tensor(w.frames), w.weights.double())
            torch.testing.assert_close(total, torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-6, msg=f"{n, c, o, step}")


def test_window_layouts_and_pyramid_weights():
    assert pyramid(5).tolist() == [1, 2, 3, 2, 1] and pyramid(4).tolist() == [1, 2, 2, 1]
    static = ContextPlan(40, 16, 4)
    assert [w.frames[0] for w in static(0, 40)] == [0, 12, 24] and static(0, 40)[-1].frames[-1] == 39
    ring = ContextPlan(24, 8, 4, loop=True)
    assert [w.frames for w in ring(0, 24)][-1] == (20, 21, 22, 23, 0, 1, 2, 3)  # the ring ..., N-2, N-1, 0, 1, ...
    shifting = ContextPlan(40, 16, 4, "shifting")
    assert len({tuple(w.frames[0] for w in shifting(s, 40)) for s in range(6)}) > 2  # window edges move between steps
    rolled = ContextPlan(8, 16, 4, loop=True)  # a loop shorter than C: one window of all frames, start rotating
    starts = [rolled(s, 8)[0].frames[0] for s in range(8)]
    assert len(set(starts)) > 4 and all(sorted(rolled(s, 8)[0].frames) == list(range(8)) for s in range(8))
    assert rolled.describe()["schedule"] == "rolled" and static.describe()["windows_per_step"] == 3


def test_short_clips_use_the_one_window_path():
    for n in (2, 8, 16):
        windows = ContextPlan(n, 16, 4)(3, n)
        assert len(windows) == 1 and windows[0].frames == all_frames(0, n)[0].frames
        assert torch.equal(windows[0].weights, torch.ones(n))


def test_windows_fuse_to_the_whole_clip_prediction_in_any_batch():
    x, t = _noise(37), torch.tensor(400)
    text = OnePrompt(torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1)))
    whole = fused_noise(_framewise_unet, x, t, all_frames(0, 37), text, 8.0)
    for plan in (ContextPlan(37, 8, 2), ContextPlan(37, 8, 3, "shifting"), ContextPlan(37, 6, 2, loop=True)):
        for batch in (1, 2, 5):
            seen = []
            fused = fused_noise(_framewise_unet, x, t, plan(1, 37), text, 8.0, batch, seen.append)
            torch.testing.assert_close(fused, whole, rtol=1e-5, atol=1e-6)
            assert sum(seen) == len(plan(1, 37)) and max(seen) <= batch


def test_window_batch_matches_one_window_at_a_time_on_the_video_unet(pipe):
    x, t = _noise(20), torch.tensor(500)
    text = OnePrompt(pipe.encode_prompt(["", "ink mountains"]))
    windows = ContextPlan(20, 8, 2)(0, 20)
    with torch.inference_mode():
        one = fused_noise(_unet(pipe), x, t, windows, text, 8.0, 1)
        batched = fused_noise(_unet(pipe), x, t, windows, text, 8.0, 3)
    torch.testing.assert_close(batched, one, rtol=1e-4, atol=1e-5)


def test_clips_up_to_the_context_are_bit_identical_to_the_windowless_path(pipe):
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(2)
    text = OnePrompt(pipe.encode_prompt(["", "ink mountains"]))
    x = _noise(8)
    with torch.inference_mode():
        plain = denoise(_unet(pipe), scheduler, x, text, 8.0, progress=False)
        planned = denoise(_unet(pipe), scheduler, x, text, 8.0, windows=ContextPlan(8, 8, 2), progress=False)
    assert torch.equal(planned, plain)
    runs = [pipe("ink mountains", num_frames=8, seed=3, interpolate=False, context=c, **SMALL).keyframes for c in (8, 16, 32)]
    assert all(np.array_equal(r, runs[0]) for r in runs[1:])
    windowed = pipe("ink mountains", num_frames=8, seed=3, interpolate=False, context=4, overlap=1, **SMALL)
    assert not np.array_equal(windowed.keyframes, runs[0])  # windows of 4 do change an 8-frame clip
    assert windowed.settings["windows"]["windows_per_step"] == 3


@pytest.mark.parametrize("schedule", ["static", "shifting"])
def test_ring_windows_are_shift_equivariant_so_the_loop_has_no_seam(pipe, schedule):
    """Ring windows, N a multiple of the stride: rolling z_T by k strides rolls z_0 (and the frames) by as much
    (shifting ring windows too: every step's set of windows is invariant under a shift by the stride)."""
    n, plan = 24, ContextPlan(24, 8, 4, schedule, loop=True)  # stride 4
    text = OnePrompt(pipe.encode_prompt(["", "ink mountains"]))
    x = _noise(n, seed=5)

    def run(z, windows):
        scheduler = make_scheduler("ddim")
        scheduler.set_timesteps(2)
        with torch.inference_mode():
            return denoise(_unet(pipe), scheduler, z * scheduler.init_noise_sigma, text, 8.0, windows=windows, progress=False)

    shift = 8  # two strides
    out, rolled = run(x, plan), run(torch.roll(x, shift, dims=2), plan)
    torch.testing.assert_close(rolled, torch.roll(out, shift, dims=2), rtol=1e-4, atol=1e-4)
    frames, frames_rolled = pipe.decode_latents(out), pipe.decode_latents(rolled)
    assert np.abs(frames_rolled.astype(int) - np.roll(frames, shift, axis=0)).max() <= 1
    if schedule == "shifting":
        return
    # the same with clip windows (no loop) is not equivariant: the test can tell a seam
    line = ContextPlan(24, 8, 4)
    assert (run(torch.roll(x, shift, dims=2), line) - torch.roll(run(x, line), shift, dims=2)).abs().max() > 1e-2


# -------------------------------------------------------------------------------------------- loops


def test_interpolated_loop_has_2n_frames_and_the_wrap_frame_last():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    out = interpolate_loop(frames, flow="dis")
    assert out.shape == (10, 32, 32, 3) and np.array_equal(out[::2], frames)
    assert np.array_equal(out[-1], sofp(frames[[-1, 0]], flow="dis")[1])  # between the last frame and the first
    assert not np.array_equal(out[-1], frames[-1]) and not np.array_equal(out[-1], frames[0])
    assert interpolate_loop(frames, 2, "crossfade").shape == (20, 32, 32, 3)


def test_loop_clip_in_python(pipe):
    video = pipe("ink mountains", num_frames=6, seed=1, loop=True, **SMALL)
    assert video.keyframes.shape[0] == 6 and video.frames.shape[0] == 12 and video.fps == 16.0
    s = video.settings
    assert s["loop"] is True and s["interpolation"]["loop"] is True and s["windows"]["schedule"] == "rolled"


# ------------------------------------------------------------------------------------------- travel


def _schedule(keys, n, loop=False, interp="linear", negative=True):
    embeddings = torch.randn(len(keys), 3, 6, generator=torch.Generator().manual_seed(2))
    neg = torch.randn(1, 3, 6) if negative else None
    return TravelSchedule(tuple(keys), embeddings, neg, n, loop, interp)


@pytest.mark.parametrize("interp", ["linear", "slerp"])
def test_travel_embeddings_equal_keys_at_their_frames_and_lie_between_elsewhere(interp):
    s = _schedule([4, 12, 20], 24, interp=interp)
    text = s(range(24))
    assert text.shape == (2, 24, 3, 6) and all(torch.equal(text[0, f], s.negative[0]) for f in range(24))
    a, b, c = s.embeddings
    for key, emb in zip((4, 12, 20), (a, b, c)):
        assert torch.equal(text[1, key], emb)
    assert all(torch.equal(text[1, f], a) for f in range(4)) and all(torch.equal(text[1, f], c) for f in range(20, 24))
    for f in range(5, 12):  # between keys a (frame 4) and b (frame 12)
        e = text[1, f]
        if interp == "linear":
            assert bool(((e >= torch.minimum(a, b) - 1e-6) & (e <= torch.maximum(a, b) + 1e-6)).all())
        cos = lambda u, v: torch.nn.functional.cosine_similarity(u, v, dim=-1)  # noqa: E731
        previous = text[1, f - 1]
        assert bool((cos(e, a) <= cos(previous, a) + 1e-5).all()) and bool((cos(e, b) >= cos(previous, b) - 1e-5).all())
        assert not torch.allclose(e, a) and not torch.allclose(e, b)


def test_travel_wraps_around_a_loop_and_holds_without_one():
    looped, held = _schedule([4, 12], 16, loop=True), _schedule([4, 12], 16)
    a, b = looped.embeddings
    assert torch.equal(held.frame(14), b) and torch.equal(held.frame(0), a)
    # frames 13..15, 0..3 travel from b (frame 12) back to a (frame 4 + 16): frame 0 is half-way
    torch.testing.assert_close(looped.frame(0), (a + b) / 2)
    torch.testing.assert_close(looped.frame(14), b + (a - b) * 2 / 8)
    assert torch.equal(looped.frame(4), a) and torch.equal(looped.frame(12), b)


def test_travel_encodes_each_key_once_and_records_the_schedule(pipe):
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return pipe.encode_prompt(texts)

    sched = travel_schedule(encode, {0: "spring mist", 9: "autumn rain"}, "blurry", True, 12)
    assert calls == [["blurry", "spring mist", "autumn rain"]] and sched(range(12)).shape[:2] == (2, 12)
    video = pipe({0: "spring mist", 9: "autumn rain"}, negative_prompt="blurry", num_frames=12, seed=0,
                 interpolate=False, travel_interp="slerp", **SMALL)  # fmt: skip
    assert video.settings["prompt"] == {"0": "spring mist", "9": "autumn rain"}
    assert video.settings["travel"] == {"interpolation": "slerp", "keys": 2}
    one = pipe("spring mist", negative_prompt="blurry", num_frames=12, seed=0, interpolate=False, **SMALL)
    assert not np.array_equal(video.keyframes, one.keyframes)


def test_travel_loop_and_long_clip_together(pipe):
    """64 frames (4 windows of 16 on the ring), a travel schedule that wraps, interpolated to 128 frames."""
    video = pipe({0: "spring mist over the peaks", 40: "autumn rain, boats returning"}, num_frames=64, seed=2,
                 loop=True, height=32, width=32, steps=2)  # fmt: skip
    assert video.keyframes.shape == (64, 32, 32, 3) and video.frames.shape == (128, 32, 32, 3)
    w = video.settings["windows"]
    assert (w["context"], w["overlap"], w["loop"], w["schedule"], w["windows_per_step"]) == (16, 4, True, "shifting", 6)
    assert video.settings["interpolation"]["window"] == 16 and video.keyframes.std() > 1


def test_travel_parsing_and_files(tmp_path):
    assert parse_travel(["0: spring mist over the peaks", " 48 :autumn rain, boats: returning"]) == {
        0: "spring mist over the peaks", 48: "autumn rain, boats: returning"}
    (tmp_path / "t.yaml").write_text("0: spring mist\n48: autumn rain\n")
    (tmp_path / "t.json").write_text('{"0": "spring mist", "48": "autumn rain"}')
    (tmp_path / "l.yaml").write_text("- {frame: 0, prompt: spring mist}\n- {frame: 48, prompt: autumn rain}\n")
    for name in ("t.yaml", "t.json", "l.yaml"):
        assert read_travel_file(tmp_path / name) == {0: "spring mist", 48: "autumn rain"}


@pytest.mark.parametrize("keys, message", [
    ({0: "a", 64: "b"}, "travel key 64 is outside the clip's frames 0..63"),
    ({-1: "a"}, "travel key -1 is outside"),
    ({10: "a", 5: "b"}, "travel keys must increase: frame 5 comes after frame 10"),
    ({0: "a", 5: "  "}, "the travel prompt at frame 5 is empty"),
    ({}, "non-empty dict"),
    ({"0": "a"}, "travel keys must be integer frame numbers"),
])  # fmt: skip
def test_bad_travel_schedules(keys, message):
    with pytest.raises(InvalidTravel, match=message):
        check_travel(keys, 64)


@pytest.mark.parametrize("kwargs, message", [
    (dict(context=1), "context must be an integer >= 2"),
    (dict(context=8, overlap=8), "overlap must be smaller than the context (8 frames), got 8"),
    (dict(overlap=16), "overlap must be smaller than the context (16 frames), got 16"),
    (dict(context=40), "context must be at most 32"),
    (dict(window_batch=0), "window batch must be an integer >= 1"),
    (dict(loop=True, num_frames=2), "a loop needs at least 3 frames, got 2"),
    (dict(schedule="random"), "unknown window schedule 'random'"),
])  # fmt: skip
def test_bad_window_options(kwargs, message):
    args = {"num_frames": 20, **kwargs}
    with pytest.raises(InvalidWindows, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_windows(args.pop("num_frames"), 16, 32, **args)


# ------------------------------------------------------------------------------------------- context


def test_default_context_is_the_trained_clip_length(tmp_path, tiny):
    weights = load_motion_source(tiny["motion"])
    assert weights.trained_frames is None and trained_frames(weights) == DEFAULT_CONTEXT == 16  # stated fallback
    save_checkpoint(tmp_path / "eight", TINY_MOTION, weights.motion, trained_frames=8)
    assert load_checkpoint(tmp_path / "eight").trained_frames == 8
    save_checkpoint(tmp_path / "old", TINY_MOTION, weights.motion, extra={"train_config": {"data": {"frames": 12}}})
    assert load_checkpoint(tmp_path / "old").trained_frames == 12  # older training exports: their data.frames
    pipe8 = NADMPipeline.from_pretrained(tiny["base"], motion=tmp_path / "eight", progress=False)
    video = pipe8("ink", num_frames=12, seed=0, interpolate=False, **SMALL)
    assert video.settings["windows"]["context"] == 8 and video.settings["windows"]["windows_per_step"] == 2
    assert video.settings["windows"]["window_batch"] == 2  # 16 // C windows per UNet call by default


def test_frames_beyond_the_position_table(pipe):
    video = pipe("ink mountains", num_frames=40, seed=0, **SMALL)
    assert video.keyframes.shape[0] == 40 and video.frames.shape[0] == 79
    assert video.settings["interpolation"]["window"] == 16  # SOFP's T within one window of C frames


# ----------------------------------------------------------------------------------------------- CLI


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    return exit_.value.code, capsys.readouterr()


def test_generate_loop_with_travel_writes_a_looping_gif_and_its_sidecar(tiny, tmp_path, capsys):
    out = tmp_path / "loop.gif"
    code, io = _cli(capsys, "generate", "--travel", "0: spring mist", "--travel", "6: autumn rain", "--loop",
                    "--frames", 8, "--height", 32, "--width", 32, "--steps", 2, "--base", tiny["base"],
                    "--motion", tiny["motion"], "-o", out, "--seed", 4, "--quiet")  # fmt: skip
    assert code == 0, io.err
    frames, fps = read_video(out)
    assert frames.shape[0] == 16 and fps == 100 / 6  # 16 fps asked; GIF delays are whole 1/100 s: 6/100 s a frame
    assert Image.open(out).info.get("loop") == 0  # GIF: loop forever
    side = json.loads(out.with_name("loop.gif.json").read_text())
    assert side["loop"] is True and side["prompt"] == {"0": "spring mist", "6": "autumn rain"}
    assert side["windows"]["context"] == 16 and side["travel"]["interpolation"] == "linear"
    again = tmp_path / "again.webp"
    code, io = _cli(capsys, "interpolate", out, "--loop", "-o", again, "--method", "crossfade")
    assert code == 0 and "16 -> 32 frames" in io.out
    assert read_video(again)[0].shape[0] == 32 and json.loads(again.with_name("again.webp.json").read_text())["loop"]


@pytest.mark.parametrize("args, message", [
    (["ink", "--loop", "--frames", "2"], "a loop needs at least 3 frames, got 2"),
    (["ink", "--context", "1"], "context must be an integer >= 2, got 1"),
    (["ink", "--context", "8", "--overlap", "8"], "overlap must be smaller than the context (8 frames), got 8"),
    (["ink", "--context", "33"], "context must be at most 32, the motion module's position-encoding length, got 33"),
    (["--travel", "0: a", "--travel", "99: b"], "travel key 99 is outside the clip's frames 0..15"),
    (["--travel", "8: a", "--travel", "2: b"], "travel keys must increase: frame 2 comes after frame 8"),
    (["--travel", "2: a", "--travel", "2: b"], "--travel: frame 2 has two prompts"),
    (["--travel", "3:   "], "the travel prompt at frame 3 is empty"),
    (["--travel", "spring"], "bad --travel 'spring': write FRAME: PROMPT"),
    (["--travel-file", "{tmp}/bad.yaml"], "does not parse"),
    (["--travel-file", "{tmp}/bad.json"], "does not parse"),
    (["ink", "--travel", "0: a"], "give a PROMPT, --prompts FILE or --travel/--travel-file (one of the three)"),
])  # fmt: skip
def test_generate_errors_are_one_line_exit_2(tiny, tmp_path, capsys, args, message):
    (tmp_path / "bad.yaml").write_text("0: a\n  - b: [\n")
    (tmp_path / "bad.json").write_text('{"0": "a",}')
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, io = _cli(capsys, "generate", *args, "--base", tiny["base"], "--motion", tiny["motion"], "-o",
                    tmp_path / "c.mp4", "--height", 32, "--width", 32, "--steps", 1, "--quiet")  # fmt: skip
    errors = [line for line in io.err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and message in errors[0], io.err
    assert not (tmp_path / "c.mp4").exists()


def test_errors_reach_python_callers_as_value_errors(pipe):
    with pytest.raises(ValueError, match="travel key 20 is outside"):
        pipe({0: "a", 20: "b"}, num_frames=8, **SMALL)
    with pytest.raises(NADMError, match="a loop needs at least 3 frames"):
        pipe("ink", num_frames=2, loop=True, **SMALL)
    with pytest.raises(ValueError, match="unknown travel interpolation 'cubic'"):
        pipe({0: "a"}, num_frames=8, travel_interp="cubic", **SMALL)
