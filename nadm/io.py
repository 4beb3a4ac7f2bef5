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

Every write goes to a temporary name in the target directory (`.NAME.tmp-PID-XXXXXXXX`, nadm's one naming) and
is renamed into place by `safe_replace`, the one routine every command uses to put an output in place: a crash
never leaves a half-written output; an existing output is replaced only with `overwrite=True` and only when nadm
wrote all of it (`foreign_file`); temporaries are removed when the run fails or is interrupted, and ones left by a
killed run are removed by the next run that writes to the same place. Beside the output,
`<output>.json` (e.g. `clip.mp4.json`, `frames.json` for folder `frames`) holds the caller's metadata plus
fps, frame count, size, format, the nadm version and the library versions.
"""

# PyAV, Pillow, OpenCV and nadm.decode are imported inside the readers and writers that use them (CLI start-up time).

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import uuid
from fractions import Fraction
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from nadm import __version__, signals
from nadm.errors import NADMError, note

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


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar beside an output: `clip.mp4` -> `clip.mp4.json`, folder `frames` -> `frames.json`."""
    return Path(str(Path(path)) + ".json")


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
    """Validate an output path before any expensive work (format, kind, `check_replaceable` for it and its sidecar,
    writability); remove temporaries a killed run left for it; create its parent folder; return it as a Path."""
    out = Path(path).expanduser()
    _format_of(out)
    if out.exists() and out.is_dir() != (out.suffix == ""):
        kind = "folder" if out.is_dir() else "file"
        raise NADMError(f"{out} exists and is a {kind}; choose another output path")
    for target in (out, sidecar_path(out)):
        check_replaceable(target, overwrite)
    check_writable(out.parent)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NADMError(f"cannot create the output folder {out.parent}: {e.strerror or e}") from e
    for target in (out, sidecar_path(out)):
        clean_stale_temporaries(target)
    return out


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


def _remove(path: Path) -> None:
    """Delete a file, link or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


# ------------------------------------------------------------------------------------ safe replacement

_FRAME = re.compile(r"\d{5}\.png")  # the files of a PNG frame folder nadm writes
_TEMP = re.compile(r"(\d+)-[0-9a-f]{8}")  # after `.NAME.tmp-`: the writing process and a random token
NADM_FORMATS = ("nadm", "nadm-dataset")  # "format" of nadm's checkpoint config and dataset manifest
RUN_FOLDER_NAMES = {"train_config.yaml", "metrics.jsonl", "summary.json", "logs", "checkpoints", "validation"}
_CHECKPOINT_NAME = re.compile(r"\.?checkpoint-\d+(\.partial)?")
_JSON_LIMIT = 64 << 20  # a sidecar, report or manifest is never larger


def temp_path(final: Path, suffix: str = "") -> Path:
    """A hidden temporary name beside `final` in nadm's one naming: `.NAME.tmp-PID-XXXXXXXX[SUFFIX]`."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:
        return False
    return True


def clean_stale_temporaries(final: Path) -> list[Path]:
    """Remove the temporaries of `final` (nadm's naming) whose process is gone (a killed run), saying so on stderr;
    ones of a process still running are reported and kept. Returns the removed paths."""
    prefix = f".{final.name}.tmp-"
    try:
        names = [name for name in os.listdir(final.parent) if name.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for name in sorted(names):
        match = _TEMP.match(name[len(prefix):])
        if not match:
            continue  # not nadm's naming: not ours to touch
        pid, entry = int(match.group(1)), final.parent / name
        if pid == os.getpid():
            continue
        if _alive(pid):
            note(f"{entry} belongs to a running process ({pid}) that writes {final.name} too; left alone")
            continue
        _remove(entry)
        removed.append(entry)
    if removed:
        note(f"removed {len(removed)} temporary file(s) an interrupted run left beside {final}: {removed[0].name}")
    return removed


def _nadm_json(path: Path) -> dict | None:
    """The JSON object in `path` when it bears nadm's marks (a sidecar, a report, a checkpoint config or a dataset
    manifest), else None."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > _JSON_LIMIT:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    versions = data.get("versions")
    if "nadm_version" in data or (isinstance(versions, dict) and "nadm" in versions) or data.get("format") in NADM_FORMATS:
        return data
    return None


def _first_unlisted(root: Path, listed: set[str]) -> Path | None:
    """The first file or link under `root` (sorted walk) whose path relative to root is not in `listed`."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        here = Path(folder)
        for name in sorted(files) + sorted(d for d in dirs if (here / d).is_symlink()):
            if (here / name).relative_to(root).as_posix() not in listed:
                return here / name
    return None


def _manifest_files(root: Path, manifest: str, key: str, field: str, under: str, fixed: set[str]) -> Path | None:
    """Foreign file of a folder described by a JSON manifest listing its files (`manifest[key][i][field]`)."""
    try:
        data = json.loads((root / manifest).read_text(encoding="utf-8"))
        listed = {f"{under}{entry[field]}" for entry in data[key]}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return root / manifest  # not a manifest nadm wrote
    return _first_unlisted(root, listed | fixed | {manifest})


def _dataset_foreign(root: Path) -> Path | None:
    """A dataset `nadm data prepare` made: prepare.json (its manifest), captions.csv and the clips it lists."""
    return _manifest_files(root, "prepare.json", "clips", "clip", "videos/", {"captions.csv"})


def _latent_cache_foreign(root: Path) -> Path | None:
    """A latent cache `nadm data cache` made: cache.json (its manifest), the empty-caption file and the clips listed."""
    return _manifest_files(root, "cache.json", "clips", "file", "", {"empty_caption.safetensors"})


def _checkpoint_foreign(root: Path) -> Path | None:
    """An NADM checkpoint: config.json (format nadm) and its weights files."""
    if _nadm_json(root / "config.json") is None:
        return root / "config.json"
    return _first_unlisted(root, {"config.json", "motion_modules.safetensors", "noise_adapter.safetensors"})


def _run_folder_foreign(root: Path) -> Path | None:
    """A training run folder (train_config.yaml, logs, checkpoints/checkpoint-N, ...) or one training checkpoint
    in it (train_config.yaml beside an nadm/ export; the rest is accelerate's state)."""
    if _nadm_json(root / "nadm" / "config.json") is not None:
        return None
    for entry in sorted(root.iterdir()):
        if entry.name not in RUN_FOLDER_NAMES or entry.is_symlink():
            return entry
    if (root / "checkpoints").is_dir():
        return next((e for e in sorted((root / "checkpoints").iterdir()) if not _CHECKPOINT_NAME.fullmatch(e.name)), None)
    return None


# a folder nadm made, by the file that marks it -> its first foreign file (None: all of it is nadm's)
_FOLDER_LAYOUTS = {
    "prepare.json": _dataset_foreign,
    "cache.json": _latent_cache_foreign,
    "config.json": _checkpoint_foreign,
    "train_config.yaml": _run_folder_foreign,
}


def foreign_file(path: str | os.PathLike) -> Path | None:
    """The first file at `path` that nadm did not write (`path` itself for a file), or None when everything there is
    nadm's own: a video or sidecar/report JSON with nadm's marks, a PNG frame folder (nadm sidecar, only numbered
    frames), a dataset, latent cache, checkpoint or run folder nadm made (by its manifest), or an empty folder."""
    path = Path(path)
    if path.is_symlink():
        return path
    if not path.exists():
        return None
    if not path.is_dir():
        if path.suffix == ".json" and _nadm_json(path) is not None:
            return None
        return None if _nadm_json(sidecar_path(path)) is not None else path
    entries = sorted(path.iterdir())
    if not entries:
        return None
    if _nadm_json(sidecar_path(path)) is not None:  # a frame folder
        return next((e for e in entries if e.is_symlink() or not e.is_file() or not _FRAME.fullmatch(e.name)), None)
    for marker, foreign in _FOLDER_LAYOUTS.items():
        if (path / marker).is_file():
            return foreign(path)
    return _first_unlisted(path, set()) or entries[0]  # name a file where there is one


def check_replaceable(path: str | os.PathLike, overwrite: bool) -> None:
    """NADMError unless an output may be written at `path`: nothing is there, or `overwrite` is set and nadm wrote
    everything there (`foreign_file`); the message names one foreign file."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise NADMError(f"{path} already exists: pass --overwrite to replace it")
    foreign = foreign_file(path)
    if foreign is None:
        return
    if foreign != path:
        reason = f"it holds {foreign}, which nadm did not write"
    elif path.is_file() and path.suffix != ".json":
        reason = f"nadm did not write it (no nadm sidecar {sidecar_path(path).name})"
    else:
        reason = "nadm did not write it"
    raise NADMError(
        f"refusing to replace {path}: {reason} (--overwrite replaces only nadm's own outputs); "
        "move it away or choose another output"
    )


def check_writable(folder: str | os.PathLike) -> None:
    """NADMError unless new files can be made in `folder` (or, while it does not exist, in the nearest folder
    above it): a probe file in nadm's temporary naming, created and removed at once."""
    folder = Path(folder).expanduser().absolute()
    probe_dir = folder
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise NADMError(f"cannot create {folder}: {probe_dir} is a file")
    probe = temp_path(probe_dir / ".nadm-write-check")
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as e:
        where = folder if probe_dir == folder else f"{probe_dir} (to create {folder})"
        raise NADMError(f"cannot write to {where}: {e.strerror or e}") from None


def _public_modes(root: Path) -> None:
    """Files 0666 and folders 0777 less the umask, like any new file (some writers, e.g. safetensors, make 0600)."""
    umask = _umask()
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if not path.is_symlink():
            mode = (0o777 if path.is_dir() else 0o666) & ~umask
            if path.stat().st_mode & 0o777 != mode:
                path.chmod(mode)


def safe_replace(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename the finished temporary `tmp` to `final`: the one way nadm puts an output in place. An existing
    `final` is replaced only with `overwrite` and only when nadm wrote all of it (checked again now, after the
    work); the swap is not cut by Ctrl-C/SIGTERM (`signals.held`). File modes are made public first."""
    _public_modes(tmp)
    aside = None
    with signals.held():
        if final.exists() or final.is_symlink():
            check_replaceable(final, overwrite)
            if final.is_dir() and not final.is_symlink():
                # os.replace cannot replace a non-empty folder: move the old one aside, swap, then delete it
                aside = temp_path(final)
                os.replace(final, aside)
                try:
                    os.replace(tmp, final)
                except OSError:
                    os.replace(aside, final)
                    raise
        if aside is None:
            os.replace(tmp, final)
    if aside is not None:
        _remove(aside)


move_into_place = safe_replace  # the earlier name, still imported by nadm.runfolder


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool | None = None) -> Path:
    """Write a text file under a temporary name in its folder, then rename it into place (never half-written).

    overwrite None: nadm's own bookkeeping file (a config, captions) in a folder nadm writes, replaced as it is;
    True/False: a user-facing output, put in place by `safe_replace`."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as handle:
            handle.write(text)
        if overwrite is None:
            os.replace(tmp, path)
        else:
            safe_replace(tmp, path, overwrite)
    finally:
        with signals.held():
            _remove(tmp)
    return path


def check_output_file(path: str | os.PathLike | None, overwrite: bool, option: str = "--json") -> Path | None:
    """Check a report file (JSON, CSV, figure) before any work: not a folder, replaceable (`check_replaceable`, its
    sidecar too for non-JSON files), its folder writable and made; stale temporaries of it cleaned. None passes."""
    if not path:
        return None
    out = Path(path).expanduser()
    if out.is_dir():
        raise NADMError(f"{out} is a folder; give a file name for {option}")
    check_replaceable(out, overwrite)  # with --overwrite, only a file nadm wrote
    if out.suffix != ".json":
        check_replaceable(sidecar_path(out), overwrite)
    check_writable(out.parent)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NADMError(f"cannot create the folder {out.parent}: {e.strerror or e}") from e
    clean_stale_temporaries(out)
    return out


def mark_output(path: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """Write the sidecar `<path>.json` that says nadm wrote a non-video output (a CSV, a figure) and from what, so a
    later `--overwrite` may replace it (`foreign_file`)."""
    record = {"nadm_version": __version__, "file": Path(path).name, **settings}
    return write_text_atomic(sidecar_path(path), json.dumps(record, indent=2, default=_json_default) + "\n")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def staged_folder(final: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a new hidden folder beside `final` to fill; on success it is put in place by `safe_replace`, on any
    error or interruption it is deleted."""
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(final)
    staging = temp_path(final)
    staging.mkdir()
    try:
        yield staging
        safe_replace(staging, final, overwrite)
    finally:
        with signals.held():
            _remove(staging)


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
            text = json.dumps(info, indent=2, sort_keys=False, default=_json_default)
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
            _remove(tmp)
            _remove(tmp_sidecar)
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


def _json_default(value: Any) -> Any:
    """JSON for numpy scalars/arrays and paths found in metadata."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


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
    "check_replaceable",
    "check_writable",
    "clean_stale_temporaries",
    "foreign_file",
    "safe_replace",
    "staged_folder",
    "temp_path",
    "write_text_atomic",
    "environment_versions",
    "natural_key",
    "read_sidecar",
    "read_video",
    "sidecar_path",
    "write_video",
]
