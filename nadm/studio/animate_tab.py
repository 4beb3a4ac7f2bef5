"""The Animate a painting tab: upload a painting (checked by `nadm.image`), brush the regions that must stay still on
it (Gradio's ImageEditor; what is painted on its layer is the still mask), and animate it with
`NADMPipeline.animate`: frame 0 is the painting and the brushed regions stay exactly as painted.

The upload and the mask are kept in `OUTPUTS/inputs/SHA256.EXT` (`gallery.keep_input`), so the clip's sidecar names
files that stay and "use these settings" can bring the painting and its mask back.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np

from nadm.image import FITS
from nadm.studio import forms
from nadm.studio.controls import Panel, optional_number, result_controls, sampling_controls
from nadm.studio.gallery import keep_input, new_clip_path, prompt_text
from nadm.studio.jobs import guarded
from nadm.studio.safety import PAINTING_SUFFIXES, read_painting

if TYPE_CHECKING:
    from nadm.studio.app import Studio

PREFIX = "anim"
STILL_COLOUR = "#ffffff"  # the brush: white marks what stays still (as `nadm animate --still`)


def still_mask(editor: dict | None) -> np.ndarray | None:
    """The ImageEditor's value -> the still mask `(H, W) uint8` (255 = still: wherever a layer was painted), or None
    when nothing was brushed."""
    layers = [layer for layer in (editor or {}).get("layers") or [] if isinstance(layer, np.ndarray)]
    if not layers:
        return None
    shape = layers[0].shape[:2]
    painted = np.zeros(shape, bool)
    for layer in layers:
        if layer.shape[:2] != shape:
            continue  # layers share the canvas size; anything else is not the editor's
        painted |= layer[:, :, 3] > 0 if layer.ndim == 3 and layer.shape[2] == 4 else layer.reshape(shape + (-1,)).max(-1) > 0
    return (painted * 255).astype(np.uint8) if painted.any() else None


def editor_value(painting: Path) -> dict:
    """The ImageEditor's value for a painting (its pixels as nadm reads them) with an empty layer to brush on."""
    from nadm.image import read_picture

    return {"background": read_picture(painting, "painting").pixels, "layers": [], "composite": None}


def save_mask(studio: Studio, mask: np.ndarray) -> Path:
    """Keep a still mask as `OUTPUTS/inputs/SHA256.png` (the SHA-256 of the PNG's bytes, as the sidecar records it)."""
    import hashlib
    import tempfile

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory(prefix="nadm-mask-") as folder:
        source = Path(folder) / "mask.png"
        source.write_bytes(data)
        return keep_input(studio.outputs, source, sha)


def build(studio: Studio) -> tuple[Panel, dict]:
    """The tab's controls and events (inside a `gr.Tab`); returns the panel and the painting's own components."""
    panel = Panel()
    with gr.Row():
        with gr.Column(scale=3):
            upload = gr.File(label=f"Painting (up to {studio.max_upload_mb:g} MB)", file_types=list(PAINTING_SUFFIXES),
                             type="filepath", height=120, elem_id=f"{PREFIX}-upload")  # fmt: skip
            editor = gr.ImageEditor(label="Brush the regions that stay still (white)", type="numpy", image_mode="RGBA",
                                    sources=[], transforms=[], layers=False, eraser=gr.Eraser(),
                                    brush=gr.Brush(colors=[STILL_COLOUR], color_mode="fixed"),
                                    elem_id=f"{PREFIX}-editor")  # fmt: skip
            painting = panel.add("painting", gr.State(None))  # the kept painting's path: set by the server only
            panel.add("editor", editor)
            panel.add("kept_mask", gr.State(None))  # a stored still mask "use these settings" brought back
            panel.add("prompt", gr.Textbox(label="Prompt (empty: mist drifting, water flowing)", lines=2,
                                           elem_id=f"{PREFIX}-prompt"))  # fmt: skip
            with gr.Row():
                panel.add("height", optional_number("Height", "auto", f"{PREFIX}-height"))
                panel.add("width", optional_number("Width", "auto", f"{PREFIX}-width"))
                panel.add("fit", gr.Dropdown(list(FITS), value="crop", label="Fit", elem_id=f"{PREFIX}-fit"))
            with gr.Row():
                panel.add("strength", gr.Slider(0, 1, value=1.0, step=0.05, label="Strength (lower: nearer the painting)",
                                                elem_id=f"{PREFIX}-strength"))  # fmt: skip
                panel.add("color_anchor", gr.Checkbox(label="Anchor colours to the painting", value=True,
                                                      elem_id=f"{PREFIX}-color-anchor"))  # fmt: skip
            sampling_controls(panel, PREFIX)
        with gr.Column(scale=2):
            make, stop, video, status = result_controls(PREFIX, "Animate")

    @guarded
    def load_painting(path: str | None):
        """Check an upload as a painting, keep it, and put it on the editor's canvas."""
        if not path:
            return None, None, None, ""
        picture = read_painting(path, studio.max_upload_bytes)
        kept = keep_input(studio.outputs, Path(path), picture.sha256)
        h, w = picture.size
        return editor_value(kept), str(kept), None, f"Painting {Path(path).name}: {w}x{h}. Brush what stays still, then Animate."

    kept_mask = panel.controls["kept_mask"]
    upload.upload(load_painting, inputs=upload, outputs=[editor, painting, kept_mask, status], **studio.light("check_painting"))
    upload.clear(lambda: (None, None, None, ""), outputs=[editor, painting, kept_mask, status], **studio.light("clear_painting"))

    @guarded
    def make_clip(data: dict, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        """Animate the painting with the form's settings and write the clip with its sidecar."""
        from nadm.pipeline import save_result

        form = panel.form(data)
        if not form["painting"]:
            raise gr.Error("Upload a painting first.", print_exception=False)
        args, sampler = forms.animate(form)
        mask = still_mask(form["editor"])
        still = save_mask(studio, mask) if mask is not None else form["kept_mask"]
        path = new_clip_path(studio.outputs, "animate", prompt_text(args["prompt"]) or Path(form["painting"]).stem[:8])
        progress(0, desc="waiting for the model")
        with studio.jobs.run(request.session_hash, "animate"):
            start = time.perf_counter()
            studio.pipe.scheduler = sampler  # the sampler is the pipeline's; set per job while holding the model
            result = studio.pipe.animate(form["painting"], still=still, progress=True, **args)
            written = save_result(result, path)
        return str(written), studio.report(written, result, time.perf_counter() - start)

    studio.wire(make, stop, make_clip, panel.inputs, [video, status], status, "animate")
    return panel, {"upload": upload, "editor": editor, "painting": painting}
