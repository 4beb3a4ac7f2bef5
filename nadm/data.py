"""LPV-HD-style video datasets (Sec. III-B) and the training clips drawn from them (Sec. IV-A1).

Layout (docs/dataset.md has the full spec; curation -- scene cuts, checks -- is in `nadm.curate`)::

    ROOT/videos/...            video files, any nesting
    ROOT/captions.csv          header `video,caption` (video relative to ROOT/videos), or
    ROOT/captions.jsonl        one {"video": ..., "caption": ...} object per line, or
    ROOT/captions.csv          WebVid's header `videoid,name,page_dir` -> ROOT/videos/<page_dir>/<videoid>.mp4

Frame numbering everywhere in this module: frame i is the frame shown at time i / fps from the stream's start
(its timestamp, rounded), so seeking, scene cuts and the sampler agree; for constant-rate video it is simply
the i-th decoded frame. Frames as arrays are `(N, H, W, 3) uint8` RGB; training clips are
`(frames, 3, R, R)` float tensors in [-1, 1].
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Iterator, NamedTuple, Sequence

import av
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from nadm.errors import NADMError
from nadm.io import staged_folder, write_text_atomic

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
CAPTION_FILES = ("captions.csv", "captions.jsonl")
CACHE_FORMAT = 1
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError)


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


# ------------------------------------------------------------------------------------------ probing, decoding


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


def _rate(stream) -> Fraction:
    """The stream's frame rate (average, else guessed); NADMError when it has none."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate or rate <= 0:
        raise NADMError("no frame rate in the stream")
    return Fraction(rate)


def _open_video(path: Path):
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
        container, stream = _open_video(path)
        with container:
            rate = _rate(stream)
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
    except _DECODE_ERRORS as e:
        raise NADMError(f"{path}: cannot read the video ({e})") from e


