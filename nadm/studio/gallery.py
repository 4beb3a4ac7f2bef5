"""The studio's outputs folder: collision-free names for new clips, every clip listed newest first with its sidecar,
and a sidecar turned back into the values of the tab that made it ("use these settings").

A clip is a video (`nadm.io.VIDEO_SUFFIXES`) or a PNG frame folder with nadm's sidecar `<clip>.json` beside it, made by
the studio or by `nadm generate` / `animate` / `interpolate` writing into the same folder. Needs no Gradio.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nadm.errors import NADMError
from nadm.io import VIDEO_SUFFIXES, read_sidecar
from nadm.outputs import sidecar_path

INPUTS = "inputs"  # sub-folder of the outputs holding the paintings and still masks clips were animated from
KINDS = ("generate", "animate", "interpolate")
TAB_OF = {"generate": "Text to video", "animate": "Animate a painting", "interpolate": "Interpolate"}
COLUMNS = ["made", "clip", "tab", "prompt", "seed", "frames", "size"]


# --------------------------------------------------------------------------------------------------- names


def new_clip_path(outputs: Path, kind: str, text: str = "", suffix: str = ".mp4") -> Path:
    """`outputs/YYYYmmdd-HHMMSS-KIND-SLUG-XXXXXX.mp4`: time-ordered, readable, and unique (a random token; a name
    taken by a clip or a sidecar is drawn again)."""
    from nadm.jobs import slug

    stamp = time.strftime("%Y%m%d-%H%M%S")
    words = slug(text, 32) if text.strip() else kind
    for _ in range(100):
        path = outputs / f"{stamp}-{kind}-{words}-{secrets.token_hex(3)}{suffix}"
        if not (path.exists() or path.is_symlink() or sidecar_path(path).exists()):
            return path
    raise NADMError(f"no free clip name in {outputs}")  # 100 draws of 24 random bits all taken: a broken folder


# ------------------------------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class Clip:
    """One clip of the outputs folder and what its sidecar says."""

    name: str  # relative to the outputs folder, '/'-separated
    path: Path
    kind: str  # one of KINDS, or 'other'
    modified: float  # seconds since the epoch
    settings: dict[str, Any]  # the sidecar

    @property
    def playable(self) -> bool:
        """Whether a browser's <video> element plays it (the H.264 mp4 nadm writes)."""
        return self.path.suffix.lower() == ".mp4"


def kind_of(settings: dict[str, Any]) -> str:
    """Which tab made a clip, from its sidecar: an `animate` block, an `interpolation.command`, or a prompt."""
    if isinstance(settings.get("animate"), dict):
        return "animate"
    interpolation = settings.get("interpolation")
    if isinstance(interpolation, dict) and interpolation.get("command") == "interpolate":
        return "interpolate"
    if "prompt" in settings:
        return "generate"
    return "other"


def _is_clip(path: Path) -> bool:
    if path.is_symlink() or path.name.startswith("."):
        return False  # nadm's temporaries are hidden; links could lead out of the folder
    if path.is_dir():
        return sidecar_path(path).is_file()
    return path.suffix.lower() in VIDEO_SUFFIXES and sidecar_path(path).is_file()


def list_clips(outputs: Path, limit: int | None = None) -> list[Clip]:
    """Every clip under `outputs` (sub-folders too, hidden entries and `inputs/` skipped), newest first, the first
    `limit` (None: all); a clip whose sidecar does not parse is listed with empty settings."""
    outputs = Path(outputs)
    found: list[Clip] = []
    for folder, dirs, files in os.walk(outputs):
        here = Path(folder)
        for name in [*files, *dirs]:
            path = here / name
            if not _is_clip(path):
                continue
            try:
                settings = read_sidecar(path) or {}
                modified = path.stat().st_mtime
            except (NADMError, OSError):
                settings, modified = {}, 0.0
            found.append(Clip(path.relative_to(outputs).as_posix(), path, kind_of(settings), modified, settings))
        # do not descend into frame folders, hidden folders, links or the stored inputs
        dirs[:] = [d for d in dirs if not _is_clip(here / d) and not d.startswith(".") and not (here / d).is_symlink()
                   and not (here == outputs and d == INPUTS)]  # fmt: skip
    found.sort(key=lambda clip: (clip.modified, clip.name), reverse=True)
    return found[:limit]


