"""Whole-set evaluation (Sec. IV-C2, Tables I-IV): reading the clips, decoding each video once, and the
`nadm evaluate` and `nadm compare` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import translating

from nadm import evaluation, metrics
from nadm.errors import NADMError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


# ------------------------------------------------------------------------------------- reading clips


def _write_uneven_mp4(path: Path, frames: np.ndarray) -> Path:
    """An H.264 mp4 whose timestamps start at 3 and skip a tick every 5th frame (variable frame rate), so
    "frame i" by timestamp (`nadm.data.read_frames`) and by decode order (`read_video`) differ; the
    evaluation's clips must stay those of `read_video`."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.time_base = Fraction(1, 8)
        pts = 3
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 8)
            pts += 2 if i % 5 == 3 else 1
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip_sources(tmp_path_factory) -> dict[str, Path]:
    """34-frame videos in every form the evaluation reads: uneven-rate mp4, padded (odd-size) mp4, GIF, PNGs."""
    from nadm.io import write_video

    root = tmp_path_factory.mktemp("clip_sources")
    out = {"uneven_mp4": _write_uneven_mp4(root / "uneven.mp4", translating(34, 48, 64, step=2, seed=40))}
    forms = [("odd_mp4", "odd.mp4", (45, 61)), ("gif", "a.gif", (48, 64)), ("png", "png", (48, 64))]
    for name, target, (h, w) in forms:
        out[name] = write_video(translating(34, h, w, step=3, seed=41), root / target, fps=8)
    return out


@pytest.mark.parametrize("kind", ["uneven_mp4", "odd_mp4", "gif", "png"])
@pytest.mark.parametrize("stride", [1, 2])
def test_read_clip_equals_cutting_the_whole_video(clip_sources, kind, stride, monkeypatch):
    from nadm.io import read_video

    path = clip_sources[kind]
    expected = metrics.cut_clip(read_video(path)[0], stride=stride)
    if kind != "gif":  # a video file or frame folder is read only up to the clip, never whole
        def clip_only(p, indices=None):
            return read_video(p, indices) if indices is not None else pytest.fail(f"{p} was read whole")

        monkeypatch.setattr(evaluation, "read_video", clip_only)
    clip = evaluation.read_clip(path, stride)
    assert clip.shape == expected.shape and np.array_equal(clip, expected)


