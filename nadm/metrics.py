"""The metrics of the paper's Sec. IV-C2 as math on arrays, plus two weight-free temporal metrics.

Layouts, stated once:
- a video is `(N, H, W, 3) uint8` RGB (what `nadm.io.read_video` returns);
- a clip is the `(16, H, W, 3) uint8` cut from a video by `cut_clip` (FVD16, KVD16 and IS);
- features are `(n, d)` arrays, one row per clip; class probabilities are `(n, classes)` rows summing to 1;
- CLIP embeddings are `(N, d)` rows for a video's frames and `(d,)` for a prompt.

The networks that turn videos into those features live in `nadm.metric_networks`; scoring whole folders of
videos (trials, the tables of Tables I-IV) in `nadm.evaluation`.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from scipy.special import xlogy

from nadm.flow import FlowFn, fb_residual, lands_inside, sample

CLIP_FRAMES = 16  # FVD16 / KVD16 / IS: 16-frame clips (Sec. IV-C2)


# ------------------------------------------------------------------------------------- distance math


def _check_feature_sets(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets as float64 `(n, d)` arrays with equal d, n >= 2 and finite values; ValueError otherwise."""
    out = []
    for name, x in (("a", a), ("b", b)):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"feature set {name} must be a 2-D (n, d) array, got shape {x.shape}")
        if x.shape[0] < 2:
            raise ValueError(f"feature set {name} has {x.shape[0]} row(s); at least 2 are needed for a covariance")
        if not np.isfinite(x).all():
            raise ValueError(f"feature set {name} contains NaN or infinite values")
        out.append(x)
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(f"feature dimensions differ: a has d={out[0].shape[1]}, b has d={out[1].shape[1]}")
    return out[0], out[1]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to `(n, d)` feature sets: FVD on I3D features (Sec. IV-C2)."""
    a, b = _check_feature_sets(a, b)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # a singular product: the usual fix is a tiny ridge on both covariances
        eps = 1e-6
        warnings.warn(f"sqrtm(cov_a @ cov_b) was not finite; adding {eps} to the covariance diagonals", stacklevel=2)
        ridge = eps * np.eye(cov_a.shape[0])
        covmean = scipy.linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


def kernel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel (x.y/d + 1)^3 over the full sets: KVD on I3D features (Sec. IV-C2)."""
    a, b = _check_feature_sets(a, b)
    m, n, d = a.shape[0], b.shape[0], a.shape[1]
    k_aa = (a @ a.T / d + 1.0) ** 3
    k_bb = (b @ b.T / d + 1.0) ** 3
    k_ab = (a @ b.T / d + 1.0) ** 3
    term_aa = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    term_bb = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(term_aa + term_bb - 2.0 * k_ab.mean())


def inception_scores(probs: np.ndarray, splits: int) -> np.ndarray:
    """exp(E_x KL(p(y|x) || p(y))) of each of `splits` consecutive parts of `(n, classes)` probabilities: IS.

    Part i holds rows i*n//splits up to (i+1)*n//splits, as StyleGAN-V splits them; its IS (Sec. IV-C2) is
    reported as the mean +- std over the parts. Returns `(splits,)` float64.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"probs must be an (n, classes) array with n >= 1 and classes >= 2, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probs must be non-negative rows summing to 1 (class probabilities, not logits)")
    n = p.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be between 1 and the number of samples ({n}), got {splits}")
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = (xlogy(part, part) - xlogy(part, marginal)).sum(axis=1)  # 0 log 0 = 0
        scores.append(np.exp(kl.mean()))
    return np.array(scores)


def inception_score(probs: np.ndarray, splits: int = 1) -> float:
    """The mean over `splits` consecutive parts of the Inception Score of `(n, classes)` probabilities (Sec. IV-C2)."""
    return float(inception_scores(probs, splits).mean())


# ---------------------------------------------------------------------------------- clips and frames


def check_video(frames: np.ndarray, min_frames: int = 1) -> None:
    """Raise ValueError unless frames is an `(N, H, W, 3) uint8` array with N >= min_frames."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        is_array = isinstance(frames, np.ndarray)
        desc = f"{frames.dtype} array of shape {frames.shape}" if is_array else type(frames).__name__
        raise ValueError(f"a video must be an (N, H, W, 3) uint8 array, got {desc}")
    if frames.shape[0] < min_frames:
        raise ValueError(f"this metric needs at least {min_frames} frames, the video has {frames.shape[0]}")


