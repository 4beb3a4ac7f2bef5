"""Scoring whole sets of videos with the metrics of Sec. IV-C2, as the paper's Tables I-IV report them.

`evaluate_sets` checks the request, loads the networks the requested metrics need (`nadm.metric_networks`),
computes the real videos' I3D features once, then scores each set of generated videos (`VideoSet`):
FVD16/KVD16 on one 16-frame clip per video, as mean +- std over trials (random subsets), IS on the same
clips as mean +- std over its splits (of every trial), and CLIP-text/CLIP-temp/warp/flicker per video, averaged
over the set. The math is in `nadm.metrics`.

Clips of interpolated videos: a generated video made with SOFP has 2N-1 frames, its N generated keyframes at
the even frames. By default its FVD16/KVD16/IS clip takes the keyframes (`keyframe_step` reads the sidecar),
so a clip covers the same 16 generated frames as without interpolation; `EvalOptions.keyframes=False` takes
the first 16 output frames instead.

Reading: each video is decoded at most once per set. Where a set needs only the clips (the real videos, and
generated sets scored on FVD/KVD/IS alone) a video is read with `nadm.io.read_video(path, indices)`: only the
clip's frames, the same bit for bit as reading it whole and cutting the clip (`nadm.metrics.cut_clip`), with
video files decoded no further than the clip's last frame and frame folders opening only its images (GIF/WebP
are read whole: their frame durations set the numbering).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nadm.errors import NADMError
from nadm.flow import FlowFn
from nadm.io import VideoTooShort, read_sidecar, read_video
from nadm.metric_networks import DEFAULT_CLIP_MODEL, C3DProbabilities, ClipScorer, I3DFeatures
from nadm.metrics import (
    CLIP_FRAMES,
    clip_indices,
    clip_temporal_score,
    clip_text_score,
    flicker_score,
    frechet_distance,
    inception_scores,
    kernel_distance,
    warping_error,
)

METRICS = ("fvd", "kvd", "clip_text", "clip_temp", "is", "warp", "flicker")
NEEDS_REAL = frozenset({"fvd", "kvd"})
NEEDS_PROMPTS = frozenset({"clip_text"})
PER_VIDEO = ("clip_text", "clip_temp", "warp", "flicker")  # averaged over the generated videos; whole videos
TRIAL_METRICS = frozenset({"fvd", "kvd", "is"})  # one clip per video, drawn in trials (random subsets)
IS_SPLITS = 10  # StyleGAN-V's IS: mean +- std over 10 splits of the generated clips


@dataclass
class EvalOptions:
    """Everything the evaluation needs besides the videos; defaults follow Sec. IV-C2."""

    metrics: tuple[str, ...] = METRICS
    trials: int = 1
    subset_size: int | None = None
    seed: int = 0
    is_splits: int = IS_SPLITS
    real_stride: int = 1
    fake_stride: int = 1
    keyframes: bool = True  # interpolated generated videos: clips of their keyframes (see the module docstring)
    weights_dir: str | None = None
    clip_model: str = DEFAULT_CLIP_MODEL
    flow: str = "dis"
    device: str | None = None
    batch_size: int = 8
    progress: bool = True


@dataclass
class VideoSet:
    """Generated videos to score: a label for the table, the files, and one prompt per file (or None)."""

    label: str
    paths: list[Path]
    prompts: list[str] | None = None


@dataclass
class _Networks:
    """The networks one evaluation needs (None where no requested metric uses it)."""

    i3d: I3DFeatures | None
    c3d: C3DProbabilities | None
    clip: ClipScorer | None
    flow: FlowFn | None


# ------------------------------------------------------------------------------------------------ reading


def read_clip(path: Path, stride: int, frames: np.ndarray | None = None) -> np.ndarray:
    """The FVD16/IS clip of one video (its first 16 frames at `stride`) as a new `(16, H, W, 3)` array: cut
    from `frames` (the whole video, already read) when given, else read alone (`read_video(path, indices)`).
    NADMError naming the path when the video is too short, the same either way, or unreadable."""
    path = Path(path).expanduser()
    if frames is not None:
        wanted = _clip_rule(path, len(frames), stride)
        return frames[: wanted.stop : stride].copy()  # a copy: a queued clip must not keep the whole video alive
    try:
        return read_video(path, _clip_rule(path, None, stride))[0]
    except VideoTooShort as e:
        _clip_rule(path, e.length, stride)  # raises the error cutting the whole video gives
        raise


def _clip_rule(path: Path, length: int | None, stride: int) -> range:
    """`clip_indices` with the video's path and advice in the error."""
    try:
        return clip_indices(length, CLIP_FRAMES, stride)
    except ValueError as e:
        raise NADMError(f"{path}: {e}; remove short videos or lower the stride") from e


