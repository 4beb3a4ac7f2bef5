"""The Gallery tab: every clip of the outputs folder, newest first, with its sidecar's settings; "Use these settings"
fills the tab that made the clip (`gallery.settings_for`), so it can be made again or varied."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from nadm.io import read_sidecar
from nadm.studio.animate_tab import editor_value
from nadm.studio.controls import Panel
from nadm.studio.gallery import TAB_OF, list_clips, row, settings_for, stored_input
from nadm.studio.jobs import guarded
from nadm.studio.safety import contained

if TYPE_CHECKING:
    from nadm.studio.app import Studio

LIMIT = 100  # clips shown at once (each is copied into Gradio's cache to be served)


def thumbnail(clip) -> tuple[str, str] | None:
    """(file to show, caption) of a clip in the gallery: the video or animation itself, a frame folder's first frame."""
    path = clip.path
    if path.is_dir():
        frames = sorted(path.glob("*.png"))
        if not frames:
            return None
        path = frames[0]
    when, name, tab, prompt, seed = row(clip)[:5]
    what = f"{tab}: {prompt[:80]}" if clip.kind in TAB_OF else name
    return str(path), what + (f" (seed {seed})" if seed else "") + f" | {when}"


def build(studio: Studio, tabs, gallery_tab, panels: dict[str, Panel]) -> None:
    """The tab's controls and events (inside its `gr.Tab`); `panels` are the other tabs' controls by kind."""
    with gr.Row():
        refresh = gr.Button("Refresh", elem_id="gallery-refresh", scale=0)
        summary = gr.Markdown(elem_id="gallery-summary")
    with gr.Row():
        with gr.Column(scale=3):
            shelf = gr.Gallery(label=f"Clips, newest first (the {LIMIT} newest): click one", columns=4, height=520,
                               allow_preview=False, interactive=False, object_fit="contain", elem_id="gallery-clips")  # fmt: skip
        with gr.Column(scale=2):
            use = gr.Button("Use these settings", variant="primary", elem_id="gallery-use")
            note = gr.Markdown(elem_id="gallery-note")
            settings = gr.JSON(label="Settings (its sidecar)", elem_id="gallery-settings")
    names = gr.State([])  # the shown clips' names, in the gallery's order
    chosen = gr.State(None)  # the selected clip's name

    @guarded
    def listing():
        clips = list_clips(studio.outputs, LIMIT)
        shown = [(clip.name, item) for clip in clips if (item := thumbnail(clip)) is not None]
        total = len(list_clips(studio.outputs, None)) if len(clips) == LIMIT else len(clips)
        return [item for _, item in shown], [name for name, _ in shown], f"{total} clips in `{studio.outputs}`", None, None, ""

    @guarded
    def select(listed: list, event: gr.SelectData):
        index = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        if not isinstance(index, int) or not 0 <= index < len(listed):
            raise gr.Error("That clip is gone: press Refresh.", print_exception=False)
        path = contained(studio.outputs, listed[index])
        if not path.exists():
            raise gr.Error(f"{listed[index]} is gone: press Refresh.", print_exception=False)
        return listed[index], read_sidecar(path) or {}, f"**{listed[index]}**"

    @guarded
    def use_settings(name: str | None):
        if not name:
            raise gr.Error("Choose a clip in the gallery first.", print_exception=False)
        sidecar = read_sidecar(contained(studio.outputs, name)) or {}
        kind, values = settings_for(sidecar)
        message = f"Settings of **{name}** are in the {TAB_OF[kind]} tab."
        if kind == "animate":
            a = sidecar["animate"]
            painting, mask = stored_input(studio.outputs, a.get("image")), stored_input(studio.outputs, a.get("still_mask"))
            values["kept_mask"] = str(mask) if painting is not None and mask is not None else None
            if painting is not None:
                values.update(painting=str(painting), editor=editor_value(painting))
                if mask is not None:
                    message += f" Its still mask ({mask.name}) is used unless you brush a new one."
            else:
                message += " Its painting is not in the outputs folder: upload it again."
        updates = [update for k, panel in panels.items() for update in (panel.fill(values) if k == kind else
                                                                          [gr.skip()] * len(panel.controls))]  # fmt: skip
        return [gr.Tabs(selected=kind), message, *updates]

    show = [shelf, names, summary, chosen, settings, note]
    refresh.click(listing, outputs=show, **studio.light("list_clips"))
    gallery_tab.select(listing, outputs=show, **studio.light("list_clips_on_open"))
    shelf.select(select, inputs=names, outputs=[chosen, settings, note], **studio.light("show_clip"))
    use.click(use_settings, inputs=chosen, outputs=[tabs, note, *(c for p in panels.values() for c in p.components)],
              **studio.light("use_settings"))  # fmt: skip
