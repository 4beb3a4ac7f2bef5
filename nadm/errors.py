"""The one exception type for user mistakes: the CLI prints it as a single line and exits with code 2."""


class NADMError(Exception):
    """A problem with the user's input (bad value, missing file, unreachable model): no traceback needed."""
