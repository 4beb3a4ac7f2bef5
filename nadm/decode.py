"""Probing and decoding the dataset's video files (Sec. IV-A1): container headers, full-decode frame counts, and
frame-exact strided reads that seek to the nearest keyframe instead of decoding from the start.

Frame numbering everywhere in this module: frame i is the frame shown at time i / fps from the stream's start
(its timestamp, rounded), so seeking, scene cuts (`nadm.curate`) and the clip sampler (`nadm.data`) agree; for
constant-rate video it is simply the i-th decoded frame. Frames are `(N, H, W, 3) uint8` RGB.

`nadm.io.read_video` reads generated clips (mp4/gif/webp/PNG folder, with their sidecar) and numbers frames in
decode order instead; it opens video files through `open_video` and `frame_rate` here, and `DECODE_ERRORS`
are the PyAV errors both modules turn into NADMErrors.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np

from nadm.errors import NADMError

DECODE_ERRORS = (av.FFmpegError, OSError, ValueError)  # what PyAV raises for unreadable or corrupt files


@dataclass(frozen=True)
class VideoInfo:
    """A video's frame count, rate and size, as its container states them (or as decoding found them)."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        """Seconds: frames / fps."""
        return self.frames / self.fps


def frame_rate(stream) -> Fraction:
    """The stream's frame rate (average, else guessed); NADMError when it has none."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate or rate <= 0:
        raise NADMError("no frame rate in the stream")
    return Fraction(rate)


def open_video(path: Path):
    """(container, first video stream) opened with threaded decoding; NADMError if it is not a video."""
    container = av.open(str(path))
    if not container.streams.video:
        container.close()
        raise NADMError(f"{path}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and size from the container header, without decoding (NADMError if unreadable)."""
    path = Path(path)
    try:
        container, stream = open_video(path)
        with container:
            rate = frame_rate(stream)
            frames = stream.frames
            if frames <= 0:  # some containers (webm, mkv) store no count: derive it from the duration
                if stream.duration is not None and stream.time_base:
                    seconds = Fraction(stream.duration) * stream.time_base
                elif container.duration:
                    seconds = Fraction(container.duration, av.time_base)
                else:
                    raise NADMError(f"{path}: no frame count or duration in the container")
                frames = math.floor(seconds * rate)
            return VideoInfo(path, int(frames), float(rate), stream.width, stream.height)
    except NADMError as e:
        raise NADMError(str(e) if str(path) in str(e) else f"{path}: {e}") from e
    except DECODE_ERRORS as e:
        raise NADMError(f"{path}: cannot read the video ({e})") from e


def indexed_frames(container, stream) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decoded frames with their frame numbers (timestamp * fps, rounded; decode order when there is none)."""
    rate = frame_rate(stream)
    start = stream.start_time or 0
    last = -1
    for frame in container.decode(stream):
        if frame.pts is None:
            last += 1
        else:
            last = round((frame.pts - start) * (frame.time_base or stream.time_base) * rate)
        yield last, frame


def count_frames(path: str | os.PathLike) -> int:
    """Decode a whole video (no colour conversion) and count its frames; NADMError if decoding fails."""
    path = Path(path)
    count = 0
    try:
        container, stream = open_video(path)
        with container:
            for _ in container.decode(stream):
                count += 1
    except NADMError:
        raise
    except DECODE_ERRORS as e:
        raise NADMError(f"{path}: decoding failed after {count} frames ({e})") from e
    return count


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> np.ndarray:
    """Only the frames `indices` of a video as `(len(indices), H, W, 3) uint8` RGB, seeking to the nearest
    keyframe instead of decoding from the start (Sec. IV-A1's strided sampling).

    Frame numbers are timestamps (the module's numbering), not decode positions as in
    `nadm.io.read_video(path, indices)`: the two agree for constant-rate video, but where timestamps skip
    (variable frame rate) a number with no frame of its own gives the frame shown before it, and of two frames
    in one tick only the first has a number, so the same index can name different frames in the two."""
    path = Path(path)
    wanted = sorted({int(i) for i in indices})
    if not wanted or wanted[0] < 0:
        raise ValueError(f"indices must be a non-empty list of frame numbers >= 0, got {list(indices)}")
    try:
        picked = _decode_picked(path, wanted, seek=True)
        if picked is None:  # the demuxer seeked past the first wanted frame: decode from the start instead
            picked = _decode_picked(path, wanted, seek=False)
    except DECODE_ERRORS as e:
        raise NADMError(f"{path}: decoding failed ({e}); run `nadm data check` on the dataset") from e
    missing = [i for i in wanted if i not in picked]
    if missing:
        raise NADMError(
            f"{path}: the video ends before frame {missing[0]} (truncated, or shorter than its header says); "
            "run `nadm data check` on the dataset"
        )
    return np.stack([picked[int(i)] for i in indices])


def _decode_picked(path: Path, wanted: list[int], seek: bool) -> dict[int, np.ndarray] | None:
    """{frame number: RGB} for the wanted numbers (the frame shown at that time); None if a seek overshot."""
    container, stream = open_video(path)
    with container:
        # 1. jump to the keyframe at or before the first wanted frame (decoding always restarts at a keyframe)
        if seek and wanted[0] > 0:
            seconds = Fraction(wanted[0]) / frame_rate(stream)
            target = (stream.start_time or 0) + math.floor(seconds / stream.time_base)
            container.seek(target, stream=stream, backward=True, any_frame=False)
        # 2. decode forward; each wanted number takes the last frame at or before it
        picked: dict[int, np.ndarray] = {}
        pending = list(wanted)
        previous: tuple[int, av.VideoFrame] | None = None
        converted: dict[int, np.ndarray] = {}

        def rgb(number: int, frame: av.VideoFrame) -> np.ndarray:
            if number not in converted:
                converted[number] = frame.to_ndarray(format="rgb24")
            return converted[number]

        for number, frame in indexed_frames(container, stream):
            if previous is None and number > pending[0]:
                if seek:
                    return None
                previous = (number, frame)  # from the start: the first frame is what is shown before it
            while pending and pending[0] < number:
                picked[pending.pop(0)] = rgb(*previous)
            while pending and pending[0] == number:
                picked[pending.pop(0)] = rgb(number, frame)
            if not pending:
                break
            previous = (number, frame)
        return picked


__all__ = [
    "DECODE_ERRORS",
    "VideoInfo",
    "count_frames",
    "frame_rate",
    "indexed_frames",
    "open_video",
    "probe_video",
    "read_frames",
]
