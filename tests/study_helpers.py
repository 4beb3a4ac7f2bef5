"""Shared by the study tests: tiny clip folders as `nadm compare` writes them, a study database, a live server
subprocess on 127.0.0.1, and a simulated participant speaking HTTP."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from nadm.io import write_video

SYSTEMS = ("nadm", "animatediff", "no-sc")
PROMPTS = ("misty mountains above a winding river", "a boat on a lake in the rain")
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
REPO = Path(__file__).resolve().parents[1]


def make_clips(root: Path, systems=SYSTEMS, prompts=PROMPTS, seeds=(0,)) -> dict[str, Path]:
    """One tiny random clip per system, prompt and seed in root/NAME/PPPP_seedS.(mp4|gif) with nadm sidecars."""
    rng = np.random.default_rng(0)
    out = {}
    for s, name in enumerate(systems):
        out[name] = root / name
        for i, prompt in enumerate(prompts):
            for seed in seeds:
                frames = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
                suffix = ".gif" if s == 2 else ".mp4"
                write_video(frames, root / name / f"{i:04d}_seed{seed}{suffix}", fps=4,
                            metadata={"prompt": prompt, "seed": seed, "motion": name})
    return out


def make_study(path: Path, folders: dict[str, Path], k: int | None = 3, checks: int = 1, seed: int = 7,
               reference: str | None = None) -> Path:
    """A study database over the folders."""
    from nadm.study.design import DesignOptions, create_study, plan_study

    plan = plan_study(dict(folders), reference=reference)
    return create_study(path, plan, DesignOptions(k, checks, reference, seed))


def add_participants(path: Path, n: int) -> list[tuple[int, str]]:
    """n invited participants: [(id, token)]."""
    from nadm.study import db
    from nadm.study.sessions import add_participant

    con = db.connect(path)
    try:
        return [add_participant(con) for _ in range(n)]
    finally:
        con.close()


def env() -> dict[str, str]:
    """The environment for a subprocess running this checkout's nadm."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


class LiveServer:
    """`nadm study serve DB --port 0` as a subprocess; `url` once it printed where it listens."""

    def __init__(self, database: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "nadm", "study", "serve", str(database), "--port", "0",
               "--admin-token", ADMIN_TOKEN, *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                                     start_new_session=True)
        self.url = self._wait_for_url(timeout=60)
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _wait_for_url(self, timeout: float) -> str:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or "http://" not in line[0]:
            self.proc.kill()
            raise RuntimeError(f"the study server did not start: {line} {self.proc.stderr.read()}")
        return line[0].split(" on ")[1].split()[0].rstrip("/")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def side_for(con: sqlite3.Connection, pid: int, position: int, preferred: str) -> str:
    """The side ('left'/'right') showing system a or b at a participant's slot, or 'none'."""
    if preferred == "none":
        return "none"
    a_left = con.execute("SELECT a_left FROM slot WHERE participant_id = ? AND position = ?",
                         (pid, position)).fetchone()[0]
    return "left" if (preferred == "a") == bool(a_left) else "right"


def run_participant(client, url: str, token: str, acked: list, latencies: list, stop: threading.Event,
                    choose=lambda state, q: ("left", "right", "none")[(state["pair"] + len(q)) % 3]) -> None:
    """Answer every pair of one participant over HTTP, in a bounded loop: read the state, post the answer;
    (token, slot) goes to `acked` only when the server acknowledged it. Stops on a connection error."""
    import httpx

    for _ in range(64):
        if stop.is_set():
            return
        try:
            state = client.get(f"{url}/p/{token}", headers={"accept": "application/json"}).json()
            if state["next"] is None:
                return
            nxt = state["next"]
            form = {"slot": nxt["slot"], "pair": nxt["pair"],
                    **{f"q_{q}": choose(nxt, q) for q in ("text", "temporal", "style", "overall")}}
            t0 = time.perf_counter()
            r = client.post(f"{url}/p/{token}/answer", data=form, headers={"accept": "application/json"})
            took = time.perf_counter() - t0
        except httpx.TransportError:
            return
        if r.status_code != 200:
            raise AssertionError(f"answer refused: {r.status_code} {r.text}")
        acked.append((token, nxt["slot"]))
        latencies.append(took)
    raise AssertionError("a participant did not finish within 64 requests")
