"""`nadm studio` over HTTP on 127.0.0.1 (the tiny models): files only from the outputs folder, upload limits and checks,
bad values as messages, one job at a time with the place shown, Stop; and the studio's pieces that need no server
(forms, the outputs folder, path containment, the still mask)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from studio_helpers import MAX_UPLOAD_MB, TINY, Api, env, free_port, studio  # noqa: F401 - studio is a fixture

from nadm.errors import NADMError
from nadm.io import read_sidecar, write_video


def tiny(prefix: str, prompt: str, **extra) -> dict:
    """A text-to-video form with the tiny sizes, by elem_id."""
    return {f"{prefix}-prompt": prompt, **{f"{prefix}-{k}": v for k, v in TINY.items()}, **extra}


def rows(*items) -> dict:
    """Prompt-travel rows as the page's table sends them."""
    return {"headers": ["frame", "prompt"], "data": [list(item) for item in items], "metadata": None}


def error_of(final: dict) -> str | None:
    """The message a failed event shows in the page (None when it succeeded)."""
    return None if final.get("success") else (final.get("output") or {}).get("error")


def made_with(outputs: Path, prompt: str) -> list[Path]:
    return sorted(p for p in outputs.glob("*.mp4") if (read_sidecar(p) or {}).get("prompt") == prompt)


# ------------------------------------------------------------------------------------------ files and uploads


def test_only_the_outputs_folder_is_served(studio, tmp_path):
    outputs = studio.outputs.resolve()
    clip = write_video(np.full((3, 32, 32, 3), 90, np.uint8), outputs / "served.mp4", 8, metadata={"prompt": "served"})
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")
    os.symlink(secret, outputs / "link-to-secret.mp4")
    os.symlink(tmp_path, outputs / "link-to-folder")
    api = Api(studio.url)
    ok = api.http.get(f"{studio.url}/gradio_api/file={clip}")
    assert ok.status_code == 200 and ok.content == clip.read_bytes()
    refused = [
        f"/gradio_api/file={secret}",  # absolute path outside
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=%2Fetc%2Fpasswd",  # URL-encoded
        f"/gradio_api/file={outputs}/../{tmp_path.name}/secret.txt",  # `..` out of the folder to a file that exists
        f"/gradio_api/file={outputs}/..%2F..%2Fetc%2Fpasswd",
        f"/gradio_api/file={outputs}/%2e%2e/%2e%2e/etc/passwd",
        f"/gradio_api/file={outputs}/%252e%252e/%252e%252e/etc/passwd",  # double-encoded
        f"/gradio_api/file={outputs}/link-to-secret.mp4",  # a link out of the folder
        f"/gradio_api/file={outputs}/link-to-folder/secret.txt",
        f"/gradio_api/file={studio.models / 'base' / 'model_index.json'}",
        "/gradio_api/file=/proc/self/environ",
        "/gradio_api/file=file:///etc/passwd",
        "/gradio_api/file=//etc/passwd",
        "/gradio_api/file=../../../../../../etc/passwd",
        "/gradio_api/file/etc/passwd",
        "/file=/etc/passwd",
        f"/gradio_api/file=http://127.0.0.1:{studio.url.rsplit(':', 1)[1]}/config",  # no fetching through the server
    ]
    for path in refused:
        response = api.http.get(f"{studio.url}{path}")
        assert response.status_code in (403, 404), (path, response.status_code)
        assert b"not for the page" not in response.content and b"root:" not in response.content, path
    assert api.http.get(f"{studio.url}/").status_code == 200