def prompt_text(prompt: Any) -> str:
    """A sidecar's prompt as one line: the text, or a travel schedule as 'F: PROMPT | F: PROMPT'."""
    if isinstance(prompt, dict):
        return " | ".join(f"{frame}: {text}" for frame, text in prompt.items())
    return "" if prompt is None else str(prompt)


def row(clip: Clip) -> list[Any]:
    """The gallery table's row of a clip (COLUMNS)."""
    s = clip.settings
    size = f"{s['width']}x{s['height']}" if isinstance(s.get("width"), int) and isinstance(s.get("height"), int) else ""
    prompt = prompt_text(s.get("prompt"))
    if clip.kind == "interpolate":
        interpolation = s["interpolation"]
        prompt = f"{interpolation.get('method')} x{2 ** int(interpolation.get('times') or 1)} of {Path(str(interpolation.get('input'))).name}"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(clip.modified))
    seed = s.get("seed")
    return [when, clip.name, TAB_OF.get(clip.kind, "-"), prompt, "" if seed is None else str(seed), s.get("frames", ""), size]


# ------------------------------------------------------------------------------------- use these settings


def _travel_rows(prompt: Any) -> list[list[Any]]:
    return [[int(frame), text] for frame, text in prompt.items()] if isinstance(prompt, dict) else []


def sampling_values(s: dict[str, Any]) -> dict[str, Any]:
    """The controls text-to-video and animate share, from a sidecar written by `NADMPipeline` (nadm.pipeline)."""
    from nadm.windows import DEFAULT_SCHEDULE, SCHEDULES

    windows = s.get("windows") or {}
    interpolation = s.get("interpolation")
    travel = s.get("travel") or {}
    prompt = s.get("prompt")
    seed = s.get("seed")
    return {
        "prompt": "" if isinstance(prompt, dict) else (prompt or ""),
        "travel": _travel_rows(prompt),
        "negative": s.get("negative_prompt") or "",
        "frames": s.get("keyframes"),
        "steps": s.get("steps"),
        "guidance": s.get("guidance"),
        "seed": seed,
        "random_seed": seed is None,
        "sampler": s.get("scheduler") or "ddim",
        "interpolate": interpolation is not None,
        "flow": (interpolation or {}).get("flow") or "dis",
        "loop": bool(s.get("loop")),
        "context": windows.get("context"),
        "overlap": windows.get("overlap"),
        "windows": windows.get("schedule") if windows.get("schedule") in SCHEDULES else DEFAULT_SCHEDULE,
        "window_batch": windows.get("window_batch"),
        "travel_interp": travel.get("interpolation") or "linear",
        "motion_scale": s.get("motion_scale", 1.0),
    }


def settings_for(settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(kind, {control name: value}) that make the clip of this sidecar again in its tab; NADMError for a clip no
    tab made."""
    kind = kind_of(settings)
    size = settings.get("size") or {}
    if kind == "generate":
        return kind, {**sampling_values(settings), "height": size.get("height"), "width": size.get("width")}
    if kind == "animate":
        a = settings["animate"]
        values = {**sampling_values(settings), "height": size.get("height"), "width": size.get("width")}
        values.update(strength=a.get("strength", 1.0), fit=a.get("fit", "crop"), color_anchor=bool(a.get("color_anchor", True)))
        return kind, values
    if kind == "interpolate":
        i = settings["interpolation"]
        return kind, {"method": i.get("method") or "sofp", "flow": i.get("flow") or "dis", "times": i.get("times") or 1,
                      "loop": bool(i.get("loop"))}  # fmt: skip
    raise NADMError("this clip's sidecar names no studio tab (no prompt, animate or interpolate settings)")


def stored_input(outputs: Path, info: dict[str, Any] | None) -> Path | None:
    """The painting or still mask an animate sidecar names (`{source, sha256}`), when the studio kept it in
    `outputs/inputs/` under its SHA-256; None otherwise."""
    if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) or not info["sha256"].isalnum():
        return None
    folder = Path(outputs) / INPUTS
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if p.stem == info["sha256"] and p.is_file() and not p.is_symlink()), None)


def keep_input(outputs: Path, source: Path, sha256: str) -> Path:
    """Copy an uploaded painting or mask into `outputs/inputs/SHA256.EXT` (once; atomically) and return that path, so
    the clip's sidecar names a file that stays."""
    from nadm.outputs import temp_path

    folder = Path(outputs) / INPUTS
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{sha256}{source.suffix.lower()}"
    if final.is_file() and not final.is_symlink():
        return final
    tmp = temp_path(final)
    try:
        tmp.write_bytes(Path(source).read_bytes())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final
