"""nadm.interpolate and `nadm interpolate` (paper Sec. III-E): flows, SOFP, baselines, CLI and its errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from nadm import interpolate as interp
from nadm.cli import main
from nadm.errors import NADMError
from nadm.io import read_video, write_video

REPO = Path(__file__).resolve().parents[1]
VELOCITY = (2.6, -1.4)  # px per frame, sub-pixel


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Band-limited colour noise (float, zero mean, unit std): textured but smooth enough to resample."""
    noise = np.random.default_rng(seed).normal(size=(h, w, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 2.0)
    return (tex - tex.mean()) / tex.std()


def _shifted(tex: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The texture translated by (dx, dy) px (bicubic), as uint8 RGB."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    img = cv2.warpAffine(tex, m, (tex.shape[1], tex.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return np.clip(128 + 50 * img, 0, 255).astype(np.uint8)


def _moving(n: int, h: int = 80, w: int = 112, velocity=VELOCITY, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n frames of a texture moving at `velocity`, and the n-1 true half-way frames."""
    tex = _texture(h, w, seed)
    frames = np.stack([_shifted(tex, k * velocity[0], k * velocity[1]) for k in range(n)])
    halves = np.stack([_shifted(tex, (k + 0.5) * velocity[0], (k + 0.5) * velocity[1]) for k in range(n - 1)])
    return frames, halves


def _psnr(a: np.ndarray, b: np.ndarray, border: int = 8) -> float:
    a = a[border:-border, border:-border].astype(np.float64)
    b = b[border:-border, border:-border].astype(np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


# ------------------------------------------------------------------------------------------------ flows


@pytest.mark.parametrize("name", ["dis", "farneback"])
def test_flow_backend_recovers_translation(name):
    frames, _ = _moving(2)
    flow = interp.get_flow(name)(frames[0], frames[1])
    assert flow.shape == (80, 112, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), VELOCITY, atol=0.15)


def test_dis_presets_and_unknown_names():
    frames, _ = _moving(2)
    for preset in interp.DIS_PRESETS:
        assert interp.get_flow("dis", preset=preset)(frames[0], frames[1]).shape == (80, 112, 2)
    with pytest.raises(NADMError, match="'turbo'.*ultrafast"):
        interp.dis_flow(frames[0], frames[1], preset="turbo")
    with pytest.raises(NADMError, match="'pwc'.*dis, farneback, raft"):
        interp.get_flow("pwc")
    with pytest.raises(ValueError, match=r"differ in shape"):
        interp.dis_flow(frames[0], frames[1][:40])


def test_raft_without_torchvision_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` raise ImportError
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(NADMError, match=r"torchvision.*--flow dis"):
        interp.get_flow("raft")


# ------------------------------------------------------------------------------------------ interpolators


def test_flow_methods_rebuild_the_true_half_way_frame():
    frames, halves = _moving(3)
    results = {name: fn(frames) for name, fn in interp.METHODS.items()}
    for name, out in results.items():
        assert out.shape == (5, 80, 112, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[0::2], frames)  # the input frames are kept as they are
    for name in ("sofp", "flow_midpoint"):
        for k in range(2):
            assert _psnr(results[name][2 * k + 1], halves[k]) > 35, name
    for k in range(2):
        assert _psnr(results["crossfade"][2 * k + 1], halves[k]) < 30


def test_sofp_damps_reversing_motion_toward_crossfade():
    # frame 2 returns to frame 0: for pair (0, 1), V_{0->T} ~ 0, so D ~ 0 and the middle frame is a cross-fade
    frames, halves = _moving(2)
    clip = np.stack([frames[0], frames[1], frames[0]])
    out = interp.sofp(clip)
    fade = interp.crossfade(clip)[1]
    assert _psnr(out[1], fade) > 40
    assert _psnr(out[1], halves[0]) < 30
    # the last pair (T = t + 1, D = 1) is the plain flow midpoint
    np.testing.assert_array_equal(out[3], interp.flow_midpoint(clip[1:])[1])


def test_sofp_window_one_is_the_flow_midpoint():
    frames, _ = _moving(4, h=48, w=64)
    np.testing.assert_array_equal(interp.sofp(frames, window=1), interp.flow_midpoint(frames))
    with pytest.raises(ValueError, match="window must be a positive integer"):
        interp.sofp(frames, window=0)
    with pytest.raises(ValueError, match="'fancy'"):
        interp.sofp(frames, mode="fancy")


def test_sofp_confidence_is_eq14_clipped():
    f_next = np.zeros((2, 3, 2), np.float32)
    f_next[..., 0] = 2.0
    f_last = np.zeros_like(f_next)
    f_last[0, :, 0] = [6.0, 1.0, -2.0]  # continues, stops half-way, reverses
    f_last[1, :, 1] = 5.0  # perpendicular
    c = interp.sofp_confidence(f_next, f_last)
    np.testing.assert_allclose(c[0], [1.0, 0.5, 0.0], atol=1e-2)
    np.testing.assert_allclose(c[1], 0.0, atol=1e-6)
    still = interp.sofp_confidence(np.zeros_like(f_next), np.zeros_like(f_next))
    assert np.isfinite(still).all()


def _pan(image: np.ndarray, speed: int, frames: int = 17, size: int = 96) -> np.ndarray:
    """A camera pan: a size x size window moving `speed` px per frame to the right across image."""
    return np.stack([image[:size, k * speed : k * speed + size] for k in range(frames)])


def _rebuilt_psnr(method, clip: np.ndarray) -> float:
    """Mean PSNR of the odd frames of clip rebuilt from the even ones."""
    out = method(clip[0::2])
    return float(np.mean([_psnr(o, t) for o, t in zip(out[1::2], clip[1::2])]))


def _painting(shared_data: Path) -> np.ndarray:
    path = shared_data / "paintings" / "stevenling_landscape" / "shanshui_test_127.jpg"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("speed", [2, 4, 8])
def test_sofp_keeps_up_with_the_flow_midpoint_on_a_pan_of_texture(speed):
    # a steady pan: every step continues to T, D_t = T - t >= 1, so SOFP must not fall back to a cross-fade
    # (a direct long flow loses such motion: 16 steps of 8 px are 128 px, the width of the frame)
    tex = cv2.GaussianBlur(_texture(128, 128 + 16 * speed, seed=3), (0, 0), 3.0)
    clip = _pan(_shifted(tex / tex.std(), 0, 0), speed, size=128)
    sofp, mid = (_rebuilt_psnr(m, clip) for m in (interp.sofp, interp.flow_midpoint))
    assert sofp >= mid - 0.3, (sofp, mid)
    assert mid > _rebuilt_psnr(interp.crossfade, clip) + 5  # the pan is one the flow follows


@pytest.mark.parametrize("speed", [2, 4, 8])
def test_sofp_keeps_up_with_the_flow_midpoint_on_a_pan_of_a_painting(shared_data, speed):
    clip = _pan(_painting(shared_data)[100:], speed, size=128)
    sofp, mid = (_rebuilt_psnr(m, clip) for m in (interp.sofp, interp.flow_midpoint))
    assert sofp >= mid - 0.3, (sofp, mid)


def test_zero_motion_gives_the_frames_back(shared_data):
    still = np.ascontiguousarray(np.stack([_painting(shared_data)[100:196, 100:196]] * 5))
    out = interp.sofp(still)
    assert out.shape == (9, 96, 96, 3)
    assert all(np.array_equal(frame, still[0]) for frame in out)


def test_sofp_damps_a_jittering_motion():
    # the texture jumps 3 px right and back, again and again, ending where it started: a step from the start
    # position moves away from frame T for good (D = 0): its middle frame is the cross-fade; a step back to
    # it continues to T (D = 1): the flow midpoint. The result flickers less than the flow midpoint's
    tex = _texture(64, 96, seed=5)
    clip = np.stack([_shifted(tex, 3 * (k % 2), 0) for k in range(9)])
    out, mid, fade = interp.sofp(clip), interp.flow_midpoint(clip), interp.crossfade(clip)
    assert all(_psnr(out[k], fade[k]) > 40 and _psnr(mid[k], fade[k]) < 30 for k in range(1, 15, 4))
    assert all(_psnr(out[k], mid[k]) > 40 for k in range(3, 17, 4))

    def second_difference(x):
        x = x.astype(np.float32)
        return np.abs(x[:-2] - 2 * x[1:-1] + x[2:]).mean()

    assert second_difference(out) < 0.9 * second_difference(mid)


def test_a_chain_through_frames_the_flow_cannot_follow_is_not_trusted():
    # a pan, then unrelated frames: the chain from a pan frame to T runs through steps that fail the
    # forward-backward check, so it says nothing about the pan and the pan's middle frames are flow midpoints
    tex = cv2.GaussianBlur(_texture(96, 176, seed=3), (0, 0), 3.0)
    pan = _pan(_shifted(tex / tex.std(), 0, 0), 8, frames=6, size=96)
    clip = np.concatenate([pan, np.stack([_shifted(_texture(96, 96, seed=20 + k), 0, 0) for k in range(4)])])
    out, mid = interp.sofp(clip), interp.flow_midpoint(clip)
    np.testing.assert_array_equal(out[1:11:2], mid[1:11:2])


def test_confidence_is_carried_to_half_time_along_the_flow():
    # a moves 8 px right into b; c = 1 left of column 40 of a, 0 from there on. The output pixel x at t + 0.5
    # comes from a's pixel x - 4, so the damping starts at column 44 of the output, not 40
    tex = _texture(48, 112, seed=7)
    a, b = _shifted(tex, 0, 0), _shifted(tex, 8, 0)
    fab, fba = np.zeros((48, 112, 2), np.float32), np.zeros((48, 112, 2), np.float32)
    fab[..., 0], fba[..., 0] = 8, -8
    c = np.zeros((48, 112), np.float32)
    c[:, :40] = 1
    out = interp.midframe(a, b, fab, fba, c).astype(int)
    warped, fade = interp.midframe(a, b, fab, fba).astype(int), interp.crossfade(np.stack([a, b]))[1].astype(int)
    np.testing.assert_array_equal(out[:, 12:43], warped[:, 12:43])
    assert np.abs(out[:, 45:100] - fade[:, 45:100]).max() <= 1
    assert np.abs(out[:, 45:100] - warped[:, 45:100]).mean() > 5


def test_chain_follows_each_pixel_along_the_step_flows():
    h, w = 20, 60
    first = np.zeros((h, w, 2), np.float32)
    first[..., 0] = 3.0
    second = np.zeros((h, w, 2), np.float32)
    second[..., 0] = np.arange(w, dtype=np.float32) / 10  # moves x by x / 10
    second[..., 1] = 1.0
    trust = np.ones((h, w), np.float32)
    got, got_trust = interp.chain([(first, trust), (second, np.where(np.arange(w) < 30, 1.0, 0.5).astype(np.float32))])
    x = np.arange(w, dtype=np.float32)
    np.testing.assert_allclose(got[5:-5, 5:-10, 0], np.broadcast_to(3 + (x[5:-10] + 3) / 10, (h - 10, w - 15)),
                               atol=1e-4)
    np.testing.assert_allclose(got[..., 1], 1.0)
    # the trust is the second step's consistency where each pixel lands after the first step (x + 3)
    np.testing.assert_allclose(got_trust[:, :26], 1.0)
    np.testing.assert_allclose(got_trust[:, 28:], 0.5)


@pytest.mark.parametrize("method", list(interp.METHODS))
def test_identical_frames_give_the_same_frame(method):
    frame = _shifted(_texture(40, 56), 0, 0)
    out = interp.METHODS[method](np.stack([frame] * 3))
    assert out.shape == (5, 40, 56, 3)
    assert np.abs(out.astype(int) - frame.astype(int)).max() <= 1  # no NaN (would be 0 after uint8 cast)


@pytest.mark.parametrize("method,flow", [("sofp", "dis"), ("flow_midpoint", "farneback"), ("crossfade", None)])
def test_odd_sizes(method, flow):
    frames, _ = _moving(3, h=61, w=97)
    kwargs = {} if flow is None else {"flow": flow}
    out = interp.METHODS[method](frames, **kwargs)
    assert out.shape == (5, 61, 97, 3)


def test_times_doubling():
    frames, _ = _moving(4, h=32, w=32)
    assert interp.times(frames, 0).shape[0] == 4
    assert interp.times(frames, 2, method="crossfade").shape[0] == 4 * 4 - 3
    assert interp.times(frames, 1, method="sofp", flow="dis", window=2).shape[0] == 7
    with pytest.raises(NADMError, match="'morph'"):
        interp.times(frames, 1, method="morph")


@pytest.mark.parametrize(
    "frames,match",
    [
        (np.zeros((1, 32, 32, 3), np.uint8), "at least 2 frames, got 1"),
        (np.zeros((3, 12, 40, 3), np.uint8), r"at least 16x16 px, got 40x12"),
        (np.zeros((3, 32, 32, 3), np.float32), "dtype float32"),
        (np.zeros((3, 32, 32), np.uint8), r"\(3, 32, 32\)"),
        ([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 40, 3), np.uint8)], r"frame 1 has shape \(32, 40, 3\)"),
    ],
)
def test_bad_clips_are_named(frames, match):
    for method in interp.METHODS.values():
        with pytest.raises(ValueError, match=match):
            method(frames)


# ------------------------------------------------------------------------------------------------- CLI


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    """`nadm interpolate ...` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["interpolate", *argv])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_doubles_and_records_settings(tmp_path, capsys):
    frames, _ = _moving(5, h=48, w=64)
    src = write_video(frames, tmp_path / "in", fps=10)
    code, out, err = _run([str(src), "-o", str(tmp_path / "out.webp"), "--dis-preset", "fast"], capsys)
    assert code == 0, err
    result, fps = read_video(tmp_path / "out.webp")
    assert result.shape == (9, 48, 64, 3) and fps == 20
    side = json.loads((tmp_path / "out.webp.json").read_text())["interpolation"]
    assert side["method"] == "sofp" and side["flow"] == "dis" and side["times"] == 1 and side["dis_preset"] == "fast"
    assert (side["frames_in"], side["frames_out"], side["fps_in"], side["fps_out"]) == (5, 9, 10, 20)
    assert side["input"] == str(src.resolve())


def test_cli_times_two_and_keep_fps(tmp_path, capsys):
    frames, _ = _moving(5, h=32, w=48)
    src = write_video(frames, tmp_path / "in", fps=8)
    out_dir = tmp_path / "out"
    code, _, err = _run([str(src), "-o", str(out_dir), "--times", "2", "--keep-fps", "--method", "flow_midpoint",
                         "--flow", "farneback"], capsys)
    assert code == 0, err
    result, fps = read_video(out_dir)
    assert len(result) == 4 * 5 - 3 and fps == 8
    side = json.loads((tmp_path / "out.json").read_text())["interpolation"]
    assert (side["method"], side["flow"], side["times"], side["keep_fps"]) == ("flow_midpoint", "farneback", 2, True)


def _frame_folder(tmp_path: Path, name: str, sizes: list[tuple[int, int]]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((h, w, 3), 40 * i, np.uint8))
    return folder


@pytest.mark.parametrize(
    "case,match",
    [
        ("one_frame", "at least 2 frames, got 1"),
        ("tiny", "at least 16x16 px, got 12x10"),
        ("mismatched", r"001\.png is 40x32 but 000\.png is 32x32"),
        ("unreadable", "cannot decode .*broken.mp4"),
        ("missing", "does not exist"),
    ],
)
def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys, case, match):
    inputs = {
        "one_frame": lambda: _frame_folder(tmp_path, "one", [(32, 32)]),
        "tiny": lambda: _frame_folder(tmp_path, "tiny", [(10, 12), (10, 12)]),
        "mismatched": lambda: _frame_folder(tmp_path, "mixed", [(32, 32), (32, 40)]),
        "unreadable": lambda: tmp_path / "broken.mp4",
        "missing": lambda: tmp_path / "nope.mp4",
    }
    (tmp_path / "broken.mp4").write_bytes(b"\x1a\x45 definitely not a video " * 40)
    code, out, err = _run([str(inputs[case]()), "-o", str(tmp_path / "out.mp4")], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.mp4.json").exists()


def test_cli_checks_output_before_computing(tmp_path, capsys):
    existing = tmp_path / "taken.gif"
    existing.write_bytes(b"keep me")
    code, _, err = _run([str(tmp_path / "missing-input.mp4"), "-o", str(existing)], capsys)
    assert code == 2 and "--overwrite" in err  # the output is refused before the input is even read
    assert existing.read_bytes() == b"keep me"
    code, _, err = _run([str(tmp_path / "x.mp4"), "-o", str(tmp_path / "y.mov")], capsys)
    assert code == 2 and "'.mov'" in err


def test_cli_option_conflicts_and_raft(tmp_path, capsys, monkeypatch):
    frames, _ = _moving(2, h=32, w=32)
    src = write_video(frames, tmp_path / "in", fps=8)
    code, _, err = _run([str(src), "-o", str(tmp_path / "a.gif"), "--method", "crossfade", "--flow", "dis"], capsys)
    assert code == 2 and "--flow does not apply" in err
    code, _, err = _run([str(src), "-o", str(tmp_path / "a.gif"), "--method", "flow_midpoint", "--window", "2"], capsys)
    assert code == 2 and "--window only applies" in err
    code, _, err = _run([str(src), "-o", str(tmp_path / "a.gif"), "--flow", "farneback", "--dis-preset", "fast"], capsys)
    assert code == 2 and "--dis-preset only applies" in err
    monkeypatch.setitem(sys.modules, "torchvision", None)
    code, _, err = _run([str(src), "-o", str(tmp_path / "a.gif"), "--flow", "raft"], capsys)
    assert code == 2 and "torchvision" in err and "--flow dis" in err
    assert not (tmp_path / "a.gif").exists()


def test_cli_subprocess_end_to_end(tmp_path):
    """The installed entry point as a user runs it: exit code 2 and a single `error:` line on stderr."""
    frames, _ = _moving(3, h=32, w=32)
    src = write_video(frames, tmp_path / "in.gif", fps=6)
    run = [sys.executable, "-m", "nadm", "interpolate", str(src), "-o", str(tmp_path / "out.mp4")]
    ok = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "3 -> 5 frames" in ok.stdout
    again = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0
    assert again.stderr.startswith("error: ") and "--overwrite" in again.stderr


def test_real_sky_sequence(shared_data):
    """On a real sky time-lapse tile, rebuilt frames beat the cross-fade (sofp and flow midpoint)."""
    tile = shared_data / "landscape_motion" / "mdgan_sky_timelapse" / "tile_r0c1"
    if not tile.is_dir():
        pytest.skip("sky tile not present")
    clip, _ = read_video(tile)
    clip = clip[:9]
    scores = {}
    for name, fn in interp.METHODS.items():
        out = fn(clip[0::2])
        scores[name] = np.mean([_psnr(o, t, border=4) for o, t in zip(out[1::2], clip[1::2])])
    assert scores["flow_midpoint"] > scores["crossfade"] + 0.5
    assert scores["sofp"] > scores["crossfade"] + 0.3
