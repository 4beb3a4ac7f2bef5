"""Putting outputs in place without losing anything the user had (the rules of docs/reliability.md).

Every write goes to a temporary name in the target directory (`.NAME.tmp-PID-XXXXXXXX`, nadm's one naming) and
is renamed into place by `safe_replace`, the one routine every command uses to put an output in place: a crash
never leaves a half-written output; an existing output is replaced only with `overwrite=True` and only when nadm
wrote all of it (`foreign_file`: a video or report with a nadm sidecar, a PNG frame folder, a dataset, latent
cache, checkpoint or run folder nadm made); temporaries are removed when the run fails or is interrupted
(`nadm.signals`), and ones left by a killed run are removed by the next run that writes to the same place
(`clean_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from nadm import __version__, signals
from nadm.errors import NADMError, note


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar beside an output: `clip.mp4` -> `clip.mp4.json`, folder `frames` -> `frames.json`."""
    return Path(str(Path(path)) + ".json")


def remove_path(path: Path) -> None:
    """Delete a file, link or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


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
        remove_path(entry)
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
        remove_path(aside)


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
            remove_path(tmp)
    return path


def check_output_file(path: str | os.PathLike | None, overwrite: bool, option: str = "--json") -> Path | None:
    """Check a report file (JSON, CSV, figure) before any work: not a folder, replaceable (`check_replaceable`, its
    sidecar too for non-JSON files), its folder writable and made; stale temporaries of it cleaned. None passes."""
    if not path:
        return None
    out = Path(path).expanduser()
    if out.is_dir():
        raise NADMError(f"{out} is a folder; give a file name for {option}")
    return prepare_output(out, overwrite, sidecar=out.suffix != ".json")


def prepare_output(out: Path, overwrite: bool, sidecar: bool = True) -> Path:
    """Room for the output `out` (and its sidecar): each replaceable (`check_replaceable`: with `overwrite`, only what
    nadm wrote), the folder writable and made, stale temporaries of each removed; returns `out`."""
    targets = (out, sidecar_path(out)) if sidecar else (out,)
    for target in targets:
        check_replaceable(target, overwrite)
    check_writable(out.parent)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NADMError(f"cannot create the output folder {out.parent}: {e.strerror or e}") from e
    for target in targets:
        clean_stale_temporaries(target)
    return out


def mark_output(path: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """Write the sidecar `<path>.json` that says nadm wrote a non-video output (a CSV, a figure) and from what, so a
    later `--overwrite` may replace it (`foreign_file`)."""
    record = {"nadm_version": __version__, "file": Path(path).name, **settings}
    return write_text_atomic(sidecar_path(path), json.dumps(record, indent=2, default=json_default) + "\n")


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
            remove_path(staging)


def json_default(value: Any) -> Any:
    """JSON for numpy scalars/arrays and paths found in metadata."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


__all__ = [
    "NADM_FORMATS",
    "RUN_FOLDER_NAMES",
    "check_output_file",
    "check_replaceable",
    "check_writable",
    "clean_stale_temporaries",
    "foreign_file",
    "json_default",
    "mark_output",
    "prepare_output",
    "remove_path",
    "safe_replace",
    "sidecar_path",
    "staged_folder",
    "temp_path",
    "write_text_atomic",
]
