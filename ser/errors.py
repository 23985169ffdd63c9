"""User-facing errors.

Anything a user can cause (a wrong path, a broken file, an impossible split) raises a
``SERError`` whose message is one line naming the file or option and what to do. The
entry points print that line instead of a traceback.
"""


class SERError(Exception):
    """A problem the user can fix; its message is shown as-is, on one line."""


class DataError(SERError):
    """A corpus, audio file or split that cannot be used as configured."""
