"""What the studio lets in and out (DESIGN.md section 7): uploads are checked as a painting or a clip before any
use, and every path a request names is kept inside one folder.

Gradio itself limits upload sizes (`max_file_size`) and serves files only from `allowed_paths` (the outputs folder)
and its own upload cache (a private folder per server, `private_cache`); these checks come on top of that and need
no Gradio.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from nadm.errors import NADMError

MAX_SIDE = 8192  # pixels: a clip frame or painting with a longer side is refused before it is decoded whole
MAX_CLIP_FRAMES = 2000  # frames of an uploaded clip (the interpolation cap, nadm.commands.interpolate.MAX_FRAMES)
MAX_CLIP_BYTES = 2 << 30  # decoded bytes of an uploaded clip (frames x height x width x 3)
CLIP_SUFFIXES = (".mp4", ".gif", ".webp", ".mov", ".avi", ".mkv", ".webm")
PAINTING_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


class UploadRefused(NADMError):
    """An upload the studio will not use: too large, of a kind it does not take, or not what its name says."""


@contextmanager
def by_name(path: Path) -> Iterator[None]:
    """Messages about an upload name the file, not the server's upload folder (an NADMError re-raised with the path
    replaced by the file's name; Python's object reprs dropped)."""
    try:
        yield
    except NADMError as e:
        message = re.sub(r" ?<[^<>]* at 0x[0-9a-f]+>", "", str(e).replace(str(path), path.name))
        raise NADMError(message) from None


def contained(root: str | os.PathLike, name: str | os.PathLike) -> Path:
    """`root / name` with every symlink resolved, refused (UploadRefused) unless it lies inside `root`: `..`, an
    absolute path or a link out of the folder cannot reach anything else."""
    base = Path(root).resolve()
    target = (base / name).resolve()
    if target != base and base not in target.parents:
        raise UploadRefused(f"{name} is not in the outputs folder")
    return target


def check_outputs_folder(outputs: str | os.PathLike) -> Path:
    """The outputs folder, resolved; refused when it is the file system's root or the home folder (or above it): Gradio
    serves everything in it to anyone who can open the page."""
    folder = Path(outputs).expanduser().resolve()
    home = Path.home().resolve()
    if folder == Path(folder.anchor) or folder == home or folder in home.parents:
        raise UploadRefused(f"{folder} as the outputs folder would serve all of it to the page: give a folder of its own")
    return folder


def check_size(path: str | os.PathLike, max_bytes: int, what: str) -> Path:
    """The uploaded file `path`, refused when missing, not a plain file, or larger than `max_bytes`."""
    path = Path(path)
    if not path.is_file():
        raise UploadRefused(f"the uploaded {what} is missing: upload it again")
    size = path.stat().st_size
    if size > max_bytes:
        raise UploadRefused(f"the {what} is {size / 2**20:.1f} MB, more than the {max_bytes / 2**20:g} MB limit")
    return path


def _check_suffix(path: Path, allowed: tuple[str, ...], what: str) -> None:
    if path.suffix.lower() not in allowed:
        raise UploadRefused(f"{path.name} is not a {what} file nadm reads ({', '.join(allowed)})")


def read_painting(path: str | os.PathLike, max_bytes: int):
    """An uploaded painting, decoded and checked by `nadm.image.read_picture` (one still image, at least 64 px a side;
    NADMError naming what is wrong otherwise)."""
    from PIL import Image

    from nadm.image import read_picture

    path = check_size(path, max_bytes, "painting")
    _check_suffix(path, PAINTING_SUFFIXES, "painting")
    try:  # the header's size, before decoding: a tiny file can claim a huge canvas
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - read_picture below says what is wrong with the file, in its words
        width = height = 0
    if max(width, height) > MAX_SIDE:
        raise UploadRefused(f"{path.name} is {width}x{height}: the studio takes paintings up to {MAX_SIDE} px a side")
    with by_name(path):
        return read_picture(path, "painting")


def read_clip(path: str | os.PathLike, max_bytes: int) -> tuple[np.ndarray, float]:
    """An uploaded clip's frames `(N, H, W, 3) uint8` and fps, read by `nadm.io.read_video` after its header was checked
    against MAX_SIDE, MAX_CLIP_FRAMES and MAX_CLIP_BYTES (NADMError naming what is wrong)."""
    from nadm.io import read_video

    path = check_size(path, max_bytes, "clip")
    _check_suffix(path, CLIP_SUFFIXES, "video")
    frames, width, height = _clip_header(path)
    if max(width, height) > MAX_SIDE or frames > MAX_CLIP_FRAMES or frames * width * height * 3 > MAX_CLIP_BYTES:
        raise UploadRefused(
            f"{path.name} is {frames} frames of {width}x{height}: the studio takes clips up to {MAX_CLIP_FRAMES} frames, "
            f"{MAX_SIDE} px a side and {MAX_CLIP_BYTES >> 30} GiB decoded"
        )
    with by_name(path):
        return read_video(path)


def _clip_header(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) from the file's header without decoding its frames; NADMError if it is no video."""
    if path.suffix.lower() in (".gif", ".webp"):
        from PIL import Image

        try:
            with Image.open(path) as image:
                return getattr(image, "n_frames", 1), image.size[0], image.size[1]
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a file that is not an image
            raise NADMError(f"cannot decode {path.name}: not a {path.suffix[1:].upper()} animation, or damaged ({e})") from None
    from nadm.decode import probe_video

    with by_name(path):
        info = probe_video(path)
    return info.frames, info.width, info.height


def private_cache() -> Path:
    """A new folder only this user can read (0700), for Gradio's uploads and the copies of clips it serves."""
    return Path(tempfile.mkdtemp(prefix="nadm-studio-"))
