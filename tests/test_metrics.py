"""Metrics (Sec. IV-C2): distance math, IS, CLIP scores, network loading, temporal metrics, the clip rule."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from fakes import texture, translating

from nadm import metric_networks, metrics
from nadm.errors import NADMError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

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
    still = np.repeat(texture(40, 56)[None], 5, axis=0)
    emb = scorer.images(still)
    assert emb.shape == (5, 16)
    assert metrics.clip_temporal_score(emb) == pytest.approx(1.0, abs=1e-6)
    moving = np.stack([texture(40, 56, seed=s) for s in range(5)])
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
    moving = translating(6)
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
