"""The Interpolate tab: upload a clip (checked by `nadm.studio.safety.read_clip`), double its frames K times with SOFP,
the flow midpoint or a cross-fade (Sec. III-E, `nadm.interpolate.times`; a loop also fills its (last, first) pair,
`nadm.loops`), and write it with its sidecar as `nadm interpolate` does."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from nadm.interpolate import FLOW_BACKENDS, METHODS
from nadm.studio import forms
from nadm.studio.controls import Panel, result_controls
from nadm.studio.gallery import new_clip_path
from nadm.studio.jobs import guarded
from nadm.studio.safety import CLIP_SUFFIXES, read_clip

if TYPE_CHECKING:
    from nadm.studio.app import Studio

PREFIX = "interp"


def build(studio: Studio) -> Panel:
    """The tab's controls and events (inside a `gr.Tab`)."""
    panel = Panel()
    with gr.Row():
        with gr.Column(scale=3):
            panel.add("clip", gr.File(label=f"Clip (mp4, gif, webp, mov, avi, mkv, webm; up to {studio.max_upload_mb:g} MB)",
                                      file_types=list(CLIP_SUFFIXES), type="filepath", elem_id=f"{PREFIX}-upload"))  # fmt: skip
            with gr.Row():
                panel.add("method", gr.Dropdown(list(METHODS), value="sofp", label="Method", elem_id=f"{PREFIX}-method"))
                panel.add("flow", gr.Dropdown(list(FLOW_BACKENDS), value="dis", label="Optical flow", elem_id=f"{PREFIX}-flow"))
            with gr.Row():
                panel.add("times", gr.Number(label="Times (each doubles the frames)", value=1, precision=0, minimum=1,
                                             maximum=forms.MAX_TIMES, elem_id=f"{PREFIX}-times"))  # fmt: skip
                panel.add("loop", gr.Checkbox(label="The clip is a loop (fill last -> first too)", value=False,
                                              elem_id=f"{PREFIX}-loop"))  # fmt: skip
        with gr.Column(scale=2):
            make, stop, video, status = result_controls(PREFIX, "Interpolate")

    @guarded
    def make_clip(data: dict, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        """Interpolate the uploaded clip and write the result with its sidecar."""
        from nadm.commands.interpolate import check_frame_count
        from nadm.interpolate import check_clip
        from nadm.io import write_video
        from nadm.loops import interpolate_clip

        form = panel.form(data)
        if not form["clip"]:
            raise gr.Error("Upload a clip first.", print_exception=False)
        options = forms.interpolation(form)
        source = Path(form["clip"])
        frames, fps = read_clip(source, studio.max_upload_bytes)
        try:
            frames = check_clip(frames)
        except ValueError as e:
            raise gr.Error(f"{source.name}: {e}", print_exception=False) from None
        check_frame_count(frames.shape, options["times"], False, options["loop"])
        path = new_clip_path(studio.outputs, "interpolate", source.stem)
        progress(0, desc="waiting for its turn")
        with studio.jobs.run(request.session_hash, "interpolate"):
            start = time.perf_counter()
            result, record = interpolate_clip(frames, options["times"], options["method"], options["flow"],
                                              loop=options["loop"], progress=True)  # fmt: skip
            fps_out = fps * 2 ** options["times"]
            settings = {"command": "interpolate", **record, "keep_fps": False, "input": source.name, "fps_in": fps,
                        "input_sha256": hashlib.sha256(source.read_bytes()).hexdigest(), "fps_out": fps_out}  # fmt: skip
            written = write_video(result, path, fps_out, metadata={"interpolation": settings, "loop": options["loop"]})
        elapsed = time.perf_counter() - start
        return str(written), f"Wrote **{written.name}**: {len(frames)} -> {len(result)} frames ({options['method']}), {elapsed:.1f} s"

    studio.wire(make, stop, make_clip, panel.inputs, [video, status], status, "interpolate")
    return panel
