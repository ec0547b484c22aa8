"""Errors a user can act on.

Every error raised for bad input names the file, field or record at fault. The
`detseg` command prints these as one line (no traceback) and exits non-zero.
"""


class DatasetError(ValueError):
    """A dataset file or record is malformed; the message names which and where."""
