"""`nadm studio`: a Gradio web studio where an artist makes, animates, loops and browses landscape videos (DESIGN.md
section 7). Modules: `app` (build_app, serve, the safe launch options), one module per tab (`text_tab`, `animate_tab`,
`interpolate_tab`, `gallery_tab`), `controls` (shared widgets), `forms` (form values -> checked pipeline arguments),
`gallery` (the outputs folder), `jobs` (one job at a time, cancel, errors as messages), `safety` (uploads, paths).

`forms`, `gallery` and `safety` need no Gradio; `build_app` and `serve` import it (the `studio` extra).
"""

# Gradio is imported only when the app is built (it is an optional dependency and slow to import).


def build_app(pipe, outputs, max_upload_mb: float = 50):
    """The studio as a `gr.Blocks` on a loaded `NADMPipeline` (nadm.studio.app.build_app)."""
    from nadm.studio.app import build_app as build

    return build(pipe, outputs, max_upload_mb)


def serve(pipe, outputs, host: str = "127.0.0.1", port: int = 7860, share: bool = False, max_upload_mb: float = 50) -> None:
    """Run the studio until interrupted (nadm.studio.app.serve)."""
    from nadm.studio.app import serve as run

    run(pipe, outputs, host, port, share, max_upload_mb)
