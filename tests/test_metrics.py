"""Metrics (Sec. IV-C2): distance math, IS, CLIP scores, network loading, temporal metrics, reading clips,
`nadm evaluate` and `nadm compare`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from nadm import evaluation, metric_networks, metrics
from nadm.errors import NADMError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

# ------------------------------------------------------------------------------------ tiny networks


class TinyI3D(torch.nn.Module):
    """I3D's TorchScript call signature; uint8 (b, 3, T, H, W) in, (b, 400) features or probabilities out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 8, kernel_size=3, stride=2)
        self.fc = torch.nn.Linear(8, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if x.dim() != 5 or x.shape[1] != 3 or x.dtype != torch.uint8:
            raise RuntimeError("expected uint8 (b, 3, t, h, w)")
        if not (rescale and resize and return_features):
            raise RuntimeError("StyleGAN-V calls I3D with rescale=True, resize=True, return_features=True")
        x = x.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = torch.nn.functional.interpolate(x, size=(x.shape[2], 32, 32), mode="trilinear", align_corners=False)
        feats = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))
        return feats if return_features else torch.softmax(feats, dim=1)


class TinyC3D(torch.nn.Module):
    """C3D's TorchScript call signature: uint8 (b, 3, 16, 128, 128) in, (b, 101) probabilities out."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 101)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.shape[1] != 3 or x.shape[2] != 16 or x.shape[3] != 128 or x.shape[4] != 128:
            raise RuntimeError("expected uint8 (b, 3, 16, 128, 128)")
        x = x.float()[:, :, :, 8:120, 8:120] / 255.0
        return torch.softmax(self.fc(x.mean(dim=(2, 3, 4))) * 10.0, dim=1)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """A folder with test-made TorchScript stand-ins for i3d_torchscript.pt and c3d_ucf101.pt."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.jit.script(TinyI3D()).save(str(folder / metric_networks.I3D_WEIGHTS.name))
    torch.jit.script(TinyC3D()).save(str(folder / metric_networks.C3D_WEIGHTS.name))
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP (model + byte-level tokenizer + image processor) saved offline."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from nadm.tiny import save_tiny_tokenizer

    folder = tmp_path_factory.mktemp("clip")
    tokenizer = save_tiny_tokenizer(folder)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (flow-friendly), (H, W, 3) uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 1.0)


