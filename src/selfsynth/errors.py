"""Errors that the CLI turns into one clear line and a non-zero exit, never a traceback.

Anything raised for bad input (a file, a field, a setting) is a ``SelfsynthError`` whose message
names the culprit and the fix. Bugs stay ordinary exceptions so they keep their traceback.
"""

from __future__ import annotations


class SelfsynthError(Exception):
    """Bad input or an unmet precondition; the message is meant for the user as is."""

    exit_code = 2


class ConfigError(SelfsynthError):
    """A malformed or unknown setting."""


class DataError(SelfsynthError):
    """A malformed dataset, image, record or concept file."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(where + message)
        self.file = file
        self.line = line


class ExpertError(SelfsynthError):
    """The concept source (an LLM endpoint) failed after its retries or answered garbage."""
