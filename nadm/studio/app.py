"""The studio app: four tabs on one loaded pipeline (Text to video, Animate a painting, Interpolate, Gallery), a queue
that runs one job at a time, and Gradio launched with safe defaults (DESIGN.md section 7).

    pipe = NADMPipeline.from_pretrained(motion="checkpoints/nadm")
    nadm.studio.serve(pipe, "outputs")              # http://127.0.0.1:7860, until Ctrl-C
    demo = nadm.studio.build_app(pipe, "outputs")  # or the gr.Blocks, to launch with `launch_options`

Safe defaults (`launch_options`): bound to 127.0.0.1; no share link unless asked; Gradio serves files only from the
outputs folder (`allowed_paths`) and its own upload cache, a private folder per server (`serve` makes it); uploads
over `max_upload_mb` are refused by Gradio, and every upload is checked as a painting or clip before use; errors are
one-line messages in the page (`jobs.guarded`), never a stack trace (`show_error=False`); no SSR node server, no
monitoring endpoint, no run history, no MCP server.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from nadm.studio.jobs import Jobs, install_cancel_hook

log = logging.getLogger("nadm.studio")
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_MAX_UPLOAD_MB = "127.0.0.1", 7860, 50
LIGHT_CONCURRENCY = 4  # listing, previews, upload checks: never wait behind a generation
QUEUE_LIMIT = 64  # events waiting at once; more are told the queue is full (a flood cannot exhaust the server)
INTRO = """# nadm studio
Chinese landscape-painting video: make a clip from a prompt, bring a painting to life, smooth a clip, and browse what
you made. Clips and their settings go to `{outputs}`. One job runs at a time; others wait with their place shown."""
CSS = ".gradio-container {max-width: 1200px !important}"


@dataclass
class Studio:
    """What the tabs share: the loaded pipeline, the outputs folder, the upload limit and the job runner."""

    pipe: Any  # nadm.pipeline.NADMPipeline (or anything with its __call__ and animate)
    outputs: Path
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    jobs: Jobs = field(default_factory=Jobs)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @staticmethod
    def light(api_name: str) -> dict[str, Any]:
        """Event options of a quick handler: its own small concurrency group, beside the model's queue."""
        return {"api_name": api_name, "concurrency_id": "light", "concurrency_limit": LIGHT_CONCURRENCY}

    def wire(self, make, stop, fn, inputs, outputs: list, status, api_name: str):
        """Make runs `fn` on the model's queue (one job at a time, place shown); Stop cancels this session's job."""
        event = make.click(fn, inputs=inputs, outputs=outputs, api_name=api_name, concurrency_id="model",
                           concurrency_limit=1)  # fmt: skip

        def stop_job(request: gr.Request) -> str:
            running = self.jobs.cancel(request.session_hash)
            return "Stopping at the next step; nothing will be written." if running else "Stopped."

        stop.click(stop_job, outputs=status, cancels=[event], queue=False, api_name=f"stop_{api_name}")
        return event

    def report(self, written: Path, result, seconds: float) -> str:
        """The status line of a finished clip."""
        from nadm.io import read_sidecar

        fps = (read_sidecar(written) or {}).get("fps", result.fps)
        h, w = result.frames.shape[1:3]
        return (f"Wrote **{written.name}**: {len(result.frames)} frames ({len(result.keyframes)} generated), {w}x{h}, "
                f"{fps:g} fps, seed {result.settings['seed']}, {seconds:.1f} s")  # fmt: skip


def build_app(pipe, outputs: str | os.PathLike, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB):
    """The studio as a `gr.Blocks` on a loaded pipeline, its queue set (one job at a time on the model); launch it with
    `demo.launch(**launch_options(outputs, ...))`, or use `serve`, which also gives Gradio a private upload folder."""
    from nadm.outputs import check_writable
    from nadm.studio import animate_tab, gallery_tab, interpolate_tab, text_tab
    from nadm.studio.safety import check_outputs_folder

    outputs = check_outputs_folder(outputs)
    check_writable(outputs)
    outputs.mkdir(parents=True, exist_ok=True)
    install_cancel_hook()
    studio = Studio(pipe, outputs, float(max_upload_mb))
    with gr.Blocks(title="nadm studio") as demo:
        gr.Markdown(INTRO.format(outputs=outputs))
        with gr.Tabs() as tabs:
            with gr.Tab("Text to video", id="generate", elem_id="tab-generate"):
                text = text_tab.build(studio)
            with gr.Tab("Animate a painting", id="animate", elem_id="tab-animate"):
                animate, _ = animate_tab.build(studio)
            with gr.Tab("Interpolate", id="interpolate", elem_id="tab-interpolate"):
                interpolate = interpolate_tab.build(studio)
            with gr.Tab("Gallery", id="gallery", elem_id="tab-gallery") as gallery:
                gallery_tab.build(studio, tabs, gallery, {"generate": text, "animate": animate, "interpolate": interpolate})
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_LIMIT)
    demo.studio = studio
    return demo


def launch_options(outputs: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False,
                   max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> dict[str, Any]:  # fmt: skip
    """`gr.Blocks.launch` arguments with the studio's safe defaults (module docstring)."""
    font = ["ui-sans-serif", "system-ui", "sans-serif"]  # local fonts: the page makes no third-party requests
    return dict(
        server_name=host, server_port=port, share=share, allowed_paths=[str(Path(outputs).expanduser().resolve())],
        max_file_size=int(max_upload_mb * 2**20), show_error=False, ssr_mode=False, enable_monitoring=False,
        mcp_server=False, run_history=False, footer_links=["gradio"], quiet=True, prevent_thread_lock=True,
        theme=gr.themes.Soft(font=font, font_mono=["ui-monospace", "monospace"]), css=CSS,
    )  # fmt: skip


def serve(pipe, outputs: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, ready=None) -> None:  # fmt: skip
    """Run the studio until interrupted (Ctrl-C, SIGTERM): Gradio's uploads and served copies go to a private folder
    (removed at the end), then `build_app` and launch with `launch_options`. `ready(url)` is called once it listens."""
    from nadm.studio.safety import private_cache

    cache = private_cache()
    saved = {name: os.environ.get(name) for name in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE")}
    os.environ["GRADIO_TEMP_DIR"], os.environ["GRADIO_EXAMPLES_CACHE"] = str(cache / "uploads"), str(cache / "examples")
    demo = None
    try:
        demo = build_app(pipe, outputs, max_upload_mb)
        _, url, share_url = demo.launch(**launch_options(outputs, host, port, share, max_upload_mb))
        log.info("serving %s on %s%s (uploads in %s, removed at exit)", demo.studio.outputs, url,
                 f" and {share_url}" if share_url else "", cache)  # fmt: skip
        if ready is not None:
            ready(url)
        while True:
            time.sleep(0.5)
    finally:
        if demo is not None:
            demo.close(verbose=False)
        shutil.rmtree(cache, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
