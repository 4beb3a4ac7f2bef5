"""The one exception type for user mistakes (the CLI prints it as a single line and exits with code 2), and the
one way to tell the user something on the side (`note`, on stderr)."""

import sys


class NADMError(Exception):
    """A problem with the user's input (bad value, missing file, unreachable model): no traceback needed."""


def note(message: str) -> None:
    """A remark for the user on stderr (stdout stays for results)."""
    print(f"nadm: {message}", file=sys.stderr, flush=True)
