"""Reading and writing videos (mp4/gif/webp/PNG folders) with a JSON sidecar of settings and versions.

Layout everywhere in this module: frames are `(N, H, W, 3) uint8` RGB, N >= 1.

Output formats, chosen by the path's suffix (`VIDEO_SUFFIXES`), or no suffix for a folder of PNGs:

- `.mp4`: H.264 (libx264, yuv420p, CRF 18) through PyAV. yuv420p needs even sizes, so an odd width or
  height is padded by one replicated row/column; the sidecar records the true size and `read_video`
  crops the padding off again (other players show the extra edge row/column).
- `.gif` / `.webp`: looping animations through Pillow (GIF: adaptive 256-colour palette per frame, no dither,
  delays in 1/100 s; WebP: lossy, quality 90). Both encoders merge identical consecutive frames into one
  longer frame; `read_video` expands frames back by their durations, so the frame count survives.
- folder: `00000.png`, `00001.png`, ... (lossless).

`read_video` reads all of these, and any video file FFmpeg decodes (opened through `nadm.decode`), with frames
numbered in decode order; given frame numbers it reads only those frames, stopping early where it can.

Every write goes to a temporary name and is put in place by `nadm.outputs.safe_replace` (a crash never leaves a
half-written output; `--overwrite` replaces only what nadm wrote). Beside the output, `<output>.json` (e.g.
`clip.mp4.json`, `frames.json` for folder `frames`) holds the caller's metadata plus fps, frame count, size,
format, the nadm version and the library versions.
"""

# PyAV, Pillow, OpenCV and nadm.decode are imported inside the readers and writers that use them (CLI start-up time).

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from fractions import Fraction
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nadm import __version__, signals
from nadm.errors import NADMError, note
from nadm.outputs import json_default, prepare_output, remove_path, safe_replace, sidecar_path, temp_path

VIDEO_SUFFIXES = (".mp4", ".gif", ".webp")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FOLDER_FPS = 8.0  # fps of a frame folder that has no sidecar
MP4_CRF = 18  # visually lossless-ish H.264 quality
WEBP_QUALITY = 90
SIDECAR_KEYS = ("fps", "frames", "width", "height", "format", "nadm_version", "versions", "stored_size")

