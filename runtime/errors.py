"""The one exception type users see: its message is printed as a single line, exit code 2."""


class LpgbError(Exception):
    """A user-facing error (bad input, wrong model folder, missing dependency)."""
