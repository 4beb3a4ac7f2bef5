"""LPV-HD-style video datasets (Sec. III-B) and the training clips drawn from them (Sec. IV-A1).

Layout (docs/dataset.md has the full spec)::

    ROOT/videos/...            video files, any nesting
    ROOT/captions.csv          header `video,caption` (video relative to ROOT/videos), or
    ROOT/captions.jsonl        one {"video": ..., "caption": ...} object per line, or
    ROOT/captions.csv          WebVid's header `videoid,name,page_dir` -> ROOT/videos/<page_dir>/<videoid>.mp4

This module holds that layout and its captions files, and the training clips: `VideoClipDataset`, configured by
`nadm.config.DataConfig` (also importable from here). Probing and decoding the video files (and their frame
numbering) is `nadm.decode`; curation -- scene cuts, checks -- is `nadm.curate`; the VAE/text-encoder latent cache
is `nadm.latent_cache`.
Training clips are `(frames, 3, R, R)` float tensors in [-1, 1].
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path, PurePosixPath
from typing import NamedTuple, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from nadm.config import DataConfig
from nadm.decode import count_frames, probe_video, read_frames  # read_frames, count_frames: also nadm.data's API
from nadm.errors import NADMError
from nadm.outputs import write_text_atomic

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
CAPTION_FILES = ("captions.csv", "captions.jsonl")


# ------------------------------------------------------------------------------------------ layout, captions


class Clip(NamedTuple):
    """One dataset entry: a video file and its caption ("" until someone writes it)."""

    path: Path
    caption: str


def videos_dir(root: str | os.PathLike) -> Path:
    """ROOT/videos, which must exist (NADMError otherwise)."""
    folder = Path(root).expanduser() / "videos"
    if not folder.is_dir():
        raise NADMError(f"{folder} is not a folder: a dataset is ROOT/videos/... plus ROOT/captions.csv")
    return folder


def find_videos(folder: str | os.PathLike) -> list[Path]:
    """Every video file (by extension, VIDEO_EXTENSIONS) under a folder, any depth, sorted; hidden files skipped."""
    folder = Path(folder)
    found = [
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not any(
            part.startswith(".") for part in p.relative_to(folder).parts
        )
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def find_captions_file(root: str | os.PathLike) -> Path | None:
    """ROOT/captions.csv or ROOT/captions.jsonl (NADMError when both exist), or None when neither does."""
    present = [Path(root) / name for name in CAPTION_FILES if (Path(root) / name).is_file()]
    if len(present) > 1:
        raise NADMError(f"both {present[0]} and {present[1]} exist: keep one captions file")
    return present[0] if present else None


def _relative_video(text: str, where: str) -> str:
    """A video path relative to ROOT/videos, normalised to forward slashes; NADMError if it escapes."""
    rel = PurePosixPath(text.strip().replace("\\", "/"))
    if not text.strip() or rel.is_absolute() or ".." in rel.parts or rel.as_posix() == ".":
        raise NADMError(f"{where}: video path {text!r} must be relative to ROOT/videos (no '..', not absolute)")
    return rel.as_posix()


def _read_csv(file: Path) -> list[tuple[str, str, int]]:
    """(video, caption, line) from a `video,caption` CSV or a WebVid `videoid,name,page_dir` CSV."""
    rows: list[tuple[str, str, int]] = []
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise NADMError(f"{file}: empty file (expected the header line video,caption)")
            header = [h.strip() for h in header]
            if {"video", "caption"} <= set(header):
                webvid = False
            elif {"videoid", "name", "page_dir"} <= set(header):
                webvid = True
            else:
                raise NADMError(
                    f"{file}: line 1: header must contain video,caption (or WebVid's videoid,name,page_dir), "
                    f"found {','.join(header)}"
                )
            col = {name: header.index(name) for name in header}
            for row in reader:
                where = f"{file}: line {reader.line_num}"
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(header):
                    raise NADMError(f"{where}: expected {len(header)} fields ({','.join(header)}), found {len(row)}")
                if webvid:
                    videoid, page_dir = row[col["videoid"]].strip(), row[col["page_dir"]].strip()
                    if not videoid or not page_dir:
                        raise NADMError(f"{where}: empty videoid or page_dir")
                    video, caption = f"{page_dir}/{videoid}.mp4", row[col["name"]]
                else:
                    video, caption = row[col["video"]], row[col["caption"]]
                rows.append((_relative_video(video, where), caption.strip(), reader.line_num))
    except csv.Error as e:
        raise NADMError(f"{file}: line {reader.line_num}: malformed CSV ({e})") from e
    except UnicodeDecodeError as e:
        raise NADMError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    return rows


def _read_jsonl(file: Path) -> list[tuple[str, str, int]]:
    """(video, caption, line) from a JSON-lines file of {"video": ..., "caption": ...} objects."""
    rows: list[tuple[str, str, int]] = []
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise NADMError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    for number, line in enumerate(lines, start=1):
        where = f"{file}: line {number}"
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise NADMError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(item, dict):
            raise NADMError(f"{where}: expected an object with keys video and caption")
        for key in ("video", "caption"):
            if not isinstance(item.get(key), str):
                raise NADMError(f"{where}: key {key!r} must be a string, found {item.get(key)!r}")
        rows.append((_relative_video(item["video"], where), item["caption"].strip(), number))
    return rows


def read_captions(file: str | os.PathLike) -> dict[str, str]:
    """Captions file -> {video path relative to ROOT/videos: caption}; NADMError naming the line if malformed."""
    file = Path(file).expanduser()
    if not file.is_file():
        raise NADMError(f"captions file {file} does not exist")
    if file.suffix.lower() == ".jsonl":
        rows = _read_jsonl(file)
    elif file.suffix.lower() == ".csv":
        rows = _read_csv(file)
    else:
        raise NADMError(f"{file}: captions must be a .csv or .jsonl file")
    captions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for video, caption, line in rows:
        if video in captions:
            raise NADMError(f"{file}: line {line}: {video} is already listed on line {first_line[video]}")
        captions[video], first_line[video] = caption, line
    return captions


def load_index(root: str | os.PathLike, captions_file: str | os.PathLike | None = None) -> list[Clip]:
    """The dataset's (path, caption) list in file order (Sec. III-B); paths may not exist, `check_dataset` says."""
    root = Path(root).expanduser()
    folder = videos_dir(root)
    file = Path(captions_file) if captions_file is not None else find_captions_file(root)
    if file is None:
        raise NADMError(f"no {' or '.join(CAPTION_FILES)} in {root}")
    return [Clip(folder / video, caption) for video, caption in read_captions(file).items()]


