"""Prompt travel (issue 15): a schedule of prompts over a clip's frames, as the text schedule of `nadm.sampling`.

Keys are `{frame: prompt}` with frames increasing in [0, N). Each key prompt is encoded once; frame f gets the key's
embedding at a key frame, the first key's before the first key, the last key's after the last, and in between a
linear (or spherical, `slerp`) interpolation of the two keys around it. With a loop the frames after the last key
travel on toward the first key, reached again at frame N + first key (the clip's start). The negative prompt stays
one embedding for every frame.

    --travel "0: spring mist over the peaks" --travel "48: autumn rain, boats returning"
    pipe(prompt={0: "spring mist over the peaks", 48: "autumn rain, boats returning"}, num_frames=64)

A travel file (`--travel-file`) is YAML or JSON: a mapping `frame: prompt`, or a list of `{frame, prompt}` items.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from nadm.errors import NADMError

if TYPE_CHECKING:
    import torch

INTERPOLATIONS = ("linear", "slerp")


class InvalidTravel(NADMError, ValueError):
    """A bad prompt schedule: a ValueError to Python callers, a one-line error (exit 2) on the command line."""


# ------------------------------------------------------------------------------------------------ parsing


def parse_travel(items: Sequence[str]) -> dict[int, str]:
    """`["0: spring mist", "48: autumn rain"]` -> `{0: "spring mist", 48: "autumn rain"}` (order kept, then checked)."""
    pairs = []
    for item in items:
        match = re.fullmatch(r"\s*(-?\d+)\s*:(.*)", item, flags=re.DOTALL)
        if not match:
            raise InvalidTravel(f"bad --travel {item!r}: write FRAME: PROMPT, e.g. \"48: autumn rain\"")
        pairs.append((int(match.group(1)), match.group(2).strip()))
    return _as_keys(pairs, "--travel")


def read_travel_file(path: str | Path) -> dict[int, str]:
    """A travel schedule from a YAML or JSON file: `{frame: prompt}` or `[{frame: F, prompt: P}, ...]`."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidTravel(f"travel file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidTravel(f"cannot read the travel file {path}: {e}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidTravel(f"the travel file {path} does not parse: {first}") from None
    if isinstance(data, dict):
        pairs = list(data.items())
    elif isinstance(data, list) and all(isinstance(x, dict) and set(x) == {"frame", "prompt"} for x in data):
        pairs = [(x["frame"], x["prompt"]) for x in data]
    else:
        raise InvalidTravel(f"the travel file {path} must hold a mapping FRAME: PROMPT or a list of {{frame, prompt}}")
    return _as_keys([(_frame_number(k, path), v) for k, v in pairs], str(path))


def _frame_number(key: Any, where: Path) -> int:
    """A key frame from a file: an integer, or a string of digits (JSON keys are strings)."""
    if isinstance(key, str) and re.fullmatch(r"\s*-?\d+\s*", key):
        return int(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    raise InvalidTravel(f"{where}: travel keys must be frame numbers, got {key!r}")


def _as_keys(pairs: list[tuple[int, Any]], where: str) -> dict[int, str]:
    """Pairs as a dict, refusing repeated frames (which would silently drop a prompt)."""
    keys: dict[int, str] = {}
    for frame, prompt in pairs:
        if frame in keys:
            raise InvalidTravel(f"{where}: frame {frame} has two prompts")
        keys[frame] = prompt
    return keys


def check_travel(keys: Any, num_frames: int, interp: str = "linear") -> dict[int, str]:
    """Refuse a bad schedule (keys not integers in [0, N) in increasing order, empty prompts, an unknown
    interpolation); return it as a dict."""
    if interp not in INTERPOLATIONS:
        raise InvalidTravel(f"unknown travel interpolation {interp!r}: use {' or '.join(INTERPOLATIONS)}")
    if not isinstance(keys, dict) or not keys:
        raise InvalidTravel("a prompt travel schedule must be a non-empty dict {frame: prompt}")
    frames = list(keys)
    for frame, prompt in keys.items():
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise InvalidTravel(f"travel keys must be integer frame numbers, got {frame!r}")
        if not 0 <= frame < num_frames:
            raise InvalidTravel(f"travel key {frame} is outside the clip's frames 0..{num_frames - 1}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidTravel(f"the travel prompt at frame {frame} is empty")
    bad = next((b for a, b in zip(frames, frames[1:]) if b <= a), None)
    if bad is not None:
        raise InvalidTravel(f"travel keys must increase: frame {bad} comes after frame {frames[frames.index(bad) - 1]}")
    return dict(keys)


def travel_keys(items: Sequence[str], path: str | Path | None, num_frames: int, interp: str = "linear") -> dict[int, str] | None:
    """The command line's schedule: `--travel` items or a `--travel-file` (not both), checked; None without either."""
    if items and path is not None:
        raise InvalidTravel("give --travel or --travel-file, not both")
    if not items and path is None:
        return None
    return check_travel(parse_travel(items) if items else read_travel_file(path), num_frames, interp)


# ------------------------------------------------------------------------------------------- the schedule


def slerp(a: "torch.Tensor", b: "torch.Tensor", alpha: float) -> "torch.Tensor":
    """Spherical interpolation of token embeddings `(..., dim)` along the great circle (norms interpolated linearly);
    plain lerp where a token's two embeddings are (nearly) parallel."""
    import torch

    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    theta = torch.acos((ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    sin = torch.sin(theta)
    wa = torch.where(sin > 1e-4, torch.sin((1 - alpha) * theta) / sin, torch.full_like(sin, 1 - alpha))
    wb = torch.where(sin > 1e-4, torch.sin(alpha * theta) / sin, torch.full_like(sin, alpha))
    return (wa * ua + wb * ub) * ((1 - alpha) * na + alpha * nb)


def key_weights(frame: int, keys: Sequence[int], num_frames: int, loop: bool) -> tuple[int, int, float]:
    """(key index before, key index after, alpha) for `frame`: alpha 0 at a key, held outside the keys unless looping."""
    after = next((i for i, k in enumerate(keys) if k >= frame), None)
    if after is not None and keys[after] == frame:
        return after, after, 0.0
    if loop and (after is None or after == 0):  # between the last key and the first key of the next lap
        last, first = keys[-1], keys[0] + num_frames
        position = frame if frame > last else frame + num_frames
        return len(keys) - 1, 0, (position - last) / (first - last)
    if after is None:
        return len(keys) - 1, len(keys) - 1, 0.0
    if after == 0:
        return 0, 0, 0.0
    before = after - 1
    return before, after, (frame - keys[before]) / (keys[after] - keys[before])


@dataclass
class TravelSchedule:
    """Per-frame text (nadm.sampling.TextSchedule): `(b, len(frames), tokens, dim)`, b = [negative,] prompt."""

    keys: tuple[int, ...]  # key frames, increasing
    embeddings: "torch.Tensor"  # (len(keys), tokens, dim): each key prompt encoded once
    negative: "torch.Tensor | None"  # (1, tokens, dim), or None without guidance
    num_frames: int
    loop: bool = False
    interp: str = "linear"

    def frame(self, f: int) -> "torch.Tensor":
        """The prompt embedding of clip frame f, `(tokens, dim)`."""
        i, j, alpha = key_weights(f, self.keys, self.num_frames, self.loop)
        if alpha == 0.0 or i == j:
            return self.embeddings[i]
        a, b = self.embeddings[i], self.embeddings[j]
        return slerp(a, b, alpha) if self.interp == "slerp" else a + alpha * (b - a)

    def __call__(self, frames: Sequence[int]) -> "torch.Tensor":
        import torch

        prompt = torch.stack([self.frame(f) for f in frames])[None]  # (1, f, tokens, dim)
        if self.negative is None:
            return prompt
        return torch.cat([self.negative[:, None].expand(-1, len(frames), -1, -1), prompt])


def travel_schedule(
    encode: Callable[[list[str]], "torch.Tensor"],
    keys: dict[int, str],
    negative: str | None,
    guidance: bool,
    num_frames: int,
    loop: bool = False,
    interp: str = "linear",
) -> TravelSchedule:
    """Encode the negative prompt and every key prompt once (one text-encoder call) and build the schedule."""
    keys = check_travel(keys, num_frames, interp)
    texts = ([negative or ""] if guidance else []) + list(keys.values())
    encoded = encode(texts)  # (len(texts), tokens, dim)
    negative_embedding = encoded[:1] if guidance else None
    return TravelSchedule(tuple(keys), encoded[int(guidance) :], negative_embedding, num_frames, loop, interp)


def describe(keys: dict[int, str]) -> dict[str, str]:
    """The schedule as JSON (string keys), for the sidecar's `prompt`."""
    return {str(frame): prompt for frame, prompt in keys.items()}