# distribution names per reported library (the first one installed wins)
_DISTRIBUTIONS = {
    "torch": ("torch",),
    "diffusers": ("diffusers",),
    "transformers": ("transformers",),
    "numpy": ("numpy",),
    "av": ("av",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless"),
    "pillow": ("pillow",),
    "scipy": ("scipy",),
}


def environment_versions() -> dict[str, str | None]:
    """Versions of Python, nadm and the libraries behind the results (None where one is not installed)."""
    import platform

    versions: dict[str, str | None] = {"python": platform.python_version(), "nadm": __version__}
    for name, dists in _DISTRIBUTIONS.items():
        versions[name] = None
        for dist in dists:
            try:
                versions[name] = importlib_metadata.version(dist)
                break
            except importlib_metadata.PackageNotFoundError:
                continue
    return versions


def _format_of(path: Path) -> str:
    """The output format from the suffix: 'mp4', 'gif', 'webp' or 'png-folder'; NADMError for anything else."""
    suffix = path.suffix.lower()
    if suffix == "":
        return "png-folder"
    if suffix not in VIDEO_SUFFIXES:
        allowed = ", ".join(VIDEO_SUFFIXES)
        raise NADMError(
            f"unsupported output extension '{path.suffix}' in {path}: use one of {allowed}, "
            "or no extension for a folder of PNG frames"
        )
    return suffix[1:]


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Validate a video output path before any expensive work: its format and kind here, then `prepare_output` (it and
    its sidecar replaceable, the folder writable and made, stale temporaries removed); return it as a Path."""
    out = Path(path).expanduser()
    _format_of(out)
    if out.exists() and out.is_dir() != (out.suffix == ""):
        kind = "folder" if out.is_dir() else "file"
        raise NADMError(f"{out} exists and is a {kind}; choose another output path")
    return prepare_output(out, overwrite)


def _check_frames(frames: np.ndarray) -> None:
    """Raise ValueError unless frames is a non-empty (N, H, W, 3) uint8 array."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise ValueError(f"frames must have shape (N, H, W, 3) with N, H, W >= 1, got {tuple(frames.shape)}")


def _check_fps(fps: float) -> float:
    """Raise ValueError unless fps is a positive finite number; return it as float."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a number, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"fps must be positive and finite, got {fps!r}")
    return value


# ----------------------------------------------------------------------------------------------- writing


def _write_mp4(frames: np.ndarray, target: Path, fps: float) -> list[int] | None:
    """H.264 yuv420p mp4 via PyAV; odd sizes padded to even by edge replication. Returns the stored [W, H]
    when padding was added."""
    import av

    n, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:  # (N, H, W, 3) -> (N, H + pad_h, W + pad_w, 3)
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with av.open(str(target), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(MP4_CRF), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return [w + pad_w, h + pad_h] if (pad_h or pad_w) else None


GIF_FRAME_DELAY_MS = 10  # GIF delays are whole 1/100 s: one hundredth is the shortest, 100 fps the highest rate
FPS_WARN_RATIO = 0.1  # a written rate this far (relative) from the asked one is said on stderr


def animation_fps(fps: float, fmt: str) -> float:
    """The rate a GIF/WebP really plays at for an asked `fps`: its constant frame delay is whole 1/100 s (GIF) or
    milliseconds (WebP), at least one unit."""
    unit = GIF_FRAME_DELAY_MS if fmt == "gif" else 1
    return 1000.0 / (max(1, round(1000.0 / fps / unit)) * unit)


def _write_animation(frames: np.ndarray, target: Path, fps: float, fmt: str) -> None:
    """Looping GIF or WebP via Pillow at the constant frame duration `animation_fps` gives."""
    from PIL import Image

    images = [Image.fromarray(frame, mode="RGB") for frame in frames]
    duration = round(1000.0 / animation_fps(fps, fmt))  # milliseconds
    if fmt == "gif":
        # quantise each frame to its own adaptive palette, no dither (no crawl)
        images = [im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) for im in images]
        extra: dict[str, Any] = {"optimize": False, "disposal": 1}
    else:
        extra = {"quality": WEBP_QUALITY, "method": 4, "lossless": False}
    images[0].save(
        str(target), format=fmt.upper(), save_all=True, append_images=images[1:], duration=duration, loop=0, **extra
    )


def _write_png_folder(frames: np.ndarray, target: Path) -> None:
    """Numbered PNGs 00000.png, 00001.png, ... in a new folder."""
    import cv2

    target.mkdir()
    for i, frame in enumerate(frames):
        if not cv2.imwrite(str(target / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise OSError(f"OpenCV could not write {target / f'{i:05d}.png'}")


def write_video(
    frames: np.ndarray,
    path: str | os.PathLike,
    fps: float,
    metadata: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `(N, H, W, 3) uint8` RGB frames to mp4/gif/webp or a PNG folder, atomically, plus `<path>.json`."""
    # 1. validate everything before touching the disk
    _check_frames(frames)
    fps = _check_fps(fps)
    metadata = dict(metadata or {})
    clash = sorted(set(metadata) & set(SIDECAR_KEYS))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved for the video writer")
    out = check_output_path(path, overwrite)
    fmt = _format_of(out)
    n, h, w, _ = frames.shape
    frames = np.ascontiguousarray(frames)

    # 2. encode under a hidden temporary name in the target folder (same file system -> atomic rename)
    tmp, tmp_sidecar = temp_path(out, out.suffix), temp_path(sidecar_path(out))
    try:
        stored_size, rates = None, {}
        if fmt == "mp4":
            stored_size = _write_mp4(frames, tmp, fps)
        elif fmt in ("gif", "webp"):
            rates = _animation_rates(fps, fmt, out)
            _write_animation(frames, tmp, fps, fmt)
        else:
            _write_png_folder(frames, tmp)

        # 3. the sidecar: caller's metadata + what was written (the rate the file really plays at) + versions
        info: dict[str, Any] = {
            **metadata,
            "fps": rates.get("fps", fps),
            **({"fps_requested": fps} if "fps" in rates else {}),
            "frames": int(n),
            "width": int(w),
            "height": int(h),
            "format": fmt,
            "nadm_version": __version__,
            "versions": environment_versions(),
        }
        if stored_size is not None:
            info["stored_size"] = stored_size
        try:
            text = json.dumps(info, indent=2, sort_keys=False, default=json_default)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata is not JSON-serialisable: {e}") from e
        tmp_sidecar.write_text(text + "\n", encoding="utf-8")

        # 4. rename both into place together (the video first: a sidecar never describes a missing video)
        with signals.held():
            safe_replace(tmp, out, overwrite)
            safe_replace(tmp_sidecar, sidecar_path(out), overwrite)
    except OSError as e:
        raise NADMError(f"could not write {out}: {e.strerror or e}") from e
    finally:
        with signals.held():
            remove_path(tmp)
            remove_path(tmp_sidecar)
    return out


def _animation_rates(fps: float, fmt: str, out: Path) -> dict[str, float]:
    """{"fps": the rate written} when a GIF/WebP's frame delays cannot hold `fps` exactly (empty when they can);
    a warning on stderr when it is far off (e.g. 1000 fps as a GIF plays at 100)."""
    written = animation_fps(fps, fmt)
    if abs(written - fps) <= 1e-9 * fps:
        return {}
    if abs(written - fps) > FPS_WARN_RATIO * fps:
        unit = "1/100 s" if fmt == "gif" else "milliseconds"
        note(
            f"warning: {fmt.upper()} frame delays are whole {unit}: {fps:g} fps is written as {written:g} fps in "
            f"{out.name} (its sidecar says so)" + ("; many browsers slow delays under 20 ms to 100 ms" if written > 50 and fmt == "gif" else "")
        )
    return {"fps": written}


# ----------------------------------------------------------------------------------------------- reading


class VideoTooShort(NADMError):
    """`read_video` was asked for a frame past the video's end; `length` is how many frames the video has."""

    def __init__(self, path: Path, length: int, needed: int) -> None:
        super().__init__(f"{path} has {length} frames, frame {needed - 1} was asked for")
        self.length = length


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The parsed `<path>.json` sidecar, or None when there is none (NADMError if it is not valid JSON)."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NADMError(f"cannot read the sidecar {side}: {e}") from e
    return data if isinstance(data, dict) else None


def natural_key(name: str) -> list:
    """Sort key that compares digit runs as numbers: frame2 < frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _check_length(path: Path, indices: list[int] | None, length: int) -> None:
    """VideoTooShort unless a video of `length` frames has every frame number in `indices` (None: all)."""
    if indices is not None and max(indices) >= length:
        raise VideoTooShort(path, length, max(indices) + 1)


def _read_folder(folder: Path, indices: list[int] | None) -> np.ndarray:
    """The images of a folder sorted by name (digit runs as numbers), all or only those at `indices`, as
    (N, H, W, 3) uint8."""
    from PIL import Image, UnidentifiedImageError

    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: natural_key(p.name),
    )
    if not files:
        raise NADMError(f"no image frames ({', '.join(IMAGE_SUFFIXES)}) in the folder {folder}")
    _check_length(folder, indices, len(files))
    if indices is not None:
        files = [files[i] for i in indices]
    frames = []
    for file in files:
        try:
            with Image.open(file) as im:
                frame = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise NADMError(f"cannot read the frame {file}: {e}") from e
        if frames and frame.shape != frames[0].shape:
            raise NADMError(
                f"frame {file.name} is {frame.shape[1]}x{frame.shape[0]} but {files[0].name} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}: all frames in {folder} must have one size"
            )
        frames.append(frame)
    return np.stack(frames)


def _read_animation(path: Path) -> tuple[np.ndarray, float]:
    """A GIF/WebP through Pillow, frames repeated by duration onto a constant rate, and that rate."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    frames, durations = [], []
    try:
        with Image.open(path) as im:
            for frame in ImageSequence.Iterator(im):
                frames.append(np.asarray(frame.convert("RGB")))
                durations.append(float(frame.info.get("duration") or 0.0))
    except (OSError, UnidentifiedImageError, ValueError, EOFError) as e:
        raise NADMError(f"cannot decode {path}: {e}") from e
    if not frames:
        raise NADMError(f"{path} contains no frames")
    positive = [d for d in durations if d > 0]
    if not positive:
        return np.stack(frames), 10.0  # no timing stored: browsers play such GIFs at about 10 fps
    base = min(positive)  # merged identical frames have multiples of the base duration: expand them again
    repeats = [max(1, round(d / base)) if d > 0 else 1 for d in durations]
    stacked = np.stack(frames)  # (N, H, W, 3)
    return np.repeat(stacked, repeats, axis=0), 1000.0 / base


def _read_av(path: Path, indices: list[int] | None) -> tuple[np.ndarray, float]:
    """Any video PyAV (FFmpeg) decodes: the frames of its first video stream in decode order, all or only those
    at `indices` (decoding stops after the last of them, only they are converted to RGB), and its fps (0 when
    the file states none)."""
    from nadm.decode import DECODE_ERRORS, frame_rate, open_video

    stop = None if indices is None else max(indices) + 1
    wanted = None if indices is None else set(indices)
    picked: dict[int, np.ndarray] = {}
    count, size, fps = 0, None, 0.0
    try:
        container, stream = open_video(path)
        with container:
            with contextlib.suppress(NADMError):  # no rate in the file: read_video falls back to another
                fps = float(frame_rate(stream))
            for frame in container.decode(stream):
                if size is not None and (frame.width, frame.height) != size:
                    raise NADMError(f"{path} changes frame size mid-stream; nadm needs one size")
                size = (frame.width, frame.height)
                if wanted is None or count in wanted:
                    picked[count] = frame.to_ndarray(format="rgb24")
                count += 1
                if count == stop:
                    break
    except DECODE_ERRORS as e:
        raise NADMError(f"cannot decode {path}: {e}") from e
    if not count:
        raise NADMError(f"{path} contains no decodable video frames")
    _check_length(path, indices, count)
    return np.stack([picked[i] for i in (range(count) if indices is None else indices)]), fps


def read_video(path: str | os.PathLike, indices: Sequence[int] | None = None) -> tuple[np.ndarray, float]:
    """Frames `(N, H, W, 3) uint8` RGB and fps from a video file, GIF/WebP, or a folder of image frames.

    fps comes from the `<path>.json` sidecar when there is one (nadm's own exact value), else from the file;
    a folder without a sidecar plays at DEFAULT_FOLDER_FPS. mp4 padding recorded in the sidecar is cropped.

    Frame i is the i-th frame in decode order (file order for a folder; for GIF/WebP after expanding merged
    frames by their durations). With `indices` (frame numbers >= 0) only those frames come back, in that
    order, the same bit for bit as `read_video(path)[0][indices]`: a video file is decoded no further than the
    last of them and a folder opens only their images (GIF/WebP are read whole: the durations of all frames
    set the numbering); `VideoTooShort` (an NADMError) when the video has no frame at one of them.
    """
    src = Path(path).expanduser()
    if not src.exists():
        raise NADMError(f"input {src} does not exist")
    if indices is not None:
        indices = [int(i) for i in indices]
        if not indices or min(indices) < 0:
            raise ValueError(f"indices must be a non-empty list of frame numbers >= 0, got {indices}")
    side = read_sidecar(src)
    # 1. decode by kind (only the frames at `indices`, where the format allows)
    if src.is_dir():
        frames, fps = _read_folder(src, indices), DEFAULT_FOLDER_FPS
    elif src.suffix.lower() in (".gif", ".webp"):
        frames, fps = _read_animation(src)
        _check_length(src, indices, len(frames))
        frames = frames if indices is None else frames[indices]
    else:
        frames, fps = _read_av(src, indices)
    # 2. undo the writer's mp4 padding (the sidecar says the true size and the stored one)
    if side and side.get("stored_size") and isinstance(side.get("width"), int) and isinstance(side.get("height"), int):
        if list(side["stored_size"]) == [frames.shape[2], frames.shape[1]]:
            frames = frames[:, : side["height"], : side["width"]]
    # 3. fps: sidecar first, then the file's own, never zero
    side_fps = side.get("fps") if side else None
    if isinstance(side_fps, (int, float)) and math.isfinite(side_fps) and side_fps > 0:
        fps = float(side_fps)
    if not (math.isfinite(fps) and fps > 0):
        fps = DEFAULT_FOLDER_FPS
    return np.ascontiguousarray(frames), fps


__all__ = [
    "VIDEO_SUFFIXES",
    "DEFAULT_FOLDER_FPS",
    "VideoTooShort",
    "animation_fps",
    "check_output_path",
    "environment_versions",
    "natural_key",
    "read_sidecar",
    "read_video",
    "write_video",
]
