"""Curating an LPV-HD-style dataset (Sec. III-B): scene cuts into single-scene clips, checks and statistics.

`prepare_dataset` cuts every video under SRC at its scene changes (PySceneDetect) into clips in DST, carrying
captions over; `check_dataset` verifies that every clip decodes, has a caption and is long enough; both print the
paper's kind of statistics (`format_stats`). Layout as in `nadm.data`, frame numbering as in `nadm.decode`.
"""

# scenedetect is imported inside the functions that cut scenes: `nadm data check` starts without it.

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Sequence

import av
import numpy as np
from tqdm import tqdm

from nadm import __version__
from nadm.config import clip_span
from nadm.data import (
    CAPTION_FILES,
    VIDEO_EXTENSIONS,
    find_captions_file,
    find_videos,
    read_captions,
    videos_dir,
    write_captions,
)
from nadm.decode import DECODE_ERRORS, VideoInfo, count_frames, frame_rate, indexed_frames, open_video, probe_video
from nadm.errors import NADMError
from nadm.io import MP4_CRF
from nadm.outputs import check_replaceable, check_writable, staged_folder

DETECTOR_DEFAULTS = {"content": 27.0, "adaptive": 3.0}  # PySceneDetect's own default thresholds
MIN_SCENE_LEN = 15  # frames; PySceneDetect's default: cuts closer than this are merged (flash suppression)

# ------------------------------------------------------------------------------------------ statistics


