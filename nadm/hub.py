"""Reaching the Hugging Face hub: one short probe before the first download, offline mode when it does not answer.

Without `HF_HUB_OFFLINE=1`, huggingface_hub retries an unreachable hub for half a minute or more per file before it
gives up. nadm asks the hub once, with a `PROBE_TIMEOUT_S` limit, before the first thing it would fetch; when no
answer comes, it says so in one line on stderr and turns offline mode on for the rest of the run, so models in the
local cache still load and missing ones fail at once with nadm's clear error.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from nadm.errors import note

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = ("1", "true", "yes", "on")

_reachable: bool | None = None  # the probe's answer, once per process


def is_offline() -> bool:
    """True when the environment turns the hub off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set true)."""
    return any(os.environ.get(flag, "").strip().lower() in _TRUE for flag in OFFLINE_FLAGS)


def endpoint() -> str:
    """The hub's address: HF_ENDPOINT, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the server at `url` answers an HTTP HEAD within `timeout` seconds (any status counts)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, with an error status
    except (urllib.error.URLError, OSError, ValueError):
        return False


def go_offline() -> None:
    """Offline mode for the rest of this process: the environment (read by libraries imported later) and the flags
    huggingface_hub, transformers and diffusers already read at import."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("huggingface_hub", "diffusers", "transformers") and getattr(module, "HF_HUB_OFFLINE", None) is False:
            module.HF_HUB_OFFLINE = True


def offline_unless_reachable() -> bool:
    """Before fetching from the hub: probe it once per run; when it does not answer, say so and go offline.
    Returns whether the hub may be used (False when offline, by the environment or by the probe)."""
    global _reachable
    if is_offline():
        return False
    if _reachable is None:
        _reachable = probe(endpoint())
        if not _reachable:
            note(
                f"the Hugging Face hub ({endpoint()}) did not answer within {PROBE_TIMEOUT_S:g} s: working offline "
                "from the local cache (set HF_HUB_OFFLINE=1 to skip this check)"
            )
            go_offline()
    return _reachable


__all__ = ["endpoint", "go_offline", "is_offline", "offline_unless_reachable", "probe"]
