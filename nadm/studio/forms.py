"""The studio's forms -> checked arguments of `NADMPipeline.__call__` / `animate` and of interpolation, with the same
checks as the command line (nadm.pipeline.check_request, nadm.windows.check_window_options, nadm.travel,
nadm.animate.check_animation): a bad value is an NADMError naming it, shown in the page. Needs no Gradio.

Forms are `{control name: value}` as the page sends them: numbers may come as floats or be empty (None).
"""

from __future__ import annotations

import math
from typing import Any

from nadm.errors import InvalidRequest

# What one studio job may ask for: a shared server must not be run out of memory by one form (the command line has
# no such caps). Longer or larger clips: `nadm generate`.
MAX_FRAMES = 256
MAX_SIDE = 1024
MAX_TIMES = 4  # interpolation doublings


def whole(value: Any, name: str, optional: bool = False) -> int | None:
    """A whole number from a form field (an int, or a float with no fraction); None for an empty optional field."""
    if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and math.isnan(value)):
        if optional:
            return None
        raise InvalidRequest(f"{name} is empty")
    if isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a whole number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise InvalidRequest(f"{name} must be a whole number, got {value!r}")
    return int(number)


def real(value: Any, name: str) -> float:
    """A finite number from a form field."""
    if value is None or isinstance(value, bool):
        raise InvalidRequest(f"{name} is empty")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidRequest(f"{name} must be a finite number, got {value!r}")
    return number


def choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed` (a dropdown's value; a crafted request may send anything)."""
    if value not in allowed:
        raise InvalidRequest(f"unknown {name} {value!r}: use one of {', '.join(allowed)}")
    return value


def travel_rows(rows: Any, frames: int, interp: str) -> dict[int, str] | None:
    """Prompt-travel rows `[[frame, prompt], ...]` -> a checked schedule (nadm.travel, as `--travel "F: PROMPT"`);
    None when every row is empty."""
    from nadm.travel import check_travel, parse_travel

    items = []
    for row in rows or []:
        cells = list(row) + [None, None] if isinstance(row, (list, tuple)) else [None, None]
        frame, text = cells[0], "" if cells[1] is None else str(cells[1])
        number = whole(frame, "a travel row's frame", optional=True)
        if number is None and not text.strip():
            continue  # an empty row
        if number is None:
            raise InvalidRequest(f"the travel row {text.strip()!r} has no frame")
        items.append(f"{number}: {text}")
    if not items:
        return None
    return check_travel(parse_travel(items), frames, interp)


def sampling(form: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The settings text-to-video and animate share -> (keyword arguments of `NADMPipeline.__call__` without the prompt
    and size, sampler name); the prompt (or travel schedule) is under 'prompt', None when neither is given."""
    from nadm.interpolate import FLOW_BACKENDS
    from nadm.pipeline import SCHEDULERS, check_motion_scale
    from nadm.travel import INTERPOLATIONS
    from nadm.windows import SCHEDULES, check_window_options

    frames = whole(form["frames"], "frames")
    if frames > MAX_FRAMES:
        raise InvalidRequest(f"the studio makes at most {MAX_FRAMES} frames a clip, got {frames} (longer clips: nadm generate)")
    interp = choice(form["travel_interp"], "travel interpolation", INTERPOLATIONS)
    travel = travel_rows(form.get("travel"), frames, interp)
    prompt = (form.get("prompt") or "").strip()
    if travel is not None and prompt:
        raise InvalidRequest("give a prompt or prompt-travel rows, not both (clear one of them)")
    args = dict(
        prompt=travel or prompt or None,
        negative_prompt=(form.get("negative") or "").strip() or None,
        num_frames=frames,
        steps=whole(form["steps"], "steps"),
        guidance=real(form["guidance"], "guidance"),
        seed=None if form.get("random_seed") else whole(form.get("seed"), "seed"),
        interpolate=bool(form["interpolate"]),
        flow=choice(form["flow"], "flow", FLOW_BACKENDS),
        loop=bool(form["loop"]),
        context=whole(form.get("context"), "context", optional=True),
        overlap=whole(form.get("overlap"), "overlap", optional=True),
        window_schedule=choice(form["windows"], "window schedule", SCHEDULES),
        window_batch=whole(form.get("window_batch"), "window batch", optional=True),
        travel_interp=interp,
        motion_scale=check_motion_scale(real(form["motion_scale"], "motion scale")),
    )
    check_window_options(frames, args["context"], args["overlap"], args["loop"], args["window_schedule"], args["window_batch"])
    return args, choice(form["sampler"], "sampler", SCHEDULERS)


def size(form: dict[str, Any], optional: bool = False) -> tuple[int | None, int | None]:
    """(height, width) from the form, each at most MAX_SIDE (multiples of 8 are checked by check_request)."""
    height = whole(form.get("height"), "height", optional)
    width = whole(form.get("width"), "width", optional)
    for name, value in (("height", height), ("width", width)):
        if value is not None and value > MAX_SIDE:
            raise InvalidRequest(f"the studio makes clips up to {MAX_SIDE} px a side, got {name} {value}")
    return height, width


def text_to_video(form: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The Text to video form -> (keyword arguments of `NADMPipeline.__call__`, sampler)."""
    from nadm.pipeline import check_request

    args, sampler = sampling(form)
    if args["prompt"] is None:
        raise InvalidRequest("the prompt is empty: write a prompt or fill prompt-travel rows")
    args["height"], args["width"] = size(form)
    check_request(args["num_frames"], args["height"], args["width"], args["steps"], args["guidance"], args["seed"],
                  args["interpolate"])  # fmt: skip
    return args, sampler


def animate(form: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The Animate a painting form -> (keyword arguments of `NADMPipeline.animate` but the image and mask, sampler);
    an empty prompt is the animate default, an empty size the painting's aspect ratio."""
    from nadm.animate import check_animation
    from nadm.image import FITS

    args, sampler = sampling(form)
    args["height"], args["width"] = size(form, optional=True)
    args["strength"] = real(form["strength"], "strength")
    check_animation(args["strength"])
    args["fit"] = choice(form["fit"], "fit", FITS)
    args["color_anchor"] = bool(form["color_anchor"])
    return args, sampler


def interpolation(form: dict[str, Any]) -> dict[str, Any]:
    """The Interpolate form -> {method, flow (None for crossfade), times, loop}."""
    from nadm.interpolate import FLOW_BACKENDS, METHODS

    method = choice(form["method"], "method", tuple(METHODS))
    times = whole(form["times"], "times")
    if not 1 <= times <= MAX_TIMES:
        raise InvalidRequest(f"times must be from 1 to {MAX_TIMES}, got {times}")
    flow = None if method == "crossfade" else choice(form["flow"], "flow", FLOW_BACKENDS)
    return {"method": method, "flow": flow, "times": times, "loop": bool(form["loop"])}
