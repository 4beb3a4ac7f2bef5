"""Context windows for long clips and seamless loops (DESIGN.md section 6; the window schedules of `nadm.sampling`).

The motion module was trained on C frames (16 for AnimateDiff v1-5-2; an NADM checkpoint records its training clip
length). A clip of N > C frames is denoised, at every sampler step, as overlapping windows of C frames, each run
through the whole video UNet, their noise predictions fused per frame with pyramid weights (1, 2, ..., 2, 1 over a
window's positions, normalised so every frame's weights sum to 1). Windows start every `stride = C - O` frames
(`O` = overlap, default C/4); the last one ends on the clip's last frame.

- **static**: the same windows at every step;
- **shifting** (the default): the window starts move by a different offset in [0, stride) each step (golden-ratio
  sequence), so window edges fall in different places at different noise levels (AnimateDiff-Evolved's "uniform"
  idea). Fewer seams than static on the tiny model: edge excess 1.05 vs 1.11, largest jump 1.08 vs 1.13
  (benchmarks/results/window_seams.md);
- **loop** (ring windows): frame indices wrap around, windows start every stride frames on the ring N frames long
  (..., N-2, N-1, 0, 1, ...), so the pair (N-1, 0) is as much inside a window as any other pair. A loop of N <= C
  frames is one window of all N frames whose starting frame rotates every step (a rolled window): the cut between
  the window's ends is at a different place at each step, so no pair is always cut.

With N <= C and no loop the schedule is `nadm.sampling.all_frames`: one window, bit-identical to a plain clip.
Window lists are `(frames, weights)`; `frames` are clip indices in the order the motion module sees them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nadm.errors import NADMError

DEFAULT_CONTEXT = 16  # AnimateDiff v1-5-2's training clip; also the stated fallback for checkpoints that record none
DEFAULT_BATCH_FRAMES = 16  # default --window-batch: as many C-frame windows as a default 16-frame clip's UNet pass
SCHEDULES = ("static", "shifting")
DEFAULT_SCHEDULE = "shifting"  # fewer seams than static on the tiny model (benchmarks/results/window_seams.md)
MIN_LOOP_FRAMES = 3
GOLDEN = (math.sqrt(5) - 1) / 2  # 0.618...: offsets frac(i * GOLDEN) spread evenly over the steps


class InvalidWindows(NADMError, ValueError):
    """A bad context/overlap/loop request: a ValueError to Python callers, a one-line error (exit 2) on the CLI."""


def default_overlap(context: int) -> int:
    """The default overlap O = C/4 (rounded down)."""
    return context // 4


def trained_frames(weights) -> int:
    """The default context C of motion weights: the clip length they were trained on (`MotionWeights.trained_frames`),
    else DEFAULT_CONTEXT (16: AnimateDiff's, and the fallback for NADM checkpoints that predate the field)."""
    frames = getattr(weights, "trained_frames", None)
    return int(frames) if frames else DEFAULT_CONTEXT


@dataclass(frozen=True)
class ContextPlan:
    """How a clip's frames are windowed (issue 15): context C, overlap O, schedule, loop, windows per UNet call."""

    num_frames: int
    context: int
    overlap: int
    schedule: str = DEFAULT_SCHEDULE
    loop: bool = False
    window_batch: int = 1

    @property
    def stride(self) -> int:
        return self.context - self.overlap

    @property
    def windowed(self) -> bool:
        """False for the plain one-window path (N <= C, no loop)."""
        return self.loop or self.num_frames > self.context

    def describe(self) -> dict[str, Any]:
        """The sidecar record: C, O, schedule, loop, window batch and windows per step."""
        kind = self.schedule if self.windowed else "one window"
        if self.loop and self.num_frames <= self.context:
            kind = "rolled"  # one window of all frames, its start rotating each step
        return {
            "context": self.context,
            "overlap": self.overlap,
            "schedule": kind,
            "loop": self.loop,
            "window_batch": self.window_batch,
            "windows_per_step": len(self.starts(0)),
        }

    def offset(self, step: int) -> int:
        """Where the windows start at `step`: 0 for static; a golden-ratio sequence over [0, period) when shifting."""
        rolled = self.loop and self.num_frames <= self.context
        period = self.num_frames if rolled else self.stride
        if not (rolled or self.schedule == "shifting"):
            return 0
        return int((step * GOLDEN) % 1.0 * period)

    def starts(self, step: int) -> list[int]:
        """First frame of every window at `step` (ring positions with a loop)."""
        n, c, s, o = self.num_frames, self.context, self.stride, self.offset(step)
        if self.loop:
            if n <= c:
                return [o]
            return [(o + k * s) % n for k in range(math.ceil(n / s))]
        if n <= c:
            return [0]
        return sorted({min(max(o + k * s, 0), n - c) for k in range(-1, math.ceil((n - c) / s) + 1)})

    def window_frames(self, step: int) -> list[tuple[int, ...]]:
        """The frames of every window at `step`, in the order the motion module sees them."""
        n, c = self.num_frames, min(self.context, self.num_frames)
        return [tuple((start + j) % n for j in range(c)) for start in self.starts(step)]

    def __call__(self, step: int, num_frames: int) -> list:
        """The window schedule (nadm.sampling.WindowSchedule): windows of C frames, fusion weights summing to 1."""
        import torch

        from nadm.sampling import Window, all_frames

        if num_frames != self.num_frames:
            raise ValueError(f"this plan is for {self.num_frames} frames, the latents have {num_frames}")
        if not self.windowed:
            return all_frames(step, num_frames)
        frames = self.window_frames(step)
        raw = pyramid(len(frames[0]))
        total = torch.zeros(num_frames)
        for window in frames:
            total.index_add_(0, torch.tensor(window), raw)
        return [Window(window, raw / total[list(window)]) for window in frames]


def pyramid(length: int):
    """Fusion weights over a window's positions, falling off toward its edges: 1, 2, ..., 2, 1 (as FreeNoise's)."""
    import torch

    return torch.tensor([float(min(i + 1, length - i)) for i in range(length)])


def check_window_options(
    num_frames: int,
    context: int | None = None,
    overlap: int | None = None,
    loop: bool = False,
    schedule: str | None = None,
    window_batch: int | None = None,
) -> None:
    """Refuse bad window options before any model is loaded (what needs the motion module: `plan_windows`)."""
    for name, value, low in (("context", context, 2), ("overlap", overlap, 0), ("window batch", window_batch, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise InvalidWindows(f"{name} must be an integer >= {low}, got {value!r}")
    if context is not None and overlap is not None and overlap >= context:
        raise InvalidWindows(f"overlap must be smaller than the context ({context} frames), got {overlap}")
    if schedule is not None and schedule not in SCHEDULES:
        raise InvalidWindows(f"unknown window schedule {schedule!r}: use {' or '.join(SCHEDULES)}")
    if loop and isinstance(num_frames, int) and num_frames < MIN_LOOP_FRAMES:
        raise InvalidWindows(f"a loop needs at least {MIN_LOOP_FRAMES} frames, got {num_frames}")


def plan_windows(
    num_frames: int,
    trained: int,
    max_frames: int,
    context: int | None = None,
    overlap: int | None = None,
    loop: bool = False,
    schedule: str | None = None,
    window_batch: int | None = None,
) -> ContextPlan:
    """The windows for a clip of `num_frames` with a motion module trained on `trained` frames whose position table
    holds `max_frames`: C defaults to the trained length, O to C/4, the batch to DEFAULT_BATCH_FRAMES // C windows."""
    check_window_options(num_frames, context, overlap, loop, schedule, window_batch)
    c = min(trained, max_frames) if context is None else context
    if c > max_frames:
        raise InvalidWindows(f"context must be at most {max_frames}, the motion module's position-encoding length, got {c}")
    o = default_overlap(c) if overlap is None else overlap
    if o >= c:
        raise InvalidWindows(f"overlap must be smaller than the context ({c} frames), got {o}")
    k = max(1, DEFAULT_BATCH_FRAMES // c) if window_batch is None else window_batch
    return ContextPlan(num_frames, c, o, schedule or DEFAULT_SCHEDULE, bool(loop), k)
