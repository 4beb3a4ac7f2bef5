"""The studio on the tiny random models, as `nadm studio` in a subprocess on a free 127.0.0.1 port, and a small client
for Gradio's HTTP API (the queue's join/data stream, as the page uses it). Shared by test_studio.py and
test_studio_browser.py through the session-scoped `studio` fixture."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_UPLOAD_MB = 2  # small, so the over-limit upload in the tests is small too
# Tiny settings every generation in the tests uses: a clip takes about a second on the tiny models.
TINY = {"frames": 4, "steps": 2, "height": 64, "width": 64}


def env() -> dict:
    """The subprocess environment: this checkout's nadm first, offline, one thread (2-core machine)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class StudioServer:
    """`nadm studio` as a subprocess; `url` once it says where it listens; `log` its stderr lines so far."""

    models: Path
    outputs: Path
    proc: subprocess.Popen | None = None
    url: str = ""
    log: list = field(default_factory=list)

    def start(self, timeout: float = 180) -> "StudioServer":
        port = free_port()
        cmd = [sys.executable, "-m", "nadm", "studio", "--base", str(self.models / "base"), "--motion",
               str(self.models / "motion"), "--outputs", str(self.outputs), "--port", str(port), "--device", "cpu",
               "--max-upload-mb", str(MAX_UPLOAD_MB)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                                     start_new_session=True)  # fmt: skip
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or "serving on http://" not in line[0]:
            self.stop()
            raise RuntimeError(f"nadm studio did not start: {line} {''.join(self.log)[-3000:]}")
        self.url = line[0].split("serving on ")[1].split()[0].rstrip("/")
        return self

    def jobs(self) -> list[str]:
        """The server's job log lines ('job N (what) started|finished|ended early ...'), in order."""
        return [line.split("nadm studio: ", 1)[1].strip() for line in list(self.log) if "nadm studio: job " in line]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="session")
def studio(tmp_path_factory):
    """The studio on tiny models, started once for the test session (both studio test files)."""
    pytest.importorskip("gradio", reason="the studio needs gradio (pip install 'nadm[studio]')")
    from nadm.tiny import build_tiny_base, build_tiny_motion

    models = tmp_path_factory.mktemp("studio-models")
    build_tiny_base(models / "base")
    build_tiny_motion(models / "motion")
    server = StudioServer(models, tmp_path_factory.mktemp("studio-outputs")).start()
    yield server
    server.stop()
    # the private upload folder does not outlive the server
    (cache,) = [line.split("(uploads in ")[1].split(",")[0] for line in server.log if "(uploads in " in line]
    assert not Path(cache).exists(), f"{cache} was left behind"


# ------------------------------------------------------------------------------------------------ Gradio's API


class Api:
    """Calls the studio's events as the page does: values by elem_id on top of the page's defaults, through the queue."""

    def __init__(self, url: str):
        import httpx

        self.url = url
        self.http = httpx.Client(timeout=60)
        config = self.http.get(f"{url}/config").json()
        self.components = {c["id"]: c for c in config["components"]}
        self.by_elem = {c["props"].get("elem_id"): c["id"] for c in config["components"] if c["props"].get("elem_id")}
        self.events = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}

    def upload(self, name: str, data: bytes):
        """POST /gradio_api/upload; the response."""
        return self.http.post(f"{self.url}/gradio_api/upload", files={"files": (name, data, "application/octet-stream")})

    def payload(self, api_name: str, values: dict) -> tuple[int, list]:
        """(fn_index, data): the event's inputs in order, the page's default values with `values` (by elem_id) on top."""
        event = self.events[api_name]
        chosen = {self.by_elem[k]: v for k, v in values.items()}
        data = [chosen.get(i, self.components[i]["props"].get("value")) for i in event["inputs"]]
        return event["id"], data

    def submit(self, api_name: str, values: dict, session: str | None = None) -> "Call":
        fn_index, data = self.payload(api_name, values)
        return Call(self, fn_index, data, session or uuid.uuid4().hex[:11]).start()

    def cancel(self, call: "Call", stop_api: str) -> None:
        """What Stop does in the page: its own (unqueued) event, then Gradio's cancel of the running event."""
        stop = self.events[stop_api]
        self.http.post(f"{self.url}/gradio_api/run/{stop_api}", json={"data": [], "fn_index": stop["id"],
                                                                       "session_hash": call.session})  # fmt: skip
        self.http.post(f"{self.url}/gradio_api/cancel", json={"session_hash": call.session, "fn_index": call.fn_index,
                                                               "event_id": call.event_id})  # fmt: skip


class Call:
    """One event through Gradio's queue: join, then read the session's message stream in a thread."""

    def __init__(self, api: Api, fn_index: int, data: list, session: str):
        self.api, self.fn_index, self.data, self.session = api, fn_index, data, session
        self.messages: list[tuple[float, dict]] = []  # (time received, message)
        self.done = threading.Event()
        self.event_id = None

    def start(self) -> "Call":
        import httpx

        body = {"data": self.data, "fn_index": self.fn_index, "session_hash": self.session, "event_data": None,
                "trigger_id": None}  # fmt: skip
        response = self.api.http.post(f"{self.api.url}/gradio_api/queue/join", json=body)
        response.raise_for_status()
        self.event_id = response.json()["event_id"]

        def read():
            try:
                url = f"{self.api.url}/gradio_api/queue/data"
                with httpx.stream("GET", url, params={"session_hash": self.session}, timeout=120) as stream:
                    for line in stream.iter_lines():
                        if line.startswith("data:"):
                            message = json.loads(line[5:])
                            self.messages.append((time.monotonic(), message))
                            if message.get("msg") in ("process_completed", "close_stream", "unexpected_error"):
                                break
            finally:
                self.done.set()

        threading.Thread(target=read, daemon=True).start()
        return self

    def wait(self, timeout: float = 120) -> dict:
        """The final message (process_completed: `success`, `output`)."""
        assert self.done.wait(timeout), f"no answer in {timeout} s: {self.messages}"
        final = [m for _, m in self.messages if m.get("msg") == "process_completed"]
        assert final, self.messages
        return final[-1]

    def seen(self, kind: str) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.messages if m.get("msg") == kind]