def _indexed_frames(container, stream) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decoded frames with their frame numbers (timestamp * fps, rounded; decode order when there is none)."""
    rate = _rate(stream)
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
        container, stream = _open_video(path)
        with container:
            for _ in container.decode(stream):
                count += 1
    except NADMError:
        raise
    except _DECODE_ERRORS as e:
        raise NADMError(f"{path}: decoding failed after {count} frames ({e})") from e
    return count


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> np.ndarray:
    """Only the frames `indices` of a video as `(len(indices), H, W, 3) uint8` RGB, seeking to the nearest
    keyframe instead of decoding from the start (Sec. IV-A1's strided sampling)."""
    path = Path(path)
    wanted = sorted({int(i) for i in indices})
    if not wanted or wanted[0] < 0:
        raise ValueError(f"indices must be a non-empty list of frame numbers >= 0, got {list(indices)}")
    try:
        picked = _decode_picked(path, wanted, seek=True)
        if picked is None:  # the demuxer seeked past the first wanted frame: decode from the start instead
            picked = _decode_picked(path, wanted, seek=False)
    except _DECODE_ERRORS as e:
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
    container, stream = _open_video(path)
    with container:
        # 1. jump to the keyframe at or before the first wanted frame (decoding always restarts at a keyframe)
        if seek and wanted[0] > 0:
            target = (stream.start_time or 0) + math.floor(Fraction(wanted[0]) / _rate(stream) / stream.time_base)
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

        for number, frame in _indexed_frames(container, stream):
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


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """`(N, H, W, 3)` -> `(N, size, size, 3)` uint8: the centre square, scaled so the short side is `size`
    (Sec. IV-A1's "resized and center-cropped")."""
    import cv2

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


# ------------------------------------------------------------------------------------------ training data


@dataclass(frozen=True)
class DataConfig:
    """Training clips (Sec. IV-A1): `frames` frames `stride` apart from a random start, centre-cropped to
    `resolution`; captions dropped (set to "") with `empty_caption_prob` for classifier-free guidance."""

    root: str
    frames: int = 8
    stride: int = 4
    resolution: int = 256
    empty_caption_prob: float = 0.1
    seed: int = 0
    captions_file: str | None = None  # default: ROOT/captions.csv or ROOT/captions.jsonl
    allow_empty_captions: bool = False  # train on clips whose caption is "" (else refused)

    def __post_init__(self):
        object.__setattr__(self, "root", os.fspath(self.root))
        if self.captions_file is not None:
            object.__setattr__(self, "captions_file", os.fspath(self.captions_file))
        for name in ("frames", "stride"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.resolution, int) or self.resolution < 8 or self.resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8 (the VAE's factor), got {self.resolution!r}")
        if not 0.0 <= self.empty_caption_prob <= 1.0:
            raise ValueError(f"empty_caption_prob must be in [0, 1], got {self.empty_caption_prob!r}")

    @property
    def min_frames(self) -> int:
        """The shortest usable clip: frames * stride source frames (the paper's 8 x 4 = 32)."""
        return self.frames * self.stride

    def to_dict(self) -> dict:
        return asdict(self)


def _listing(items: Sequence[str], limit: int = 5) -> str:
    """'a, b, c and 7 more'."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class VideoClipDataset(Dataset):
    """Training clips of an LPV-HD-style dataset (Sec. III-B, IV-A1), deterministic given (seed, epoch, index).

    Item: {"pixel_values": float32 (frames, 3, R, R) in [-1, 1], "caption": str ("" for the CFG-dropped ones),
    "path": str, "frame_indices": int64 (frames,) = start + k * stride}. Batched by the default collate:
    pixel_values (batch, frames, 3, R, R). Call `set_epoch` each epoch (as with DistributedSampler) so
    epochs draw different clips; with persistent DataLoader workers the workers keep the old epoch.
    """

    def __init__(self, config: DataConfig):
        self.config = config
        self.epoch = 0
        # 1. the index, and every file in it present and captioned
        self.clips = load_index(config.root, config.captions_file)
        if not self.clips:
            raise NADMError(f"the captions file of {config.root} lists no videos")
        missing = [str(c.path) for c in self.clips if not c.path.is_file()]
        if missing:
            raise NADMError(f"{len(missing)} listed video(s) missing: {_listing(missing)}")
        empty = [str(c.path) for c in self.clips if not c.caption]
        if empty and not config.allow_empty_captions:
            raise NADMError(
                f"{len(empty)} video(s) have an empty caption: {_listing(empty)}; write them, "
                "or set allow_empty_captions"
            )
        # 2. every video long enough for `frames` frames at `stride` (header counts; `nadm data check` decodes)
        self.lengths = [probe_video(c.path).frames for c in self.clips]
        short = [f"{c.path} ({n} frames)" for c, n in zip(self.clips, self.lengths) if n < config.min_frames]
        if short:
            raise NADMError(
                f"{len(short)} video(s) shorter than {config.frames} frames x stride {config.stride} = "
                f"{config.min_frames} frames: {_listing(short)}; remove them or lower frames/stride"
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
        rng = np.random.default_rng([self.config.seed, epoch, index])
        span = (self.config.frames - 1) * self.config.stride + 1
        start = int(rng.integers(0, self.lengths[index] - span + 1))
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


# ------------------------------------------------------------------------------------------ latent cache


@torch.no_grad()
def encode_text(texts: Sequence[str], tokenizer, text_encoder) -> torch.Tensor:
    """CLIP conditioning as Stable Diffusion uses it: last hidden state, (len(texts), max_length, dim)."""
    ids = tokenizer(
        list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


@torch.no_grad()
def encode_frames(pixel_values: torch.Tensor, vae, batch: int = 8) -> torch.Tensor:
    """(frames, 3, R, R) in [-1, 1] -> VAE posterior means times `scaling_factor`, (frames, C, R/s, R/s)."""
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise ValueError(f"pixel_values must be (frames, 3, R, R), got {tuple(pixel_values.shape)}")
    pixels = pixel_values.to(vae.device, vae.dtype)
    latents = [vae.encode(pixels[i : i + batch]).latent_dist.mode() for i in range(0, len(pixels), batch)]
    return torch.cat(latents) * vae.config.scaling_factor


def cache_latents(
    data: VideoClipDataset | DataConfig,
    vae,
    text_encoder,
    tokenizer,
    out_dir: str | os.PathLike,
    *,
    clips_per_video: int = 1,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Encode K clips per video once with the frozen VAE and text encoder (Sec. III-D3 trains neither).

    Writes OUT/empty_caption.safetensors ("encoder_hidden_states" of ""), OUT/clips/<i>_<k>.safetensors
    ("latents" (frames, C, R/s, R/s) scaled by vae.config.scaling_factor, "encoder_hidden_states" (L, D)) and
    OUT/cache.json. Clip k of video i is the clip epoch k of `VideoClipDataset` draws for it, so the cache
    holds only K of the clips live decoding would sample. Latents are the VAE posterior means.
    """
    from safetensors.torch import save_file

    dataset = data if isinstance(data, VideoClipDataset) else VideoClipDataset(data)
    if clips_per_video < 1:
        raise NADMError(f"clips_per_video must be >= 1, got {clips_per_video}")
    out = Path(out_dir).expanduser()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise NADMError(f"{out} already exists: pass overwrite=True to replace it")
    with staged_folder(out, overwrite=True) as staging:
        # 1. the empty-caption embedding, swapped in for CFG dropout at training time
        empty = encode_text([""], tokenizer, text_encoder)[0].to(dtype).contiguous().cpu()  # (L, D)
        save_file({"encoder_hidden_states": empty}, str(staging / "empty_caption.safetensors"))
        (staging / "clips").mkdir()
        entries = []
        latent_shape = None
        # 2. per video: its caption once, then K clips through the VAE
        for i in tqdm(range(len(dataset)), desc="cache latents", unit="video", disable=not progress):
            clip = dataset.clips[i]
            text = encode_text([clip.caption], tokenizer, text_encoder)[0].to(dtype).contiguous().cpu()
            for k in range(clips_per_video):
                frame_indices, _ = dataset.draw(i, epoch=k)
                latents = encode_frames(dataset.load_clip(i, frame_indices), vae).to(dtype).contiguous().cpu()
                latent_shape = latent_shape or list(latents.shape)
                name = f"clips/{i:06d}_{k:03d}.safetensors"
                save_file({"latents": latents, "encoder_hidden_states": text}, str(staging / name))
                entries.append(
                    {
                        "file": name,
                        "path": str(clip.path),
                        "caption": clip.caption,
                        "frame_indices": frame_indices.tolist(),
                    }
                )
        # 3. the manifest, then the whole folder into place
        manifest = {
            "format": CACHE_FORMAT,
            "data": dataset.config.to_dict(),
            "clips_per_video": clips_per_video,
            "scaling_factor": float(vae.config.scaling_factor),
            "latent_shape": latent_shape,
            "text_shape": list(empty.shape),
            "dtype": str(dtype).replace("torch.", ""),
            "clips": entries,
        }
        (staging / "cache.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


class CachedLatentDataset(Dataset):
    """Clips from a `cache_latents` folder, deterministic given (seed, epoch, index) like `VideoClipDataset`.

    Item: {"latents": (frames, C, R/s, R/s) already times scaling_factor, "encoder_hidden_states": (L, D), the
    empty caption's with probability `empty_caption_prob` (CFG dropout), "caption": str ("" when dropped),
    "path": str}.
    """

    def __init__(self, cache_dir: str | os.PathLike, empty_caption_prob: float = 0.1, seed: int = 0):
        from safetensors.torch import load_file

        if not 0.0 <= empty_caption_prob <= 1.0:
            raise ValueError(f"empty_caption_prob must be in [0, 1], got {empty_caption_prob!r}")
        self.dir = Path(cache_dir).expanduser()
        try:
            self.manifest = json.loads((self.dir / "cache.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise NADMError(f"{self.dir} is not a latent cache (cache.json: {e})") from e
        if self.manifest.get("format") != CACHE_FORMAT:
            raise NADMError(f"{self.dir}: cache format {self.manifest.get('format')!r}, expected {CACHE_FORMAT}")
        self.entries = self.manifest["clips"]
        missing = [e["file"] for e in self.entries if not (self.dir / e["file"]).is_file()]
        if missing:
            raise NADMError(f"{self.dir}: {len(missing)} cached clip file(s) missing: {_listing(missing)}")
        self.empty = load_file(str(self.dir / "empty_caption.safetensors"))["encoder_hidden_states"]
        self.empty_caption_prob, self.seed, self.epoch = empty_caption_prob, seed, 0

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch `epoch`'s caption dropout from now on."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        from safetensors.torch import load_file

        if not 0 <= index < len(self):
            raise IndexError(f"cached clip index {index} out of range 0..{len(self) - 1}")
        entry = self.entries[index]
        tensors = load_file(str(self.dir / entry["file"]))
        latents, text = tensors["latents"], tensors["encoder_hidden_states"]
        if list(latents.shape) != self.manifest["latent_shape"] or text.shape != self.empty.shape:
            raise NADMError(f"{self.dir / entry['file']}: shapes {tuple(latents.shape)}, {tuple(text.shape)} differ "
                            f"from the manifest's {self.manifest['latent_shape']}, {list(self.empty.shape)}")
        drop = bool(np.random.default_rng([self.seed, self.epoch, index]).random() < self.empty_caption_prob)
        return {
            "latents": latents,
            "encoder_hidden_states": self.empty.clone() if drop else text,
            "caption": "" if drop else entry["caption"],
            "path": entry["path"],
        }


__all__ = [
    "CAPTION_FILES",
    "VIDEO_EXTENSIONS",
    "CachedLatentDataset",
    "Clip",
    "DataConfig",
    "VideoClipDataset",
    "VideoInfo",
    "cache_latents",
    "count_frames",
    "encode_frames",
    "encode_text",
    "find_captions_file",
    "find_videos",
    "load_index",
    "probe_video",
    "read_captions",
    "read_frames",
    "resize_center_crop",
    "write_captions",
]
