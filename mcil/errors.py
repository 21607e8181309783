"""User-facing errors. The CLI prints their message (one line that names the thing and the fix)
instead of a traceback; everything else is a bug and keeps its traceback."""


class UserError(Exception):
    """Bad input from the user: a path, a file, a config value. The message says what to do."""


class DataError(UserError, ValueError):
    """A dataset, manifest, cache or media file is missing, corrupt or inconsistent."""


class NonFiniteLossError(UserError, FloatingPointError):
    """A loss became NaN or infinite (usually a too-high learning rate): the run stops, no result."""