def _seconds_text(seconds: float) -> str:
    """1234.5 -> '20 min 34.5 s'."""
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    parts = ([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if hours or minutes else [])
    return " ".join(parts + [f"{rest:.1f} s"])


def _counts(counter: Counter, top: int = 5) -> str:
    """'1088 x 6 s, 120 x 5 s, ...' for the most common values."""
    common = counter.most_common(top)
    text = ", ".join(f"{count} x {value}" for value, count in common)
    rest = sum(counter.values()) - sum(count for _, count in common)
    return text + (f", {rest} other" if rest else "")


def format_stats(infos: Sequence[VideoInfo]) -> str:
    """The paper's dataset summary (Sec. III-B): clip count, durations, resolutions and frame rates."""
    if not infos:
        return "clips: 0"
    durations = [info.duration for info in infos]
    lines = [
        f"clips: {len(infos)}",
        f"duration: total {_seconds_text(sum(durations))}, mean {np.mean(durations):.1f} s, "
        f"min {min(durations):.1f} s, max {max(durations):.1f} s",
        "durations: " + _counts(Counter(f"{round(d)} s" for d in durations)),
        "resolutions: " + _counts(Counter(f"{i.width}x{i.height}" for i in infos)),
        "frame rates: " + _counts(Counter(f"{round(i.fps, 2):g} fps" for i in infos)),
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ curation


def detect_scenes(
    path: str | os.PathLike, detector: str = "content", threshold: float | None = None
) -> list[tuple[int, int]]:
    """Frame ranges `[start, end)` of a video's single-scene shots, cut by PySceneDetect (Sec. III-B)."""
    import scenedetect

    if detector not in DETECTOR_DEFAULTS:
        raise NADMError(f"detector must be one of {', '.join(DETECTOR_DEFAULTS)}, got {detector!r}")
    threshold = DETECTOR_DEFAULTS[detector] if threshold is None else threshold
    if detector == "content":
        scene_detector = scenedetect.ContentDetector(threshold=threshold, min_scene_len=MIN_SCENE_LEN)
    else:
        scene_detector = scenedetect.AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=MIN_SCENE_LEN)
    container, stream = open_video(Path(path))
    with container:
        rate = frame_rate(stream)  # nadm.decode's frame numbering, whatever rate PySceneDetect settles on
    # PyAV directly (scenedetect.open_video would fall back to OpenCV silently); suppress_output quiets FFmpeg's log
    video = scenedetect.VideoStreamAv(str(path), suppress_output=True)
    manager = scenedetect.SceneManager()
    manager.add_detector(scene_detector)
    manager.detect_scenes(video)
    # timecodes -> this module's frame numbers (time * fps, rounded)
    return [
        (round(Fraction(a.seconds) * rate), round(Fraction(b.seconds) * rate))
        for a, b in manager.get_scene_list(start_in_scene=True)
    ]


class _ClipWriter:
    """Streams RGB frames into an H.264 mp4 (libx264, yuv420p, CRF as nadm.io); odd sizes lose their last
    row/column, since yuv420p needs even sizes."""

    def __init__(self, path: Path, rate: Fraction, width: int, height: int):
        self.path, self.width, self.height, self.frames = path, width - width % 2, height - height % 2, 0
        self.container = av.open(str(path), mode="w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.options = {"crf": str(MP4_CRF), "preset": "medium"}

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def _write_scenes(path: Path, scenes: list[tuple[int, int, Path]]) -> list[VideoInfo]:
    """One decoding pass over `path` writing frames [start, end) of each scene to its own mp4."""
    infos: list[VideoInfo] = []
    container, stream = open_video(path)
    with container:
        rate = frame_rate(stream)
        writer: _ClipWriter | None = None
        k = 0
        for number, frame in indexed_frames(container, stream):
            while k < len(scenes) and number >= scenes[k][1]:  # past the scene's end: finish its clip
                if writer is not None:
                    writer.close()
                    infos.append(VideoInfo(writer.path, writer.frames, float(rate), writer.width, writer.height))
                    writer = None
                k += 1
            if k == len(scenes):
                break
            if number >= scenes[k][0]:
                if writer is None:
                    writer = _ClipWriter(scenes[k][2], rate, frame.width, frame.height)
                writer.write(frame.to_ndarray(format="rgb24"))
        if writer is not None:
            writer.close()
            infos.append(VideoInfo(writer.path, writer.frames, float(rate), writer.width, writer.height))
    return infos


def _check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """NADMError unless DST may be written: not inside SRC (or SRC in it), empty unless --overwrite."""
    if not src.is_dir():
        raise NADMError(f"source folder {src} does not exist")
    s, d = src.resolve(), dst.resolve()
    if s == d or s in d.parents or d in s.parents:
        raise NADMError(f"destination {dst} must be outside the source {src} (and not contain it)")
    if dst.exists() and not dst.is_dir():
        raise NADMError(f"destination {dst} is a file")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise NADMError(f"destination {dst} is not empty: pass --overwrite to replace its contents")
    check_replaceable(dst, overwrite=True)  # empty, or (with --overwrite) a dataset this command made, nothing else
    check_writable(dst.parent)


@dataclass
class PrepareReport:
    """What `prepare_dataset` did: the clips written and every problem (file: message) it skipped."""

    clips: list[VideoInfo]
    problems: list[tuple[str, str]]
    videos: int
    scenes: int
    dropped_short: int
    uncaptioned: int = 0  # clips written with an empty caption, to fill in


def _cut_video(
    source: Path, rel: str, videos: Path, stem: str, detector: str, threshold: float | None, min_frames: int,
    report: PrepareReport,
) -> dict[str, tuple[int, int, VideoInfo]]:
    """One source video of `prepare_dataset` cut at its scene changes into `videos/<stem>-sceneNNN.mp4`: {clip name
    relative to `videos`: (start, end, what was written)}; unreadable files and short scenes go into `report`."""
    import scenedetect

    try:
        stated = probe_video(source).frames
        scenes = detect_scenes(source, detector, threshold)
    except (NADMError, scenedetect.VideoOpenFailure, *DECODE_ERRORS) as e:
        report.problems.append((rel, f"unreadable, skipped ({str(e).removeprefix(f'{source}: ')})"))
        return {}
    seen = scenes[-1][1] if scenes else 0
    if seen < stated:  # PySceneDetect skips what it cannot decode: a short count means a damaged file
        report.problems.append((rel, f"truncated or corrupt, skipped (decoded {seen} of {stated} frames)"))
        return {}
    report.scenes += len(scenes)
    keep = []
    for number, (start, end) in enumerate(scenes, start=1):
        if end - start < min_frames:
            report.dropped_short += 1
            continue
        clip = videos / f"{stem}-scene{number:03d}.mp4"
        clip.parent.mkdir(parents=True, exist_ok=True)
        keep.append((start, end, clip))
    try:
        infos = _write_scenes(source, keep) if keep else []
    except (NADMError, *DECODE_ERRORS) as e:
        for _, _, out in keep:
            out.unlink(missing_ok=True)
        report.problems.append((rel, f"decoding failed while cutting, skipped ({str(e).removeprefix(f'{source}: ')})"))
        return {}
    written = {}
    for info, (start, end, out) in zip(infos, keep):
        if info.frames < min_frames:  # fewer frames decoded than the cut promised (variable frame rate)
            out.unlink()
            report.dropped_short += 1
            continue
        written[out.relative_to(videos).as_posix()] = (start, end, info)
    return written


def prepare_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    detector: str = "content",
    threshold: float | None = None,
    min_frames: int = 32,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareReport:
    """Cut every video under SRC at its scene changes into single-scene clips in DST (Sec. III-B's curation)."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    # 1. validate everything before any work
    if min_frames < 1:
        raise NADMError(f"--min-frames must be >= 1, got {min_frames}")
    if threshold is not None and not threshold > 0:
        raise NADMError(f"--threshold must be > 0, got {threshold}")
    if detector not in DETECTOR_DEFAULTS:
        raise NADMError(f"detector must be one of {', '.join(DETECTOR_DEFAULTS)}, got {detector!r}")
    _check_destination(src, dst, overwrite)
    source_root = src / "videos" if (src / "videos").is_dir() else src
    captions_file = find_captions_file(src)
    source_captions = read_captions(captions_file) if captions_file else {}
    sources = find_videos(source_root)
    if not sources:
        raise NADMError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {source_root}")

    # 2. cut each video into a staging folder beside DST (renamed into place at the end: all or nothing)
    report = PrepareReport([], [], len(sources), 0, 0)
    listed = {source.relative_to(source_root).as_posix() for source in sources}
    for video in source_captions:
        if video not in listed:
            report.problems.append((video, f"captioned in {captions_file.name} but not found"))
    captions: dict[str, str] = {}
    provenance = []
    taken: set[str] = set()
    with staged_folder(dst, overwrite=True) as staging:  # replaces only an empty folder or an earlier prepare's
        for source in tqdm(sources, desc="prepare", unit="video", disable=not progress):
            rel = source.relative_to(source_root).as_posix()
            stem = PurePosixPath(rel).with_suffix("").as_posix()
            if stem in taken:  # a.mp4 and a.mov in one folder: keep the clip names apart
                stem = f"{stem}_{source.suffix[1:]}"
            taken.add(stem)
            written = _cut_video(source, rel, staging / "videos", stem, detector, threshold, min_frames, report)
            for name, (start, end, info) in written.items():
                captions[name] = source_captions.get(rel, "")
                provenance.append({"clip": name, "source": rel, "start": start, "end": end, "frames": info.frames})
                report.clips.append(VideoInfo(dst / "videos" / name, info.frames, info.fps, info.width, info.height))

        # 3. captions (inherited or empty, to fill in) and a record of where every clip came from
        report.uncaptioned = sum(1 for caption in captions.values() if not caption)
        (staging / "videos").mkdir(exist_ok=True)
        write_captions(staging / "captions.csv", captions)
        used = DETECTOR_DEFAULTS[detector] if threshold is None else threshold
        settings = {"detector": detector, "threshold": used, "min_frames": min_frames}
        record = {"format": "nadm-dataset", "nadm_version": __version__, "source": str(src.resolve()),
                  "settings": settings, "clips": provenance, "problems": report.problems}  # fmt: skip
        (staging / "prepare.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


@dataclass
class CheckReport:
    """What `check_dataset` found: the clips that decoded and every problem as (file, message)."""

    infos: list[VideoInfo]
    problems: list[tuple[str, str]]


def check_dataset(
    root: str | os.PathLike,
    *,
    frames: int = 8,
    stride: int = 4,
    captions_file: str | os.PathLike | None = None,
    progress: bool = True,
) -> CheckReport:
    """Every clip of ROOT decodes fully, has a non-empty caption and at least `clip_span(frames, stride)` frames
    (Sec. IV-A1)."""
    if frames < 1 or stride < 1:
        raise NADMError(f"--frames and --stride must be >= 1, got {frames} and {stride}")
    root = Path(root).expanduser()
    folder = videos_dir(root)
    need = clip_span(frames, stride)
    report = CheckReport([], [])
    # 1. captions: a malformed file is a user mistake (NADMError); a missing one is a problem for every clip
    file = Path(captions_file) if captions_file is not None else find_captions_file(root)
    if file is None:
        report.problems.append((str(root), f"no {' or '.join(CAPTION_FILES)}"))
        captions = {}
    else:
        captions = read_captions(file)
    on_disk = {p.relative_to(folder).as_posix(): p for p in find_videos(folder)}
    for video in captions:
        if video not in on_disk:
            report.problems.append((video, f"listed in {file.name} but the file is missing"))
    # 2. every video file: caption, full decode, length
    for name, path in tqdm(on_disk.items(), desc="check", unit="clip", disable=not progress):
        if name not in captions:
            report.problems.append((name, "no caption (not listed in the captions file)"))
        elif not captions[name]:
            report.problems.append((name, "empty caption"))
        try:
            header = probe_video(path)
            decoded = count_frames(path)
        except NADMError as e:
            report.problems.append((name, f"unreadable or corrupt: {str(e).removeprefix(f'{path}: ')}"))
            continue
        if decoded < header.frames:
            report.problems.append((name, f"truncated: decoded {decoded} of the {header.frames} frames it states"))
        if decoded < need:
            message = f"too short: {decoded} frames, training needs ({frames} - 1) x stride {stride} + 1 = {need}"
            report.problems.append((name, message))
        report.infos.append(VideoInfo(path, decoded, header.fps, header.width, header.height))
    return report




__all__ = ["CheckReport", "PrepareReport", "check_dataset", "detect_scenes", "format_stats", "prepare_dataset"]