def test_uploads_over_the_limit_or_not_images_are_refused_with_a_message(studio):
    api = Api(studio.url)
    big = api.upload("big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_UPLOAD_MB * 2**20 + 1))
    assert big.status_code == 413 and "maximum allowed size" in big.text
    fake = api.upload("painting.png", b"a text file named like a painting\n" * 20)
    assert fake.status_code == 200
    path = fake.json()[0]
    checked = api.submit("check_painting", {"anim-upload": {"path": path, "meta": {"_type": "gradio.FileData"},
                                                            "orig_name": "painting.png"}}).wait()  # fmt: skip
    message = error_of(checked)
    assert message and "painting.png" in message and "not an image" in message
    assert str(Path(path).parent) not in message  # the server's folders stay out of the page
    # a clip that is not a video: refused by the interpolate tab with its name
    video = api.upload("clip.mp4", b"not a video at all" * 30).json()[0]
    done = api.submit("interpolate", {"interp-upload": {"path": video, "meta": {"_type": "gradio.FileData"},
                                                        "orig_name": "clip.mp4"}}).wait()  # fmt: skip
    assert "clip.mp4" in error_of(done) and str(Path(video).parent) not in error_of(done)
    # a path the visitor did not upload is refused by Gradio before any handler runs (a generic error, no trace)
    forged = api.submit("check_painting", {"anim-upload": {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}}).wait()
    assert not forged["success"] and "Traceback" not in json.dumps(forged)
    assert api.http.get(f"{studio.url}/config").status_code == 200  # still serving


def test_bad_values_are_one_line_messages_and_the_server_keeps_serving(studio):
    api = Api(studio.url)
    cases = {
        "height must be a positive multiple of 8": tiny("t2v", "mist", **{"t2v-height": 60}),
        "the prompt is empty": tiny("t2v", "   "),
        "travel key 9 is outside the clip's frames 0..3": tiny("t2v", "", **{"t2v-travel": rows((0, "spring"), (9, "autumn"))}),
        "give a prompt or prompt-travel rows, not both": tiny("t2v", "mist", **{"t2v-travel": rows((0, "spring"))}),
        "context must be an integer >= 2": tiny("t2v", "mist", **{"t2v-context": "1"}),
        "context must be a whole number": tiny("t2v", "mist", **{"t2v-context": "one"}),
        "greater than maximum value 256": tiny("t2v", "mist", **{"t2v-frames": 100000}),
        "plms is not in the list of choices": tiny("t2v", "mist", **{"t2v-sampler": "plms"}),
    }
    for expected, form in cases.items():
        message = error_of(api.submit("generate", form).wait())
        assert message is not None and expected in message and "\n" not in message, (expected, message)
    assert "Upload a painting first" in error_of(api.submit("animate", {"anim-frames": 4}).wait())
    assert api.http.get(f"{studio.url}/").status_code == 200


# ------------------------------------------------------------------------------------------ the queue and Stop


def test_two_sessions_at_once_both_clips_are_made_one_after_the_other(studio):
    api = Api(studio.url)
    before = len(studio.jobs())
    first = api.submit("generate", tiny("t2v", "queue test: first", **{"t2v-steps": 8}))
    second = api.submit("generate", tiny("t2v", "queue test: second", **{"t2v-steps": 8}))
    results = [first.wait(), second.wait()]
    assert all(r["success"] for r in results), results
    for prompt in ("queue test: first", "queue test: second"):
        (clip,) = made_with(studio.outputs, prompt)
        assert Path(f"{clip}.json").is_file()
    # the server ran them one after the other, never overlapping
    time.sleep(0.5)
    jobs = studio.jobs()[before:]
    assert [line.split(") ")[1].split()[0] for line in jobs] == ["started", "finished", "started", "finished"], jobs
    waited, ran = sorted((first, second), key=lambda c: c.seen("process_starts")[0][0])[::-1]
    assert waited.seen("process_starts")[0][0] >= ran.seen("process_completed")[0][0] - 0.5
    # the one that waited was told its place in the queue (rank 0: next in line; the page shows rank + 1 / size)
    places = [m for t, m in waited.seen("estimation") if t <= waited.seen("process_starts")[0][0]]
    assert places and all(m["rank"] is not None and m["queue_size"] >= 1 for m in places), waited.messages


def test_stop_ends_the_running_job_and_writes_nothing(studio):
    api = Api(studio.url)
    before = len(studio.jobs())
    call = api.submit("generate", tiny("t2v", "stop test", **{"t2v-steps": 400, "t2v-interpolate": False}))
    deadline = time.monotonic() + 60
    while not call.seen("progress") and time.monotonic() < deadline:  # sampler steps are running
        time.sleep(0.1)
    assert call.seen("progress"), call.messages
    api.cancel(call, "stop_generate")
    deadline = time.monotonic() + 60
    while not any("ended early" in line for line in studio.jobs()[before:]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any("ended early" in line for line in studio.jobs()[before:]), studio.jobs()[before:]
    assert made_with(studio.outputs, "stop test") == []
    assert not any("unexpected error" in line for line in studio.log), "".join(studio.log)[-2000:]
    assert not [p for p in studio.outputs.iterdir() if p.name.startswith(".")]  # no temporaries left
    again = api.submit("generate", tiny("t2v", "after stop")).wait()  # the model is free again
    assert again["success"] and made_with(studio.outputs, "after stop")


# ------------------------------------------------------------------------------------------ the command


def test_command_refuses_bad_options_before_loading(tmp_path):
    busy = free_port()
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy))
        holder.listen()
        for args, expected in ((["--port", str(busy)], "cannot listen on 127.0.0.1"),
                               (["--max-upload-mb", "0"], "--max-upload-mb must be a positive number"),
                               (["--outputs", str(Path.home())], "would serve all of it"),
                               (["--outputs", "/"], "would serve all of it")):  # fmt: skip
            run = subprocess.run([sys.executable, "-m", "nadm", "studio", "--outputs", str(tmp_path / "o"), *args],
                                 capture_output=True, text=True, env=env(), timeout=120)  # fmt: skip
            assert run.returncode == 2 and expected in run.stderr and "Traceback" not in run.stderr, run.stderr