def clip_indices(length: int | None, num_frames: int = CLIP_FRAMES, stride: int = 1) -> range:
    """Frame numbers of the FVD16/IS clip, `0, stride, ..., (num_frames - 1) * stride` (Sec. IV-C2).

    With a video `length` (None: not known yet), ValueError when the video is too short for the clip.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    need = (num_frames - 1) * stride + 1
    if length is not None and length < need:
        raise ValueError(f"a {num_frames}-frame clip at stride {stride} needs {need} frames, the video has {length}")
    return range(0, need, stride)


def cut_clip(frames: np.ndarray, num_frames: int = CLIP_FRAMES, stride: int = 1) -> np.ndarray:
    """The first `num_frames` frames at `stride` of an `(N, H, W, 3)` video: the FVD16/IS clip (Sec. IV-C2)."""
    check_video(frames)
    idx = clip_indices(frames.shape[0], num_frames, stride)
    return frames[: idx.stop : stride]


# --------------------------------------------------------------------------------------- CLIP scores


def clip_text_score(image_emb: np.ndarray, text_emb: np.ndarray) -> float:
    """100 x mean cosine between each frame's `(N, d)` embedding and the prompt's `(d,)`: CLIP-text (Sec. IV-C2)."""
    image_emb, text_emb = np.asarray(image_emb, np.float64), np.asarray(text_emb, np.float64)
    if image_emb.ndim != 2 or text_emb.shape != (image_emb.shape[1],):
        raise ValueError(f"need (N, d) image and (d,) text embeddings, got {image_emb.shape} and {text_emb.shape}")
    cos = _unit(image_emb) @ _unit(text_emb[None])[0]
    return float(100.0 * cos.mean())


def clip_temporal_score(image_emb: np.ndarray) -> float:
    """Mean cosine between consecutive frames' `(N, d)` CLIP embeddings, N >= 2: CLIP-temp (Sec. IV-C2)."""
    e = np.asarray(image_emb, np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"CLIP-temp needs (N, d) embeddings of N >= 2 frames, got shape {e.shape}")
    e = _unit(e)
    return float(np.sum(e[:-1] * e[1:], axis=1).mean())


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------- weight-free temporal metrics


def flicker_score(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames in grey levels (0-255); complements CLIP-temp (Sec. IV-C2)."""
    check_video(frames, min_frames=2)
    diffs = [
        np.abs(frames[t + 1].astype(np.float32) - frames[t].astype(np.float32)).mean() for t in range(len(frames) - 1)
    ]
    return float(np.mean(diffs))


def _valid_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """(H, W) bool: the forward flow lands inside the frame and the backward flow there brings it back.

    Forward-backward consistency as in Ruder et al. 2016 / Lai et al. 2018 (`nadm.flow.fb_residual`):
    |f + b(x + f)|^2 <= 0.01 (|f|^2 + |b(x + f)|^2) + 0.5.
    """
    err, tol = fb_residual(forward, backward)
    return lands_inside(forward) & (err <= tol)


def warping_error(frames: np.ndarray, flow: FlowFn) -> float:
    """Flow warping error of Lai et al. 2018, occlusions masked; weight-free complement to CLIP-temp (Sec. IV-C2).

    For each pair (t, t+1): F = flow(I_t, I_{t+1}); W = I_{t+1} sampled at x + F(x) (bilinear), i.e. frame t+1
    warped back onto frame t; the error is sum_x M(x) |I_t(x) - W(x)|^2 / sum_x M(x), with RGB in [0, 1],
    the squared difference summed over the three channels, and M the non-occluded in-frame pixels
    (`_valid_mask`, using flow(I_{t+1}, I_t)). Pairs with no valid pixel are skipped; ValueError if all are.
    """
    check_video(frames, min_frames=2)
    h, w = frames.shape[1:3]
    errors = []
    for t in range(len(frames) - 1):
        a, b = frames[t], frames[t + 1]
        forward = np.asarray(flow(a, b), np.float32)
        backward = np.asarray(flow(b, a), np.float32)
        if forward.shape != (h, w, 2) or backward.shape != (h, w, 2):
            raise ValueError(f"the flow backend returned shape {forward.shape}, expected {(h, w, 2)}")
        mask = _valid_mask(forward, backward)
        if not mask.any():
            continue
        warped = sample(b, forward)  # frame t+1 warped back onto frame t
        sq = np.sum(((a.astype(np.float32) - warped.astype(np.float32)) / 255.0) ** 2, axis=-1)  # (H, W)
        errors.append(float(sq[mask].mean()))
    if not errors:
        raise ValueError("no frame pair has a non-occluded pixel: the warping error is undefined for this video")
    return float(np.mean(errors))
