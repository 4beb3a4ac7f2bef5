"""The Text to video tab: a prompt (or prompt-travel rows) and `nadm generate`'s settings -> a clip in the outputs
folder with its sidecar (Alg. 1 inference through `NADMPipeline.__call__`, written by `nadm.pipeline.save_result`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import gradio as gr

from nadm.studio import forms
from nadm.studio.controls import Panel, result_controls, sampling_controls
from nadm.studio.gallery import new_clip_path, prompt_text
from nadm.studio.jobs import guarded

if TYPE_CHECKING:
    from nadm.studio.app import Studio

PREFIX = "t2v"


def build(studio: Studio) -> Panel:
    """The tab's controls and events (inside a `gr.Tab`)."""
    panel = Panel()
    with gr.Row():
        with gr.Column(scale=3):
            panel.add("prompt", gr.Textbox(label="Prompt", lines=2, elem_id=f"{PREFIX}-prompt",
                                           placeholder="a misty Chinese ink landscape, mountains and a river"))  # fmt: skip
            with gr.Row():
                panel.add("height", gr.Number(label="Height", value=512, precision=0, minimum=16, maximum=forms.MAX_SIDE,
                                              step=8, elem_id=f"{PREFIX}-height"))  # fmt: skip
                panel.add("width", gr.Number(label="Width", value=512, precision=0, minimum=16, maximum=forms.MAX_SIDE,
                                             step=8, elem_id=f"{PREFIX}-width"))  # fmt: skip
            sampling_controls(panel, PREFIX)
        with gr.Column(scale=2):
            make, stop, video, status = result_controls(PREFIX)

    @guarded
    def make_clip(data: dict, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        """Generate one clip from the form and write it with its sidecar."""
        from nadm.pipeline import save_result

        args, sampler = forms.text_to_video(panel.form(data))
        path = new_clip_path(studio.outputs, "generate", prompt_text(args["prompt"]))
        progress(0, desc="waiting for the model")
        with studio.jobs.run(request.session_hash, "text to video"):
            start = time.perf_counter()
            studio.pipe.scheduler = sampler  # the sampler is the pipeline's; set per job while holding the model
            result = studio.pipe(**args, progress=True)
            written = save_result(result, path)
        return str(written), studio.report(written, result, time.perf_counter() - start)

    studio.wire(make, stop, make_clip, panel.inputs, [video, status], status, "generate")
    return panel