def keyframe_step(path: Path) -> int:
    """Every how many frames a video's generated keyframes lie, from its sidecar; 1 when it records none.

    `nadm generate` and `nadm compare` record `keyframes` N and `frames_out` M = 2N - 1 (at the top, or under
    `settings`), `nadm interpolate` records `frames_in` N and `frames_out` M under `interpolation`: N frames
    evenly among M, every (M - 1) / (N - 1)-th. NADMError when the sidecar's frame count contradicts it.
    """
    side = read_sidecar(path) or {}
    for record in (side, side.get("settings"), side.get("interpolation")):
        if not isinstance(record, dict):
            continue
        n, m = record.get("keyframes", record.get("frames_in")), record.get("frames_out")
        if not (isinstance(n, int) and isinstance(m, int) and 2 <= n < m and (m - 1) % (n - 1) == 0):
            continue
        if side.get("frames", m) != m:
            raise NADMError(f"{path}: its sidecar names {n} keyframes of {m} frames but the video has "
                            f"{side['frames']}; pass --all-frames to score its first frames")
        return (m - 1) // (n - 1)
    return 1


class _ClipBatcher:
    """Feeds clips to a network in batches of equal-shaped clips and collects the output rows in order."""

    def __init__(self, net: Callable[[Sequence[np.ndarray]], np.ndarray], batch_size: int) -> None:
        self.net, self.batch_size = net, batch_size
        self.pending: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []

    def add(self, clip: np.ndarray) -> None:
        """Queue one clip; runs the network when the batch is full or the clip shape changes."""
        if self.pending and clip.shape != self.pending[0].shape:
            self.flush()
        self.pending.append(clip)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Run the network on the queued clips."""
        if self.pending:
            self.rows.append(self.net(self.pending))
            self.pending = []

    def result(self) -> np.ndarray:
        """All output rows, `(n, d)`."""
        self.flush()
        return np.concatenate(self.rows)


# ------------------------------------------------------------------------------------------------- trials


def trial_size(n: int, trials: int, size: int | None, what: str = "a set") -> int:
    """Videos per trial: all n for one trial without a size, else `size` (default half the set, at least 2)."""
    if trials == 1 and size is None:
        return n
    k = size if size is not None else max(2, n // 2)
    if not 2 <= k <= n:
        raise NADMError(f"cannot draw subsets of {k} videos from {what} of {n} (need 2 <= --subset-size <= {n})")
    return k


def subsets(n: int, trials: int, size: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """Index sets of the trials: all n items for one trial without a size, else one random subset without
    replacement of `trial_size` items per trial."""
    k = trial_size(n, trials, size)
    if trials == 1 and size is None:
        return [np.arange(n)]
    return [np.sort(rng.choice(n, size=k, replace=False)) for _ in range(trials)]


def _summary(values: Iterable[float], **extra: Any) -> dict[str, Any]:
    """Mean, population std and the raw values of a metric, plus any sizes worth recording."""
    vals = [float(v) for v in values]
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "values": vals, **extra}


# ---------------------------------------------------------------------------------------------- the sets


def check_request(fakes: Sequence[VideoSet], real: Sequence[Path] | None, opt: EvalOptions) -> set[str]:
    """The requested metrics, after checking every input they need (NADMError naming what is missing)."""
    want = set(opt.metrics)
    unknown = want - set(METRICS)
    if unknown or not want:
        raise NADMError(f"unknown or no metrics ({', '.join(sorted(unknown))}): choose from {', '.join(METRICS)}")
    if opt.trials < 1 or opt.is_splits < 1 or opt.batch_size < 1 or opt.real_stride < 1 or opt.fake_stride < 1:
        raise NADMError("trials, IS splits, batch size and strides must all be >= 1")
    if want & NEEDS_REAL:
        if not real:
            raise NADMError(f"{', '.join(sorted(want & NEEDS_REAL))} compare against real videos: pass --real DIR")
        if len(real) < 2:
            raise NADMError(f"FVD/KVD need at least 2 real videos, got {len(real)}")
        trial_size(len(real), opt.trials, opt.subset_size, "the real set")
    if not fakes:
        raise NADMError("no generated videos to evaluate")
    labels = [s.label for s in fakes]
    if len(set(labels)) != len(labels):
        raise NADMError(f"the sets of generated videos need distinct labels, got {labels}")
    for s in fakes:
        if not s.paths:
            raise NADMError(f"{s.label}: no generated videos")
        if want & NEEDS_REAL and len(s.paths) < 2:
            raise NADMError(f"{s.label}: FVD/KVD need at least 2 generated videos, got {len(s.paths)}")
        if want & TRIAL_METRICS:
            k = trial_size(len(s.paths), opt.trials, opt.subset_size, f"the set {s.label}")
            if "is" in want and opt.is_splits > k:
                raise NADMError(
                    f"{opt.is_splits} IS splits need at least that many videos per trial, {s.label} has {k}: "
                    f"pass --is-splits N with N <= {k}"
                )
        if want & NEEDS_PROMPTS and (s.prompts is None or len(s.prompts) != len(s.paths)):
            raise NADMError(f"{s.label}: clip_text needs one prompt per generated video (--prompts FILE)")
    return want


def _load_networks(want: set[str], opt: EvalOptions) -> _Networks:
    """Load every network the requested metrics use (before any video is read, so missing weights fail fast)."""
    flow = None
    if "warp" in want:
        from nadm.interpolate import get_flow

        flow = get_flow(opt.flow)
    return _Networks(
        i3d=I3DFeatures(opt.weights_dir, opt.device) if want & NEEDS_REAL else None,
        c3d=C3DProbabilities(opt.weights_dir, opt.device) if "is" in want else None,
        clip=ClipScorer(opt.clip_model, opt.device, 4 * opt.batch_size) if want & {"clip_text", "clip_temp"} else None,
        flow=flow,
    )


def _score_set(
    fake: VideoSet, want: set[str], nets: _Networks, real_feats: np.ndarray | None, opt: EvalOptions
) -> dict[str, Any]:
    """All requested metrics for one set of generated videos."""
    # 1. one pass over the videos, each decoded once: whole when a per-video metric needs every frame (the
    #    clip is cut from it), else only up to the clip's last frame
    i3d = _ClipBatcher(nets.i3d, opt.batch_size) if nets.i3d is not None else None
    c3d = _ClipBatcher(nets.c3d, opt.batch_size) if nets.c3d is not None else None
    batchers = [b for b in (i3d, c3d) if b is not None]
    per_video: dict[str, list[float]] = {m: [] for m in PER_VIDEO if m in want}
    strides: set[int] = set()
    bar = tqdm(fake.paths, desc=f"{fake.label}", unit="video", disable=not opt.progress, file=sys.stderr)
    for i, path in enumerate(bar):
        frames = read_video(path)[0] if per_video else None
        if batchers:
            stride = opt.fake_stride * (keyframe_step(path) if opt.keyframes else 1)
            strides.add(stride)
            clip = read_clip(path, stride, frames)
            for batcher in batchers:
                batcher.add(clip)
        if frames is None:
            continue
        try:
            if nets.clip is not None:
                emb = nets.clip.images(frames)
                if "clip_text" in want:
                    per_video["clip_text"].append(clip_text_score(emb, nets.clip.text(fake.prompts[i])))
                if "clip_temp" in want:
                    per_video["clip_temp"].append(clip_temporal_score(emb))
            if "warp" in want:
                per_video["warp"].append(warping_error(frames, nets.flow))
            if "flicker" in want:
                per_video["flicker"].append(flicker_score(frames))
        except ValueError as e:
            raise NADMError(f"{path}: {e}") from e

    # 2. FVD/KVD/IS on the trials' subsets (one seeded generator per set: every set sees the same draws)
    #    (IS: each trial's clips shuffled, then split, as StyleGAN-V does; every split's score is one value)
    results: dict[str, Any] = {}
    rng = np.random.default_rng(opt.seed)
    clips = {"fake_clip_strides": sorted(strides)}
    if i3d is not None:
        fake_feats = i3d.result()
        pairs = list(zip(subsets(len(real_feats), opt.trials, opt.subset_size, rng),
                         subsets(len(fake_feats), opt.trials, opt.subset_size, rng)))
        sizes = {"real_per_trial": len(pairs[0][0]), "fake_per_trial": len(pairs[0][1]), **clips}
        for name, fn in (("fvd", frechet_distance), ("kvd", kernel_distance)):
            if name in want:
                results[name] = _summary([fn(real_feats[r], fake_feats[f]) for r, f in pairs], **sizes)
    if c3d is not None:
        probs = c3d.result()
        parts = subsets(len(probs), opt.trials, opt.subset_size, rng)
        values = np.concatenate([inception_scores(probs[rng.permutation(idx)], opt.is_splits) for idx in parts])
        results["is"] = _summary(values, fake_per_trial=len(parts[0]), splits=opt.is_splits, trials=len(parts), **clips)

    # 3. per-video metrics: mean and spread over the videos
    for name, values in per_video.items():
        results[name] = _summary(values)
    return {m: results[m] for m in METRICS if m in results}


def evaluate_sets(
    fakes: Sequence[VideoSet], real: Sequence[Path] | None = None, options: EvalOptions | None = None
) -> dict[str, dict[str, Any]]:
    """Every requested metric of Sec. IV-C2 for each set of generated videos: {label: {metric: summary}}.

    A summary is {"mean", "std", "values", ...}: FVD and KVD have one value per trial (std over trials), IS one
    per split of every trial (std over those); CLIP-text, CLIP-temp, warp and flicker one value per generated
    video (std over videos).
    """
    opt = options or EvalOptions()
    want = check_request(fakes, real, opt)
    # 1. networks first; 2. real I3D features once for every set (clips only); 3. each set of generated videos
    nets = _load_networks(want, opt)
    real_feats = None
    if nets.i3d is not None:
        batcher = _ClipBatcher(nets.i3d, opt.batch_size)
        for path in tqdm(real, desc="real videos", unit="video", disable=not opt.progress, file=sys.stderr):
            batcher.add(read_clip(path, opt.real_stride))
        real_feats = batcher.result()
    return {s.label: _score_set(s, want, nets, real_feats, opt) for s in fakes}
