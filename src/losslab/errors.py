"""losslab's error types: raised for bad user input; the CLI prints them as one line and exits with status 2."""
from __future__ import annotations

import os


class LosslabError(ValueError):
    """Bad input or an unusable state, described in one line (shape, key mismatch, empty data, NaN loss...)."""


class DamagedFile(LosslabError):
    """A saved file that is truncated, not parseable or whose content hash does not match.

    Attributes:
        path: the file.
        reason: what is wrong with it, in a few words.

    Code that can recompute the file catches it, says so in one line (:meth:`recomputing`) and
    recomputes; elsewhere it is a one-line error that says how to start over.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path} is damaged ({reason}); delete it or rerun with --force to recompute")

    def recomputing(self) -> str:
        """The one line printed by code that recomputes the file instead of failing."""
        return f"losslab: {self.path} is damaged ({self.reason}); recomputing it"