@pytest.mark.parametrize("name", ["skyar_annarbor/annarbor.mp4", "mdgan_sky_timelapse/real_video_grid8x6.mp4"])
def test_read_clip_equals_cutting_the_whole_video_on_real_footage(shared_data, name):
    from nadm.io import read_video

    path = shared_data / "landscape_motion" / name
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    whole = read_video(path)[0]
    for stride in (1, 2, (len(whole) - 1) // 15):  # the last stride reaches the video's end
        assert np.array_equal(evaluation.read_clip(path, stride), metrics.cut_clip(whole, stride=stride))
    assert np.array_equal(evaluation.read_clip(path, 1, whole), whole[:16])


def test_too_short_video_gives_the_same_clear_error_either_way(tmp_path):
    from nadm.io import read_video, write_video

    path = write_video(translating(10, 32, 48), tmp_path / "short.mp4", fps=8)
    message = (f"{path}: a 16-frame clip at stride 1 needs 16 frames, the video has 10; "
               "remove short videos or lower the stride")
    with pytest.raises(NADMError) as partial:
        evaluation.read_clip(path, 1)
    with pytest.raises(NADMError) as whole:
        evaluation.read_clip(path, 1, read_video(path)[0])
    assert str(partial.value) == str(whole.value) == message


def test_each_video_is_decoded_once_and_clips_only_as_far_as_needed(video_dirs, weights_dir, tmp_path, monkeypatch):
    from nadm.commands.evaluate import list_videos
    from nadm.io import write_video

    real, _ = video_dirs  # 4 mp4 files and 1 folder of frames
    fakes = [write_video(translating(20, 32, 48, step=2, seed=50 + i), tmp_path / f"f{i}.mp4", fps=8)
             for i in range(3)]
    calls = {"whole": [], "prefix": []}
    read = evaluation.read_video

    def spy(path, indices=None):
        calls["whole" if indices is None else "prefix"].append(path.name)
        return read(path, indices)

    monkeypatch.setattr(evaluation, "read_video", spy)
    real_paths = list_videos(real)
    opt = dict(weights_dir=str(weights_dir), device="cpu", progress=False, batch_size=2, is_splits=1)

    clips_only = evaluation.evaluate_sets([evaluation.VideoSet("g", fakes)], real_paths,
                                          evaluation.EvalOptions(metrics=("fvd", "is"), **opt))
    assert calls == {"whole": [], "prefix": ["clip0.mp4", "clip1.mp4", "clip2.mp4", "clip3.mp4", "clip4",
                                             "f0.mp4", "f1.mp4", "f2.mp4"]}
    calls["whole"].clear()
    calls["prefix"].clear()
    with_flicker = evaluation.evaluate_sets([evaluation.VideoSet("g", fakes)], real_paths,
                                            evaluation.EvalOptions(metrics=("fvd", "is", "flicker"), **opt))
    assert calls["whole"] == ["f0.mp4", "f1.mp4", "f2.mp4"] and len(calls["prefix"]) == 5
    assert with_flicker["g"]["fvd"] == clips_only["g"]["fvd"] and with_flicker["g"]["is"] == clips_only["g"]["is"]


def test_evaluate_too_short_video_is_a_one_line_error(weights_dir, tmp_path, capsys):
    from nadm.io import write_video

    for i, n in enumerate((20, 12)):
        write_video(translating(n, 32, 48, seed=60 + i), tmp_path / "fake" / f"v{i}.mp4", fps=8)
    code, _, stderr = _run_cli(["evaluate", "--fake", str(tmp_path / "fake"), "--metrics", "is", "--weights-dir",
                                str(weights_dir), "--device", "cpu", "--quiet", "--is-splits", "1"], capsys)
    assert code == 2 and stderr.count("\n") == 1
    assert "v1.mp4: a 16-frame clip at stride 1 needs 16 frames, the video has 12; remove short videos" in stderr


# ------------------------------------------------------------------------------------ nadm evaluate


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """`nadm ARGS` in this process: (exit code, stdout, stderr)."""
    from nadm.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def video_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """real/ (4 mp4 + 1 folder of frames) and fake/ (4 gifs with prompt sidecars), 16-18 frames, small."""
    from nadm.io import write_video

    root = tmp_path_factory.mktemp("videos")
    for i in range(5):
        path = root / "real" / (f"clip{i}.mp4" if i < 4 else "clip4")
        write_video(translating(18, 48, 64, step=1 + i % 2, seed=i), path, fps=8)
    for i in range(4):
        frames = translating(16, 40, 56, step=2, seed=10 + i)
        write_video(frames, root / "fake" / f"v{i}.gif", fps=8, metadata={"prompt": f"mountains and river, scene {i}"})
    return root / "real", root / "fake"


def test_evaluate_end_to_end(video_dirs, weights_dir, clip_dir, tmp_path, capsys):
    real, fake = video_dirs
    out = tmp_path / "scores.json"
    args = ["evaluate", "--real", str(real), "--fake", str(fake), "--weights-dir", str(weights_dir),
            "--clip-model", str(clip_dir), "--device", "cpu", "--trials", "3", "--subset-size", "3",
            "--json", str(out), "--quiet", "--batch-size", "2", "--is-splits", "1"]
    code, stdout, stderr = _run_cli(args, capsys)
    assert code == 0, stderr
    header = stdout.splitlines()[0]
    for title in ("FVD16", "KVD16", "CLIP-text", "CLIP-temp", "IS", "warp", "flicker"):
        assert title in header
    assert "±" in stdout.splitlines()[1]
    report = json.loads(out.read_text())
    res = report["results"]["fake"]
    assert set(res) == set(evaluation.METRICS)
    assert len(res["fvd"]["values"]) == 3 and res["fvd"]["real_per_trial"] == 3
    assert all(np.isfinite(v["mean"]) for v in res.values())
    assert len(res["clip_text"]["values"]) == 4 and 0.0 < res["clip_temp"]["mean"] <= 1.0 + 1e-6
    assert res["warp"]["mean"] < 0.02  # pure translations (GIF palette noise aside)
    assert report["real"]["videos"] == ["clip0.mp4", "clip1.mp4", "clip2.mp4", "clip3.mp4", "clip4"]
    assert report["settings"]["trials"] == 3

    # the same run again refuses to replace the JSON, and changes nothing
    before = out.read_bytes()
    code, _, stderr = _run_cli(args, capsys)
    assert code == 2 and "already exists" in stderr and out.read_bytes() == before


def test_evaluate_weight_free_with_prompt_file_and_two_sets(video_dirs, tmp_path, capsys):
    _, fake = video_dirs
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a\n\nb\nc\nd\n")
    code, stdout, stderr = _run_cli(["evaluate", "--fake", str(fake), "--fake", str(fake.parent / "real"),
                                     "--metrics", "warp,flicker", "--quiet"], capsys)
    assert code == 0, stderr
    assert len(stdout.splitlines()) == 3 and "FVD16" not in stdout
    prompts.write_text("only one prompt\n")
    code, _, stderr = _run_cli(["evaluate", "--fake", str(fake), "--prompts", str(prompts),
                                "--metrics", "clip_text", "--quiet"], capsys)
    assert code == 2 and "1 prompts for 4 videos" in stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--metrics", "fvd"], "pass --real DIR"),
        (["--metrics", "fvd,nope"], "unknown metric(s) nope"),
        (["--metrics", "is", "--trials", "2", "--subset-size", "9"], "cannot draw subsets of 9"),
        (["--metrics", "clip_text", "--fake", "REAL"], "no sidecar"),
    ],
)
def test_evaluate_user_errors_are_one_line(video_dirs, capsys, extra, message):
    real, fake = video_dirs
    extra = [str(real) if a == "REAL" else a for a in extra]
    args = ["evaluate", "--fake", str(fake), *extra] if "--fake" not in extra else ["evaluate", *extra]
    code, stdout, stderr = _run_cli(args, capsys)
    assert code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr


def test_evaluate_help_states_clip_rule(capsys):
    code, stdout, _ = _run_cli(["evaluate", "--help"], capsys)
    assert code == 0 and "first 16 frames" in stdout and "mean ± std" in stdout


# -------------------------------------------------------------------------------------- nadm compare


class _StandInPipeline:
    """Test stand-in with NADMPipeline's API: frames translate at a speed set by the motion checkpoint's name."""

    loads: list[dict] = []

    def __init__(self, motion: str) -> None:
        self.step = 1 if motion.endswith("smooth") else 3

    @classmethod
    def from_pretrained(cls, **kwargs):
        cls.loads.append(kwargs)
        return cls(kwargs["motion"])

    def __call__(self, prompt, num_frames, height, width, steps, guidance, seed, interpolate):
        from types import SimpleNamespace

        frames = translating(num_frames, height, width, step=self.step, seed=seed)
        return SimpleNamespace(frames=frames, settings={"steps": steps, "guidance": guidance, "fps": 8})


@pytest.fixture
def stand_in_pipeline(monkeypatch):
    """Install the stand-in as `nadm.pipeline` for this test only."""
    import importlib.machinery
    import sys
    import types

    module = types.ModuleType("nadm.pipeline")
    module.__spec__ = importlib.machinery.ModuleSpec("nadm.pipeline", None)
    module.NADMPipeline = _StandInPipeline
    monkeypatch.setitem(sys.modules, "nadm.pipeline", module)
    _StandInPipeline.loads = []
    return _StandInPipeline