# ------------------------------------------------------------------------------------------ pieces, no server


def test_contained_refuses_paths_out_of_the_folder(tmp_path):
    from nadm.studio.safety import UploadRefused, contained

    root = tmp_path / "outputs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"x")
    os.symlink(tmp_path, root / "out-link")
    assert contained(root, "sub/a.mp4") == (root / "sub" / "a.mp4").resolve()
    for name in ("../x", "/etc/passwd", "sub/../../x", "out-link/outputs/../x", "out-link"):
        with pytest.raises(UploadRefused):
            contained(root, name)


def test_forms_use_the_command_lines_checks():
    from nadm.studio import forms

    form = {"prompt": "", "negative": "", "frames": 48.0, "steps": 2, "guidance": 8, "seed": 7, "random_seed": False,
            "sampler": "ddim", "interpolate": True, "flow": "dis", "loop": True, "context": "16", "overlap": "",
            "windows": "static", "window_batch": None, "travel_interp": "slerp", "motion_scale": 0.5,
            "travel": [[0, "spring mist"], [None, ""], [24.0, "autumn rain"]], "height": 64, "width": 64}  # fmt: skip
    args, sampler = forms.text_to_video(form)
    assert args["prompt"] == {0: "spring mist", 24: "autumn rain"} and args["num_frames"] == 48 and args["seed"] == 7
    assert args["context"] == 16 and args["overlap"] is None and args["loop"] and sampler == "ddim"
    for change, message in (({"travel": [[1.5, "x"]]}, "must be a whole number"), ({"travel": [[None, "x"]]}, "has no frame"),
                            ({"guidance": 0.5}, "guidance must be"), ({"random_seed": True, "width": 2048}, "up to 1024 px"),
                            ({"overlap": "16"}, "overlap"), ({"flow": "../x"}, "unknown flow")):  # fmt: skip
        with pytest.raises(NADMError, match=message):
            forms.text_to_video({**form, **change})
    assert forms.interpolation({"method": "crossfade", "flow": "dis", "times": 2, "loop": False})["flow"] is None
    with pytest.raises(NADMError, match="times must be from 1 to 4"):
        forms.interpolation({"method": "sofp", "flow": "dis", "times": 9, "loop": False})


