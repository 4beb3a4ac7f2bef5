"""nadm's exceptions, one per kind of failure (the policy they follow is in the package docstring, nadm/__init__.py),
and the one way to tell the user something on the side (`note`, on stderr)."""

import sys


class NADMError(Exception):
    """A problem the user can fix (bad value, missing or damaged file, unreachable model): one line, exit code 2."""


class InvalidRequest(NADMError, ValueError):
    """A bad argument value: a ValueError to Python callers, a one-line error (exit 2) on the command line."""


class RunFailed(RuntimeError):
    """A valid request whose run failed on its own numbers (NaN/inf latents, a diverging loss): one line, exit 3."""


def note(message: str) -> None:
    """A remark for the user on stderr (stdout stays for results)."""
    print(f"nadm: {message}", file=sys.stderr, flush=True)
