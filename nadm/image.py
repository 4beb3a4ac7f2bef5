"""Reading a still painting (and a still-region mask) and fitting it to the output size, for `nadm animate`.

Layouts: images `(H, W, 3) uint8` RGB; masks `(H, W) bool` (True = still); sizes are `(height, width)`.

Input: any still image Pillow decodes (JPEG with its EXIF orientation applied, PNG, WebP, TIFF, BMP), in any
of its colour modes: greyscale and CMYK become RGB, 16-bit images are reduced to 8 bits, and transparency is
composited on the painting's paper colour (the median colour of the picture's outer edge). Every problem (not
an image, damaged, an animation or multi-page file, smaller than MIN_SIDE) is an NADMError naming the file.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nadm.errors import NADMError

MIN_SIDE = 64  # pixels: smaller inputs are refused (nothing to animate)
LONG_SIDE = 512  # default output: the image's aspect ratio with this long side, both sides multiples of 8
FITS = ("crop", "pad", "stretch")
EDGE = 0.02  # the paper colour is read from this fraction of the shorter side around the picture's edge
MASK_ASPECT_TOLERANCE = 0.01  # a still mask may differ from the image's aspect ratio by 1% (rounding of sizes)
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # integer modes read as 16-bit samples


@dataclass(frozen=True)
class Picture:
    """One decoded still image: its pixels and where they came from (for the sidecar)."""

    pixels: np.ndarray  # (H, W, 3) uint8 RGB, transparency composited on `paper`
    paper: tuple[int, int, int]  # RGB paper colour read from the picture's edge
    source: str  # the path, or 'array' / 'PIL image' for in-memory input
    sha256: str  # of the file's bytes; of the pixels for in-memory input

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def _open(source, what: str):
    """A Pillow image from a path, a PIL image or an array `(H, W)`, `(H, W, 3)` or `(H, W, 4)` uint8; and its SHA-256."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        image, name, sha = source, "PIL image", hashlib.sha256(source.tobytes()).hexdigest()
    elif isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (3, 4)):
            raise NADMError(f"{what} array must be (H, W), (H, W, 3) or (H, W, 4) uint8, got {source.shape} {source.dtype}")
        array = np.ascontiguousarray(source)
        image, name, sha = Image.fromarray(array), "array", hashlib.sha256(array.tobytes()).hexdigest()
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise NADMError(f"{what} not found: {path}")
        name = str(path)
        try:
            data = path.read_bytes()
            image = Image.open(io.BytesIO(data))
            image.load()
        except UnidentifiedImageError:
            raise NADMError(f"cannot read {what} {path}: not an image, or damaged (no image format Pillow knows)") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise NADMError(f"cannot read {what} {path}: not an image, or damaged ({e})") from None
        sha = hashlib.sha256(data).hexdigest()
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise NADMError(f"{what} {name} has {frames} frames (an animation or multi-page file): give one still image")
    return image, name, sha


def _rgba(image, what: str, source: str) -> tuple[np.ndarray, np.ndarray | None]:
    """`(H, W, 3) uint8` colour and `(H, W) float32` alpha in [0, 1] (None when opaque), EXIF orientation applied."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT:  # 16-bit greyscale: Pillow's own conversion would clip at 255, so scale
        grey = np.asarray(image, dtype=np.float64) / 257.0
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), None
    if image.mode == "F":
        raise NADMError(f"{what} {source} has floating-point pixels: save it as an 8- or 16-bit image")
    alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    try:
        converted = np.asarray(image.convert("RGBA" if alpha else "RGB"))
    except (OSError, ValueError) as e:
        raise NADMError(f"cannot convert {what} {source} (mode {image.mode}) to RGB: {e}") from None
    if not alpha:
        return converted, None
    return np.ascontiguousarray(converted[:, :, :3]), converted[:, :, 3].astype(np.float32) / 255.0


def paper_colour(pixels: np.ndarray, alpha: np.ndarray | None = None) -> tuple[int, int, int]:
    """The median colour of the picture's outer edge (a ring EDGE of the shorter side wide) among its opaque pixels."""
    import cv2

    opaque = np.ones(pixels.shape[:2], bool) if alpha is None else alpha >= 0.5
    if not opaque.any():
        raise NADMError("the image is fully transparent")
    width = max(1, round(EDGE * min(pixels.shape[:2])))
    # the edge of the opaque region: opaque pixels within `width` of a transparent one or of the picture's border
    padded = np.pad(opaque, width, constant_values=False).astype(np.uint8)
    inner = cv2.erode(padded, np.ones((2 * width + 1, 2 * width + 1), np.uint8))[width:-width, width:-width]
    edge = opaque & ~inner.astype(bool)
    return tuple(int(v) for v in np.median(pixels[edge], axis=0).round())


def read_picture(source, what: str = "image") -> Picture:
    """Decode a still image (path, PIL image or uint8 array) to RGB on its paper colour; refuse what is not usable."""
    image, name, sha = _open(source, what)
    pixels, alpha = _rgba(image, what, name)
    h, w = pixels.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise NADMError(f"{what} {name} is {w}x{h}: both sides must be at least {MIN_SIDE} pixels")
    if alpha is not None and (alpha < 0.5).all():
        raise NADMError(f"{what} {name} is fully transparent")
    paper = paper_colour(pixels, alpha)
    if alpha is not None:  # composite on the paper: a cut-out scroll sits on its own paper, not on black
        a = alpha[:, :, None]
        pixels = np.clip(np.rint(pixels * a + np.array(paper, np.float32) * (1 - a)), 0, 255).astype(np.uint8)
    return Picture(pixels, paper, name, sha)