def test_gallery_lists_newest_first_and_maps_settings_back(tmp_path):
    from nadm.studio.gallery import INPUTS, list_clips, new_clip_path, settings_for

    frames = np.full((2, 32, 32, 3), 100, np.uint8)
    old = write_video(frames, tmp_path / "old.gif", 8, metadata={"prompt": {"0": "spring", "2": "autumn"}, "seed": 1,
                                                                 "keyframes": 4, "travel": {"interpolation": "slerp"},
                                                                 "windows": {"context": 16, "overlap": 4, "schedule": "one window"}})  # fmt: skip
    os.utime(old, (1, 1))
    new = write_video(frames, tmp_path / "sub" / "new.mp4", 8, metadata={"interpolation": {"command": "interpolate",
                      "method": "crossfade", "flow": None, "times": 2, "loop": True}})  # fmt: skip
    write_video(frames, tmp_path / INPUTS / "ignored.mp4", 8)
    (tmp_path / "no-sidecar.mp4").write_bytes(b"x")
    os.symlink(new, tmp_path / "link.mp4")
    os.symlink(f"{new}.json", tmp_path / "link.mp4.json")
    clips = list_clips(tmp_path)
    assert [c.name for c in clips] == ["sub/new.mp4", "old.gif"] and [c.kind for c in clips] == ["interpolate", "generate"]
    kind, values = settings_for(clips[1].settings)
    assert kind == "generate" and values["travel"] == [[0, "spring"], [2, "autumn"]] and values["prompt"] == ""
    assert values["seed"] == 1 and not values["random_seed"] and values["windows"] == "shifting" and values["context"] == 16
    assert values["travel_interp"] == "slerp" and values["frames"] == 4
    assert settings_for(clips[0].settings) == ("interpolate", {"method": "crossfade", "flow": "dis", "times": 2, "loop": True})
    names = {new_clip_path(tmp_path, "generate", "Ink: mountains!") for _ in range(50)}
    assert len(names) == 50 and all(n.name.endswith(".mp4") and "-generate-ink-mountains-" in n.name for n in names)


def test_still_mask_is_what_was_brushed():
    pytest.importorskip("gradio")
    from nadm.studio.animate_tab import still_mask

    layer = np.zeros((40, 60, 4), np.uint8)
    assert still_mask({"background": None, "layers": [layer], "composite": None}) is None
    layer[5:10, 20:30] = (255, 255, 255, 200)
    mask = still_mask({"layers": [layer]})
    assert mask.shape == (40, 60) and mask.dtype == np.uint8
    assert (mask[5:10, 20:30] == 255).all() and mask.sum() == 255 * 50


def test_guarded_turns_failures_into_page_messages(caplog):
    gr = pytest.importorskip("gradio")
    from nadm.errors import RunFailed
    from nadm.studio.jobs import UNEXPECTED, Cancelled, guarded

    def failing(error):
        @guarded
        def handler():
            raise error
        return handler

    for error, shown in ((NADMError("height must be a multiple of 8"), "height must be a multiple of 8"),
                         (RunFailed("denoising produced NaN/inf latents"), "denoising produced NaN/inf latents"),
                         (RuntimeError("CUDA out of memory at /secret/path"), UNEXPECTED)):  # fmt: skip
        with pytest.raises(gr.Error) as raised:
            failing(error)()
        assert raised.value.message == shown
    assert "CUDA out of memory at /secret/path" in caplog.text and "Traceback" in caplog.text  # logged on the server
    with pytest.warns(UserWarning, match="Stopped: nothing was written"):  # outside a page: a Python warning
        assert failing(Cancelled())() == gr.skip()


def test_stop_hook_stops_a_tqdm_loop_only_for_the_stopped_job():
    from tqdm import tqdm

    from nadm.studio.jobs import Cancelled, Jobs, install_cancel_hook

    install_cancel_hook()
    jobs = Jobs()
    with jobs.run("other", "a job nobody stops"):
        assert sum(1 for _ in tqdm(range(5), disable=True)) == 5
        bar = tqdm(total=3, disable=True)
        bar.update()
    with pytest.raises(Cancelled), jobs.run("visitor", "stopped job"):
        bar = tqdm(total=100, disable=True)
        bar.update()
        assert jobs.cancel("visitor") and not jobs.cancel("nobody")
        bar.update()  # the next tick after Stop raises
    assert not jobs.cancel("visitor")  # the job is over
