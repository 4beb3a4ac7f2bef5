"""Running the studio's work: one job at a time on the model, cancellable between sampler steps, and every failure a
message in the page (DESIGN.md section 7).

- Gradio's queue (`concurrency_id="model"`, limit 1) orders the jobs and shows each waiting visitor their place; the
  `Jobs` lock makes sure of it even when Gradio lets the next job start while a cancelled one is still unwinding.
- Cancel: Gradio can drop a job that waits but cannot stop a running function, so Stop sets the session's event and
  the job stops at its next progress tick (a sampler step, a decoded chunk, an interpolated pair): every tqdm
  `update` checks it (`install_cancel_hook`), the same bars `gr.Progress(track_tqdm=True)` shows in the page.
- Errors (`guarded`): a user's mistake (NADMError: a bad value, a bad upload) is `gr.Error` with its one line; a run
  that fails on its numbers (RunFailed) too; anything else is logged with its traceback on the server and shown as
  a short generic message. The app keeps serving either way.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from nadm.errors import NADMError, RunFailed

log = logging.getLogger("nadm.studio")
UNEXPECTED = "Something went wrong on the server (it is logged there); the studio is still running, try again."

_cancel: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("nadm_studio_cancel", default=None)


class Cancelled(Exception):
    """The visitor pressed Stop: the job ends at its next progress tick and writes nothing."""


def install_cancel_hook() -> None:
    """Make every tqdm bar's `update` raise Cancelled once the running job's Stop event is set (once per process;
    it wraps whatever `update` is there, Gradio's progress tracking included)."""
    import tqdm

    if getattr(tqdm.tqdm.update, "_nadm_cancel_hook", False):
        return
    update = tqdm.tqdm.update

    @functools.wraps(update)
    def checked_update(self, n=1):
        event = _cancel.get()
        if event is not None and event.is_set():
            raise Cancelled
        return update(self, n)

    checked_update._nadm_cancel_hook = True
    tqdm.tqdm.update = checked_update


class Jobs:
    """The model's lock and the Stop event of each session's running job."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}
        self._guard = threading.Lock()
        self.count = 0

    @contextmanager
    def run(self, session: str, what: str) -> Iterator[threading.Event]:
        """Hold the model for one job of `session`; Stop for that session sets the yielded event."""
        event = threading.Event()
        with self.lock:
            with self._guard:
                self.count += 1
                number = self.count
                self._running[session] = event
            token = _cancel.set(event)
            start = time.perf_counter()
            log.info("job %d (%s) started", number, what)
            try:
                yield event
                log.info("job %d (%s) finished in %.1f s", number, what, time.perf_counter() - start)
            except BaseException:
                log.info("job %d (%s) ended early after %.1f s", number, what, time.perf_counter() - start)
                raise
            finally:
                _cancel.reset(token)
                with self._guard:
                    if self._running.get(session) is event:
                        del self._running[session]

    def cancel(self, session: str) -> bool:
        """Ask the running job of `session` to stop; False when it has none."""
        with self._guard:
            event = self._running.get(session)
        if event is None:
            return False
        event.set()
        return True


def guarded(fn: Callable) -> Callable:
    """Wrap a Gradio handler: NADMError and RunFailed become `gr.Error(message)`, Cancelled a notice, anything else a
    logged traceback and a generic `gr.Error` (no stack trace ever reaches the page)."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Cancelled:
            gr.Warning("Stopped: nothing was written.")
            return gr.skip()
        except (NADMError, RunFailed) as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception:  # noqa: BLE001 - the page gets a generic message; the server log gets the traceback
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(UNEXPECTED, print_exception=False) from None

    return wrapper