def _translating(n: int, h: int = 48, w: int = 64, step: int = 2, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) frames: a window sliding `step` px right per frame over a larger texture."""
    big = _texture(h, w + step * n, seed)
    return np.stack([big[:, step * (n - t) : step * (n - t) + w] for t in range(n)])


# -------------------------------------------------------------------------------------- distance math


def test_frechet_distance_matches_closed_form_and_is_zero_on_itself():
    rng = np.random.default_rng(0)
    d, n = 4, 40000
    mu_a, mu_b = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    la, lb = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    cov_a, cov_b = la @ la.T + np.eye(d), lb @ lb.T + 0.5 * np.eye(d)
    a = rng.multivariate_normal(mu_a, cov_a, size=n)
    b = rng.multivariate_normal(mu_b, cov_b, size=n)
    exact = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(scipy.linalg.sqrtm(cov_a @ cov_b)))
    got = metrics.frechet_distance(a, b)
    assert got == pytest.approx(exact, rel=0.03)
    assert abs(metrics.frechet_distance(a, a)) < 1e-6
    assert metrics.frechet_distance(a, a + 1.0) == pytest.approx(d, rel=1e-6)  # shifted means only


def test_kernel_distance_equals_brute_force_double_loop():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(7, 5)), rng.normal(0.5, 1.0, size=(9, 5))
    d = a.shape[1]

    def k(x, y):
        return (float(np.dot(x, y)) / d + 1.0) ** 3

    kaa = sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    kbb = sum(k(b[i], b[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    kab = sum(k(a[i], b[j]) for i in range(7) for j in range(9)) / (7 * 9)
    assert metrics.kernel_distance(a, b) == pytest.approx(kaa + kbb - 2 * kab, rel=1e-10)
    assert metrics.kernel_distance(b, a) == pytest.approx(metrics.kernel_distance(a, b), rel=1e-10)


@pytest.mark.parametrize("fn", [metrics.frechet_distance, metrics.kernel_distance])
def test_distances_refuse_bad_feature_sets(fn):
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="dimensions differ"):
        fn(rng.normal(size=(5, 3)), rng.normal(size=(5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        fn(rng.normal(size=(1, 3)), rng.normal(size=(5, 3)))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        fn(rng.normal(size=(5,)), rng.normal(size=(5, 3)))


# ----------------------------------------------------------------------------------- inception score


def test_inception_score_bounds():
    assert metrics.inception_score(np.full((10, 5), 0.2)) == pytest.approx(1.0)
    confident = np.eye(5)[np.arange(20) % 5]  # every class equally often, each prediction certain
    assert metrics.inception_score(confident) == pytest.approx(5.0)
    assert metrics.inception_score(confident, splits=4) == pytest.approx(5.0)  # each split of 5 covers all
    assert metrics.inception_score(np.eye(5)[np.zeros(20, int)]) == pytest.approx(1.0)  # certain, one class
    with pytest.raises(ValueError, match="logits"):
        metrics.inception_score(np.full((4, 5), 3.0))
    with pytest.raises(ValueError, match="splits"):
        metrics.inception_score(confident, splits=21)


# ----------------------------------------------------------------------------------------------- CLIP


def test_clip_temp_is_one_for_identical_frames_and_clip_text_runs(clip_dir):
    scorer = metric_networks.ClipScorer(str(clip_dir), device="cpu")
    still = np.repeat(_texture(40, 56)[None], 5, axis=0)
    emb = scorer.images(still)
    assert emb.shape == (5, 16)
    assert metrics.clip_temporal_score(emb) == pytest.approx(1.0, abs=1e-6)
    moving = np.stack([_texture(40, 56, seed=s) for s in range(5)])
    assert metrics.clip_temporal_score(scorer.images(moving)) < 1.0 - 1e-4
    text = scorer.text("a misty mountain, a boat on the river")
    assert text.shape == (16,)
    score = metrics.clip_text_score(emb, text)
    assert -100.0 <= score <= 100.0
    assert score == pytest.approx(100.0 * float(emb[0] @ text), rel=1e-5)  # identical frames: one cosine
    assert scorer.text("a very different prompt about cities") @ text < 1.0 - 1e-4


def test_clip_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(NADMError, match="cannot load the CLIP model"):
        metric_networks.ClipScorer(str(tmp_path / "nothing-here"), device="cpu")


# ------------------------------------------------------------------------------------- I3D, C3D weights


def test_i3d_and_c3d_load_from_weights_dir_and_run(weights_dir):
    rng = np.random.default_rng(3)
    clips = [rng.integers(0, 256, (16, 40, 60, 3), dtype=np.uint8) for _ in range(3)]
    i3d = metric_networks.I3DFeatures(weights_dir, device="cpu")
    feats = i3d(clips)
    assert feats.shape == (3, 400) and np.isfinite(feats).all()
    # non-square clips are centre-cropped: padding the sides changes nothing
    padded = np.pad(clips[0], ((0, 0), (0, 0), (7, 7), (0, 0)))
    assert np.allclose(i3d([padded]), feats[:1], atol=1e-5)
    assert not np.allclose(feats[0], feats[1])
    probs = metric_networks.C3DProbabilities(weights_dir, device="cpu")(clips)
    assert probs.shape == (3, 101) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert metrics.inception_score(probs) >= 1.0


def test_missing_weights_offline_names_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("NADM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NADM_OFFLINE", "1")
    with pytest.raises(NADMError) as err:
        metric_networks.I3DFeatures(tmp_path / "empty", device="cpu")
    msg = str(err.value)
    assert metric_networks.I3D_WEIGHTS.name in msg and metric_networks.I3D_WEIGHTS.url in msg and "\n" not in msg
    with pytest.raises(NADMError, match="c3d_ucf101.pt.*dropbox"):
        metric_networks.C3DProbabilities(None, device="cpu")


def test_weights_found_in_cache(tmp_path, monkeypatch, weights_dir):
    cache = tmp_path / "cache"
    (cache / "metrics").mkdir(parents=True)
    (cache / "metrics" / metric_networks.C3D_WEIGHTS.name).write_bytes((weights_dir / metric_networks.C3D_WEIGHTS.name).read_bytes())
    monkeypatch.setenv("NADM_CACHE", str(cache))
    assert metric_networks.resolve_weights(metric_networks.C3D_WEIGHTS, tmp_path / "empty") == cache / "metrics" / "c3d_ucf101.pt"


def test_corrupt_weights_are_a_user_error(tmp_path):
    (tmp_path / metric_networks.I3D_WEIGHTS.name).write_bytes(b"not a torchscript archive")
    with pytest.raises(NADMError, match="cannot load .* as TorchScript"):
        metric_networks.I3DFeatures(tmp_path, device="cpu")


# ------------------------------------------------------------------------------- weight-free metrics


def test_warping_error_zero_for_translation_higher_for_flicker():
    from nadm.interpolate import get_flow

    flow = get_flow("dis")
    moving = _translating(6)
    warp_moving = metrics.warping_error(moving, flow)
    assert warp_moving < 1e-4  # exact flow, so only interpolation error inside the frame
    flicker = moving.copy()
    flicker[1::2] = np.clip(flicker[1::2].astype(int) + 60, 0, 255).astype(np.uint8)  # brightness jumps
    assert metrics.warping_error(flicker, flow) > 0.05
    assert metrics.flicker_score(np.repeat(moving[:1], 4, axis=0)) == 0.0
    assert metrics.flicker_score(flicker) > metrics.flicker_score(moving)


@pytest.mark.parametrize("tile", ["tile_r0c1", "tile_r3c6"])
def test_temporal_metrics_prefer_real_order_on_real_sky_footage(shared_data, tile):
    from nadm.interpolate import get_flow
    from nadm.io import read_video

    folder = shared_data / "landscape_motion" / "mdgan_sky_timelapse" / tile
    if not folder.is_dir():
        pytest.skip(f"{folder} is not present")
    frames = read_video(folder)[0][:12]
    shuffled = frames[np.random.default_rng(0).permutation(len(frames))]
    flow = get_flow("dis")
    assert 3 * metrics.warping_error(frames, flow) < metrics.warping_error(shuffled, flow)
    assert 2 * metrics.flicker_score(frames) < metrics.flicker_score(shuffled)


def test_cut_clip_rule():
    video = np.arange(40, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    assert metrics.cut_clip(video)[:, 0, 0, 0].tolist() == list(range(16))
    assert metrics.cut_clip(video, stride=2)[:, 0, 0, 0].tolist() == list(range(0, 32, 2))
    with pytest.raises(ValueError, match="needs 46 frames"):
        metrics.cut_clip(video, stride=3)


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
    out = {"uneven_mp4": _write_uneven_mp4(root / "uneven.mp4", _translating(34, 48, 64, step=2, seed=40))}
    forms = [("odd_mp4", "odd.mp4", (45, 61)), ("gif", "a.gif", (48, 64)), ("png", "png", (48, 64))]
    for name, target, (h, w) in forms:
        out[name] = write_video(_translating(34, h, w, step=3, seed=41), root / target, fps=8)
    return out


@pytest.mark.parametrize("kind", ["uneven_mp4", "odd_mp4", "gif", "png"])
@pytest.mark.parametrize("stride", [1, 2])
def test_read_clip_equals_cutting_the_whole_video(clip_sources, kind, stride, monkeypatch):
    from nadm.io import read_video

    path = clip_sources[kind]
    expected = metrics.cut_clip(read_video(path)[0], stride=stride)
    if kind == "uneven_mp4":  # a plain video file is decoded only up to the clip, never read whole
        monkeypatch.setattr(evaluation, "read_video", lambda p: pytest.fail(f"{p} was read whole"))
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

    path = write_video(_translating(10, 32, 48), tmp_path / "short.mp4", fps=8)
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
    fakes = [write_video(_translating(20, 32, 48, step=2, seed=50 + i), tmp_path / f"f{i}.mp4", fps=8)
             for i in range(3)]
    calls = {"whole": [], "prefix": []}
    whole, prefix = evaluation.read_video, evaluation._decode_prefix
    monkeypatch.setattr(evaluation, "read_video", lambda p: calls["whole"].append(p.name) or whole(p))
    monkeypatch.setattr(evaluation, "_decode_prefix", lambda p, w: calls["prefix"].append(p.name) or prefix(p, w))
    real_paths = list_videos(real)
    opt = dict(weights_dir=str(weights_dir), device="cpu", progress=False, batch_size=2)

    clips_only = evaluation.evaluate_sets([evaluation.VideoSet("g", fakes)], real_paths,
                                          evaluation.EvalOptions(metrics=("fvd", "is"), **opt))
    assert calls == {"whole": ["clip4"], "prefix": ["clip0.mp4", "clip1.mp4", "clip2.mp4", "clip3.mp4",
                                                    "f0.mp4", "f1.mp4", "f2.mp4"]}
    calls["whole"].clear()
    calls["prefix"].clear()
    with_flicker = evaluation.evaluate_sets([evaluation.VideoSet("g", fakes)], real_paths,
                                            evaluation.EvalOptions(metrics=("fvd", "is", "flicker"), **opt))
    assert calls["whole"] == ["clip4", "f0.mp4", "f1.mp4", "f2.mp4"] and len(calls["prefix"]) == 4
    assert with_flicker["g"]["fvd"] == clips_only["g"]["fvd"] and with_flicker["g"]["is"] == clips_only["g"]["is"]


def test_evaluate_too_short_video_is_a_one_line_error(weights_dir, tmp_path, capsys):
    from nadm.io import write_video

    for i, n in enumerate((20, 12)):
        write_video(_translating(n, 32, 48, seed=60 + i), tmp_path / "fake" / f"v{i}.mp4", fps=8)
    code, _, stderr = _run_cli(["evaluate", "--fake", str(tmp_path / "fake"), "--metrics", "is", "--weights-dir",
                                str(weights_dir), "--device", "cpu", "--quiet"], capsys)
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
        write_video(_translating(18, 48, 64, step=1 + i % 2, seed=i), path, fps=8)
    for i in range(4):
        frames = _translating(16, 40, 56, step=2, seed=10 + i)
        write_video(frames, root / "fake" / f"v{i}.gif", fps=8, metadata={"prompt": f"mountains and river, scene {i}"})
    return root / "real", root / "fake"


def test_evaluate_end_to_end(video_dirs, weights_dir, clip_dir, tmp_path, capsys):
    real, fake = video_dirs
    out = tmp_path / "scores.json"
    args = ["evaluate", "--real", str(real), "--fake", str(fake), "--weights-dir", str(weights_dir),
            "--clip-model", str(clip_dir), "--device", "cpu", "--trials", "3", "--subset-size", "3",
            "--json", str(out), "--quiet", "--batch-size", "2"]
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

        frames = _translating(num_frames, height, width, step=self.step, seed=seed)
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
