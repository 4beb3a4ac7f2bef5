"""Gradio controls shared by the tabs: a `Panel` names a tab's controls (the names `nadm.studio.forms` reads and
`nadm.studio.gallery.settings_for` fills), and `sampling_controls` builds the settings text-to-video and animate
share, with the command line's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from nadm.interpolate import FLOW_BACKENDS
from nadm.pipeline import SCHEDULERS
from nadm.studio.forms import MAX_FRAMES
from nadm.travel import INTERPOLATIONS
from nadm.windows import DEFAULT_SCHEDULE, SCHEDULES


@dataclass
class Panel:
    """A tab's controls by name, in a fixed order (the order of `fill`'s updates)."""

    controls: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, component):
        self.controls[name] = component
        return component

    @property
    def inputs(self) -> set:
        """The controls as a Gradio input set: the handler gets one dict {component: value}."""
        return set(self.controls.values())

    @property
    def components(self) -> list:
        return list(self.controls.values())

    def form(self, data: dict) -> dict[str, Any]:
        """{component: value} from Gradio -> {name: value}."""
        return {name: data.get(component) for name, component in self.controls.items()}

    def fill(self, values: dict[str, Any]) -> list:
        """One update per control, in order: the given values, the rest left as they are."""
        return [gr.update(value=values[name]) if name in values else gr.skip() for name in self.controls]


def optional_number(label: str, default: str, elem_id: str):
    """A whole number that may be left empty for its default (a Number field cannot be empty: it shows 0)."""
    return gr.Textbox(label=label if default == "auto" else f"{label} (empty: {default})", placeholder="auto", max_lines=1,
                      elem_id=elem_id)  # fmt: skip


def seed_controls(panel: Panel, prefix: str) -> None:
    """Seed: a number, and 'random' (on by default: a new seed every clip, recorded in the sidecar)."""
    with gr.Row():
        panel.add("seed", gr.Number(label="Seed", value=0, precision=0, minimum=0, elem_id=f"{prefix}-seed"))
        panel.add("random_seed", gr.Checkbox(label="Random seed", value=True, elem_id=f"{prefix}-random-seed"))


def sampling_controls(panel: Panel, prefix: str) -> None:
    """The settings text-to-video and animate share, as `nadm generate`'s options with its defaults."""
    panel.add("negative", gr.Textbox(label="Negative prompt", lines=1, elem_id=f"{prefix}-negative"))
    with gr.Row():
        panel.add("frames", gr.Number(label="Frames", value=16, precision=0, minimum=2, maximum=MAX_FRAMES,
                                      elem_id=f"{prefix}-frames"))  # fmt: skip
        panel.add("steps", gr.Number(label="Steps", value=25, precision=0, minimum=1, maximum=1000, elem_id=f"{prefix}-steps"))
        panel.add("guidance", gr.Number(label="Guidance", value=8.0, minimum=1, elem_id=f"{prefix}-guidance"))
        panel.add("sampler", gr.Dropdown(list(SCHEDULERS), value="ddim", label="Sampler", elem_id=f"{prefix}-sampler"))
    seed_controls(panel, prefix)
    with gr.Row():
        panel.add("motion_scale", gr.Slider(0, 2, value=1.0, step=0.05, label="Motion scale (<1 calmer, >1 livelier)",
                                            elem_id=f"{prefix}-motion-scale"))  # fmt: skip
        panel.add("loop", gr.Checkbox(label="Seamless loop", value=False, elem_id=f"{prefix}-loop"))
    with gr.Row():
        panel.add("interpolate", gr.Checkbox(label="Interpolate (SOFP, N -> 2N-1 frames)", value=True,
                                             elem_id=f"{prefix}-interpolate"))  # fmt: skip
        panel.add("flow", gr.Dropdown(list(FLOW_BACKENDS), value="dis", label="Optical flow", elem_id=f"{prefix}-flow"))
    with gr.Accordion("Long clips (context windows)", open=False):
        with gr.Row():
            panel.add("context", optional_number("Context", "the motion module's clip", f"{prefix}-context"))
            panel.add("overlap", optional_number("Overlap", "context/4", f"{prefix}-overlap"))
            panel.add("windows", gr.Dropdown(list(SCHEDULES), value=DEFAULT_SCHEDULE, label="Window schedule",
                                             elem_id=f"{prefix}-windows"))  # fmt: skip
            panel.add("window_batch", optional_number("Windows per UNet call", "16/context", f"{prefix}-window-batch"))
    with gr.Accordion("Prompt travel (instead of the prompt)", open=False):
        panel.add("travel", gr.Dataframe(headers=["frame", "prompt"], datatype=["number", "str"], type="array", row_count=2,
                                         column_count=2, interactive=True, label="Key frames: the prompt at each frame",
                                         elem_id=f"{prefix}-travel"))  # fmt: skip
        panel.add("travel_interp", gr.Dropdown(list(INTERPOLATIONS), value="linear", label="Between key frames",
                                               elem_id=f"{prefix}-travel-interp"))  # fmt: skip


def result_controls(prefix: str, label: str = "Generate"):
    """Make/Stop buttons, the clip and a status line."""
    with gr.Row():
        make = gr.Button(label, variant="primary", elem_id=f"{prefix}-make")
        stop = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop")
    video = gr.Video(label="Clip", interactive=False, autoplay=True, loop=True, elem_id=f"{prefix}-video")
    status = gr.Markdown(elem_id=f"{prefix}-status")
    return make, stop, video, status
