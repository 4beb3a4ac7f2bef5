"""`nadm studio`: the web studio for artists (Gradio; DESIGN.md section 7) on one pipeline loaded at start."""

# Gradio, torch and the pipeline are imported inside the command (CLI start-up time).

from __future__ import annotations

import logging
import math
import socket
from pathlib import Path

import click

from nadm.commands.animate import generate_options
from nadm.errors import NADMError, note

MODEL_OPTIONS = ("base", "base_config", "motion", "loras", "motion_loras", "device", "dtype", "vae_slicing", "vae_tiling",
                 "cpu_offload")  # fmt: skip
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_port(host: str, port: int) -> None:
    """NADMError now, before the model loads, when nothing can listen on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: closed connections do not count
        try:
            probe.bind((host, port))
        except OSError as e:
            raise NADMError(f"cannot listen on {host}:{port}: {e.strerror or e} (choose another --port or --host)") from None


@click.command()
@click.option("--outputs", type=click.Path(path_type=Path), default=Path("studio-outputs"), show_default=True,
              help="Folder of the clips and their sidecars; the only folder the studio serves files from.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (other than loopback: a warning).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to listen on.")
@click.option("--share", is_flag=True, help="Also make a public link through Gradio's share servers (off by default).")
@click.option("--max-upload-mb", type=float, default=50.0, show_default=True, help="Largest painting or clip upload, in MB.")
def studio(outputs: Path, host: str, port: int, share: bool, max_upload_mb: float, **model) -> None:
    """Serve the web studio: text to video, animate a painting, interpolate, and the gallery of OUTPUTS (Ctrl-C stops)."""
    from nadm.commands.generate import check_shared_options
    from nadm.commands.options import parse_motion_loras
    from nadm.outputs import check_writable
    from nadm.studio.safety import check_outputs_folder

    # 1. everything that can be checked before the model loads
    if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
        raise NADMError(f"--max-upload-mb must be a positive number, got {max_upload_mb}")
    check_port(host, port)
    check_outputs_folder(outputs)
    check_writable(outputs)
    loras = check_shared_options(model["base"], model["base_config"], model["loras"], "off", model["cpu_offload"], None, 1.0)
    motion_loras = parse_motion_loras(model["motion_loras"])
    try:
        import gradio  # noqa: F401 - the studio's optional dependency
    except ImportError:
        raise NADMError("nadm studio needs Gradio: pip install 'nadm[studio]'") from None
    if host not in LOOPBACK:
        note(f"warning: listening on {host}: anyone who can reach it can use the studio and read {outputs}; there is no login")
    if share:
        note(f"warning: --share makes a public link through Gradio's servers: anyone with it can use the studio and read {outputs}")

    # 2. the pipeline, loaded once and kept (without --motion: AnimateDiff's adapter, said on stderr)
    from nadm.pipeline import NADMPipeline

    pipe = NADMPipeline.from_pretrained(
        model["base"], motion=model["motion"], loras=loras, device=model["device"], dtype=model["dtype"],
        base_config=model["base_config"], cpu_offload=model["cpu_offload"], vae_slicing=model["vae_slicing"],
        vae_tiling=model["vae_tiling"], progress=True, motion_loras=motion_loras,
    )  # fmt: skip

    # 3. serve until interrupted (Ctrl-C / SIGTERM unwind through serve's cleanup)
    from nadm.studio.app import serve

    logging.basicConfig(format="nadm studio: %(message)s")
    logging.getLogger("nadm.studio").setLevel(logging.INFO)

    def ready(url: str) -> None:
        click.echo(f"nadm studio: serving on {url} (outputs: {outputs.resolve()}); Ctrl-C stops it", nl=True)

    try:
        serve(pipe, outputs, host, port, share, max_upload_mb, ready=ready)
    except OSError as e:
        raise NADMError(f"cannot serve on {host}:{port}: {e}") from None


studio.params.extend(generate_options(MODEL_OPTIONS))
