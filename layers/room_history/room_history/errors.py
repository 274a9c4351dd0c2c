"""Typed errors of the core; the API maps each to one HTTP status in one place."""

from __future__ import annotations


class HistoryError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidInput(HistoryError):
    """A request field is missing, of the wrong type or out of bounds."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class TurnTooLarge(HistoryError):
    """A serialized turn would exceed MAX_TURN_BYTES."""


class MessageNotFound(HistoryError):
    """No turn in the window carries the requested message id."""


class VersionMismatch(HistoryError):
    """The caller's If-Match version is not the room's version."""

    def __init__(self, expected: int, actual: int):
        super().__init__(f"If-Match names version {expected} but the room is at version {actual}")
        self.version = actual


class WriteConflict(HistoryError):
    """The compare-and-set kept losing to concurrent writers."""


class StoreUnavailable(HistoryError):
    """Redis could not be reached, timed out, or is failing over."""


class TemplateFailure(HistoryError):
    """The configured system prompt template does not compile or render."""