def write_captions(file: str | os.PathLike, captions: dict[str, str]) -> Path:
    """Write a `video,caption` CSV sorted by video, atomically (temporary file + rename)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["video", "caption"])
    for video in sorted(captions):
        writer.writerow([video, captions[video]])
    return write_text_atomic(file, buffer.getvalue())


# ------------------------------------------------------------------------------------------ training data


def listing(items: Sequence[str], limit: int = 5) -> str:
    """'a, b, c and 7 more'."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """`(N, H, W, 3)` -> `(N, size, size, 3)` uint8: the centre square, scaled so the short side is `size`
    (Sec. IV-A1's "resized and center-cropped")."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3), got {tuple(frames.shape)}")
    n, h, w, _ = frames.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    # cropping the centre square first and scaling it equals scaling the short side first, at less cost
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    out = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        out[k] = cv2.resize(frames[k, top : top + side, left : left + side], (size, size), interpolation=interpolation)
    return out


class VideoClipDataset(Dataset):
    """Training clips of an LPV-HD-style dataset (Sec. III-B, IV-A1), deterministic given (seed, epoch, index);
    `seed` is the run's (`run.seed`).

    Item: {"pixel_values": float32 (frames, 3, R, R) in [-1, 1], "caption": str ("" for the CFG-dropped ones),
    "path": str, "frame_indices": int64 (frames,) = start + k * stride}. Batched by the default collate:
    pixel_values (batch, frames, 3, R, R). Call `set_epoch` each epoch (as with DistributedSampler) so
    epochs draw different clips; with persistent DataLoader workers the workers keep the old epoch.
    """

    def __init__(self, config: DataConfig, seed: int = 0):
        if config.root is None:
            raise NADMError("no dataset ROOT given (DataConfig.root)")
        self.config, self.seed, self.epoch = config, int(seed), 0
        # 1. the index, and every file in it present and captioned
        self.clips = load_index(config.root, config.captions_file)
        if not self.clips:
            raise NADMError(f"the captions file of {config.root} lists no videos")
        missing = [str(c.path) for c in self.clips if not c.path.is_file()]
        if missing:
            raise NADMError(f"{len(missing)} listed video(s) missing: {listing(missing)}")
        empty = [str(c.path) for c in self.clips if not c.caption]
        if empty and not config.allow_empty_captions:
            raise NADMError(
                f"{len(empty)} video(s) have an empty caption: {listing(empty)}; write them, "
                "or set allow_empty_captions"
            )
        # 2. every video long enough for `frames` frames at `stride` (header counts; `nadm data check` decodes)
        self.lengths = [probe_video(c.path).frames for c in self.clips]
        short = [f"{c.path} ({n} frames)" for c, n in zip(self.clips, self.lengths) if n < config.span]
        if short:
            raise NADMError(
                f"{len(short)} video(s) shorter than ({config.frames} - 1) frames x stride {config.stride} + 1 = "
                f"{config.span} frames: {listing(short)}; remove them or lower frames/stride"
            )

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch `epoch`'s clips (start frames and caption dropout) from now on."""
        self.epoch = int(epoch)

    def draw(self, index: int, epoch: int | None = None) -> tuple[np.ndarray, bool]:
        """(frame numbers start + k*stride, drop the caption?) for clip `index`, a pure function of
        (seed, epoch, index)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch, index])
        start = int(rng.integers(0, self.lengths[index] - self.config.span + 1))
        drop = bool(rng.random() < self.config.empty_caption_prob)
        return start + self.config.stride * np.arange(self.config.frames), drop

    def load_clip(self, index: int, frame_indices: np.ndarray) -> torch.Tensor:
        """Frames `frame_indices` of clip `index`, centre-cropped: float32 (frames, 3, R, R) in [-1, 1]."""
        frames = read_frames(self.clips[index].path, frame_indices)  # (f, H, W, 3) uint8
        frames = resize_center_crop(frames, self.config.resolution)  # (f, R, R, 3) uint8
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (f, 3, R, R)
        return pixels.float() / 127.5 - 1.0

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range 0..{len(self) - 1}")
        frame_indices, drop = self.draw(index)
        return {
            "pixel_values": self.load_clip(index, frame_indices),
            "caption": "" if drop else self.clips[index].caption,
            "path": str(self.clips[index].path),
            "frame_indices": torch.from_numpy(frame_indices),
        }


__all__ = [
    "CAPTION_FILES",
    "VIDEO_EXTENSIONS",
    "Clip",
    "DataConfig",
    "VideoClipDataset",
    "count_frames",
    "find_captions_file",
    "find_videos",
    "listing",
    "load_index",
    "read_captions",
    "read_frames",
    "resize_center_crop",
    "videos_dir",
    "write_captions",
]