def test_compare_generates_reuses_and_tabulates(stand_in_pipeline, clip_dir, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a misty river\nboats under the mountain\n")
    out = tmp_path / "out"
    args = ["compare", "--motion", "nadm=ckpt/smooth", "--motion", "baseline=ckpt/shaky", "--prompts",
            str(tmp_path / "p.txt"), "--seeds", "0,1", "--out", str(out), "--frames", "5", "--height", "32",
            "--width", "48", "--metrics", "clip_text,warp,flicker", "--clip-model", str(clip_dir), "--device", "cpu",
            "--quiet"]
    code, stdout, stderr = _run_cli([*args, "--json", str(tmp_path / "a.json")], capsys)
    assert code == 0, stderr
    assert [row.split()[0] for row in stdout.splitlines()[1:3]] == ["nadm", "baseline"]
    assert sorted(p.name for p in (out / "nadm").glob("*.mp4")) == [
        "0000_seed0.mp4", "0000_seed1.mp4", "0001_seed0.mp4", "0001_seed1.mp4"]
    side = json.loads((out / "baseline" / "0001_seed1.mp4.json").read_text())
    assert (side["prompt"], side["seed"], side["motion"]) == ("boats under the mountain", 1, "ckpt/shaky")
    results = json.loads((tmp_path / "a.json").read_text())["results"]
    assert results["nadm"]["flicker"]["mean"] < results["baseline"]["flicker"]["mean"]  # 1 px vs 3 px steps
    assert len(stand_in_pipeline.loads) == 2

    # a second run reuses every video (no model loaded); a changed checkpoint for a name is refused
    code, _, stderr = _run_cli([*args, "--json", str(tmp_path / "b.json")], capsys)
    assert code == 0, stderr
    assert len(stand_in_pipeline.loads) == 2
    code, _, stderr = _run_cli([*[a.replace("ckpt/shaky", "ckpt/other") for a in args]], capsys)
    assert code == 2 and "pass --overwrite" in stderr


def test_compare_with_the_real_pipeline_on_tiny_models(tmp_path, capsys):
    """nadm compare end to end: NADM and the AnimateDiff baseline from the same tiny base, one table."""
    from nadm.tiny import build_tiny_base, build_tiny_motion, tiny_motion_config

    base = build_tiny_base(tmp_path / "base")
    build_tiny_motion(tmp_path / "nadm")
    build_tiny_motion(tmp_path / "animatediff", config=tiny_motion_config(attn2="versatile"))
    (tmp_path / "p.txt").write_text("a misty river\n")
    code, stdout, stderr = _run_cli(["compare", "--motion", f"nadm={tmp_path / 'nadm'}", "--motion",
                                     f"animatediff={tmp_path / 'animatediff'}", "--base", str(base), "--prompts",
                                     str(tmp_path / "p.txt"), "--out", str(tmp_path / "out"), "--frames", "4",
                                     "--height", "32", "--width", "32", "--steps", "2", "--metrics", "warp,flicker",
                                     "--device", "cpu", "--quiet", "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0, stderr
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert set(results) == {"nadm", "animatediff"}
    side = json.loads((tmp_path / "out" / "animatediff" / "0000_seed0.mp4.json").read_text())
    assert side["settings"]["motion"]["kind"] == "animatediff"
    assert json.loads((tmp_path / "out" / "nadm" / "0000_seed0.mp4.json").read_text())["settings"]["motion"]["kind"] == "nadm"
    assert results["nadm"]["flicker"]["mean"] != results["animatediff"]["flicker"]["mean"]


# ------------------------------------------------------------------ IS splits and interpolated videos


class _RecordingC3D:
    """C3DProbabilities stand-in: records which frames each clip holds (red = 4 x frame index) and returns
    probabilities set by the video's number (green = 10 x video number), 0.6 on class (number % 5)."""

    seen: list[list[int]] = []

    def __init__(self, weights_dir=None, device=None) -> None:
        pass

    def __call__(self, clips):
        rows = []
        for clip in clips:
            type(self).seen.append([int(v) // 4 for v in clip[:, 0, 0, 0]])
            row = np.full(5, 0.1)
            row[int(clip[0, 0, 0, 1]) // 10 % 5] = 0.6
            rows.append(row)
        return np.array(rows)


def _numbered_video(path: Path, frames: int, number: int = 0, metadata: dict | None = None) -> Path:
    """A lossless frame folder whose frame t is red 4 t (t < 64), green 10 x number, with a sidecar."""
    from nadm.io import write_video

    video = np.zeros((frames, 16, 16, 3), np.uint8)
    video[..., 0] = (4 * np.arange(frames))[:, None, None]
    video[..., 1] = 10 * number
    return write_video(video, path, fps=8, metadata=metadata or {})


@pytest.fixture
def recording_c3d(monkeypatch):
    monkeypatch.setattr(evaluation, "C3DProbabilities", _RecordingC3D)
    _RecordingC3D.seen = []
    return _RecordingC3D


def test_is_defaults_to_ten_splits_of_the_shuffled_clips_mean_and_std(tmp_path, recording_c3d):
    paths = [_numbered_video(tmp_path / f"v{i:02d}", 16, number=i) for i in range(20)]
    assert evaluation.EvalOptions().is_splits == 10
    got = evaluation.evaluate_sets([evaluation.VideoSet("g", paths)], None,
                                   evaluation.EvalOptions(metrics=("is",), progress=False))["g"]["is"]
    # known answer: StyleGAN-V's rule (shuffle, 10 consecutive parts, mean and population std of the parts)
    probs = np.full((20, 5), 0.1)
    probs[np.arange(20), np.arange(20) % 5] = 0.6
    parts = metrics.inception_scores(probs[np.random.default_rng(0).permutation(20)], 10)
    assert len(got["values"]) == 10 and got["splits"] == 10 and got["trials"] == 1
    assert got["mean"] == pytest.approx(parts.mean()) and got["std"] == pytest.approx(parts.std())
    assert got["std"] > 0  # the shuffle mixes the classes unevenly over the parts of 2
    # unshuffled, every part holds two neighbouring classes: p(y) = 0.35, 0.35, 0.1, 0.1, 0.1
    pair = np.exp(0.6 * np.log(0.6 / 0.35) + 0.1 * np.log(0.1 / 0.35))
    np.testing.assert_allclose(metrics.inception_scores(probs, 10), [pair] * 10)


def test_inception_scores_split_like_stylegan_v():
    probs = np.eye(3)[[0, 1, 2, 0, 1, 2, 0]]  # 7 certain predictions, parts of 7 // 3: rows 0-1, 2-3, 4-6
    np.testing.assert_allclose(metrics.inception_scores(probs, 3), [2.0, 2.0, 3.0])
    assert metrics.inception_score(probs, 3) == pytest.approx(7 / 3)


@pytest.mark.parametrize("metadata, frames, step", [
    ({"keyframes": 16, "frames_out": 31}, 31, 2),  # nadm generate: 16 keyframes, SOFP to 31
    ({"settings": {"keyframes": 16, "frames_out": 31}}, 31, 2),  # nadm compare
    ({"interpolation": {"frames_in": 16, "frames_out": 61, "times": 2}}, 61, 4),  # nadm interpolate --times 2
    ({"keyframes": 20, "frames_out": 20}, 20, 1),  # generated without interpolation
    ({}, 20, 1),  # no record: the video's own frames
])
def test_interpolated_videos_are_scored_on_their_generated_keyframes(tmp_path, recording_c3d, metadata, frames, step):
    path = _numbered_video(tmp_path / "v", frames, metadata=metadata)
    assert evaluation.keyframe_step(path) == step
    opt = dict(metrics=("is",), progress=False, is_splits=1)
    evaluation.evaluate_sets([evaluation.VideoSet("g", [path] * 2)], None, evaluation.EvalOptions(**opt))
    assert recording_c3d.seen == [list(range(0, 16 * step, step))] * 2
    recording_c3d.seen = []
    evaluation.evaluate_sets([evaluation.VideoSet("g", [path] * 2)], None, evaluation.EvalOptions(**opt, keyframes=False))
    assert recording_c3d.seen == [list(range(16))] * 2


def test_keyframes_and_stride_compose_and_a_contradicting_sidecar_is_a_user_error(tmp_path, recording_c3d, capsys):
    path = _numbered_video(tmp_path / "fake" / "v", 61, metadata={"keyframes": 31, "frames_out": 61})
    opt = evaluation.EvalOptions(metrics=("is",), progress=False, is_splits=1, fake_stride=2)
    result = evaluation.evaluate_sets([evaluation.VideoSet("g", [path] * 2)], None, opt)
    assert recording_c3d.seen == [list(range(0, 61, 4))[:16]] * 2 and result["g"]["is"]["fake_clip_strides"] == [4]
    bad = _numbered_video(tmp_path / "bad" / "v", 20, metadata={"keyframes": 16, "frames_out": 31})
    code, _, stderr = _run_cli(["evaluate", "--fake", str(bad.parent), "--metrics", "is", "--is-splits", "1",
                                "--quiet"], capsys)
    assert code == 2 and stderr.count("\n") == 1
    assert "names 16 keyframes of 31 frames but the video has 20; pass --all-frames" in stderr


def test_evaluate_help_states_keyframes_and_is_splits(capsys):
    code, stdout, _ = _run_cli(["evaluate", "--help"], capsys)
    text = " ".join(stdout.split())
    assert code == 0 and "16 generated keyframes by default" in text and "--all-frames" in text
    assert "--is-splits INTEGER Inception Score splits (mean ± std). [default: 10]" in text