def read_mask(source, like: Picture) -> tuple[np.ndarray, dict[str, Any]]:
    """A still mask `(H, W) bool` (white = still, threshold at mid-grey; transparent = moving) of the image's aspect
    ratio, and what the sidecar records of it."""
    image, name, sha = _open(source, "still mask")
    pixels, alpha = _rgba(image, "still mask", name)
    grey = pixels.astype(np.float32).mean(axis=2) * (1.0 if alpha is None else alpha)
    h, w = grey.shape
    ih, iw = like.size
    if abs((w / h) / (iw / ih) - 1) > MASK_ASPECT_TOLERANCE:
        raise NADMError(
            f"the still mask {name} is {w}x{h} (aspect {w / h:.3f}) but the image is {iw}x{ih} (aspect {iw / ih:.3f}): "
            "draw the mask at the image's proportions"
        )
    return grey >= 127.5, {"source": name, "sha256": sha, "width": w, "height": h}


def _multiple_of_8(x: float) -> int:
    return max(8, int(math.floor(x / 8 + 0.5)) * 8)


def output_size(image_size: tuple[int, int], height: int | None = None, width: int | None = None,
                long_side: int = LONG_SIDE) -> tuple[int, int]:  # fmt: skip
    """(height, width): as given; one side given, the other from the image's aspect ratio; neither, the long side
    `long_side`; derived sides rounded to multiples of 8."""
    ih, iw = image_size
    if height is not None and width is not None:
        return height, width
    if height is not None:
        return height, _multiple_of_8(height * iw / ih)
    if width is not None:
        return _multiple_of_8(width * ih / iw), width
    scale = long_side / max(ih, iw)
    return _multiple_of_8(ih * scale), _multiple_of_8(iw * scale)


@dataclass(frozen=True)
class Placement:
    """Where the fitted picture lies in the output: it is scaled to `scaled` (h, w) and its top-left corner put at
    `offset` (y, x) (negative: cropped)."""

    scaled: tuple[int, int]
    offset: tuple[int, int]


def placement(image_size: tuple[int, int], size: tuple[int, int], fit: str) -> Placement:
    """crop: scale to cover the output, centre crop; pad: scale to fit inside, centre; stretch: scale each axis."""
    if fit not in FITS:
        raise NADMError(f"unknown fit {fit!r}: use one of {', '.join(FITS)}")
    (ih, iw), (h, w) = image_size, size
    if fit == "stretch":
        return Placement((h, w), (0, 0))
    scale = (max if fit == "crop" else min)(h / ih, w / iw)
    sh, sw = (max(1, round(ih * scale)), max(1, round(iw * scale)))
    if fit == "crop":  # rounding must not leave a gap
        sh, sw = max(sh, h), max(sw, w)
    else:
        sh, sw = min(sh, h), min(sw, w)
    return Placement((sh, sw), ((h - sh) // 2, (w - sw) // 2))


def fit_pixels(pixels: np.ndarray, size: tuple[int, int], where: Placement, fill, resample: str = "lanczos") -> np.ndarray:
    """`(H, W[, 3]) uint8` -> the output size: scaled (Lanczos, or nearest for masks), cropped or padded with `fill`."""
    from PIL import Image

    method = Image.Resampling.LANCZOS if resample == "lanczos" else Image.Resampling.NEAREST
    scaled = np.asarray(Image.fromarray(pixels).resize(where.scaled[::-1], method))
    h, w = size
    out = np.empty((h, w, *pixels.shape[2:]), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    (sh, sw), (oy, ox) = where.scaled, where.offset
    ys, xs = max(0, oy), max(0, ox)  # output window
    cy, cx = ys - oy, xs - ox  # matching window in the scaled picture
    ch, cw = min(h - ys, sh - cy), min(w - xs, sw - cx)
    out[ys : ys + ch, xs : xs + cw] = scaled[cy : cy + ch, cx : cx + cw]
    return out


def fitted(picture: Picture, size: tuple[int, int], fit: str, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The painting at the output size `(H, W, 3) uint8`, and the still region `(H, W) bool`: the mask's white parts,
    plus the paper added by `--fit pad` (it stays paper)."""
    pixels = fit_pixels(picture.pixels, size, placement(picture.size, size, fit), picture.paper)
    mask = np.zeros(picture.size, bool) if mask is None else mask
    # the mask's own size has the image's proportions: the same placement rule puts it on the same output region
    still = fit_pixels(mask.astype(np.uint8) * 255, size, placement(mask.shape, size, fit), 255, resample="nearest")
    return pixels, still >= 128


def describe(picture: Picture | None) -> dict[str, Any] | None:
    """What the sidecar records of an input picture."""
    if picture is None:
        return None
    h, w = picture.size
    return {"source": picture.source, "sha256": picture.sha256, "width": w, "height": h}
