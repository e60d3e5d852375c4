"""The one exception type for mistakes a user can make.

The CLI turns a :class:`NaspruneError` into a single ``error: ...`` line and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NaspruneError(Exception):
    """A user-caused problem (bad name, bad config, missing data, corrupt file, ...)."""
