"""Typed errors of the core; the API maps each class to one HTTP status in one place.

Every message reads "<field>: <what is wrong>", where the field is the request field at fault or, for
failures no field caused, the part that failed (`redis`, `template`).
"""

from __future__ import annotations

from typing import Any


class HistoryError(Exception):
    """Base of every error the core raises on purpose."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message

    @property
    def details(self) -> dict[str, Any]:
        """Extra fields of the error body, beside "error" and "message"."""
        return {}


class InvalidInput(HistoryError):
    """A request field is missing, of the wrong type or out of bounds."""


class TurnTooLarge(HistoryError):
    """A serialized turn would exceed MAX_TURN_BYTES."""


class MessageNotFound(HistoryError):
    """No turn in the window carries the requested message id."""

    def __init__(self, message_id: str, field: str = "message_id"):
        super().__init__(field, f"no turn with message id {message_id!r} in the window")


class VersionMismatch(HistoryError):
    """The caller's If-Match version is not the room's version."""

    def __init__(self, expected: int, actual: int):
        super().__init__("If-Match", f"names version {expected} but the room is at version {actual}")
        self.version = actual

    @property
    def details(self) -> dict[str, Any]:
        return {"version": self.version}


class WriteConflict(HistoryError):
    """The compare-and-set kept losing to concurrent writers."""


class StoreUnavailable(HistoryError):
    """Redis could not be reached, timed out, or is failing over."""

    def __init__(self, reason: object):
        super().__init__("redis", f"Redis is unavailable ({reason}); try again")


class TemplateFailure(HistoryError):
    """The configured system prompt template does not compile or render."""


class TemplateUnavailable(HistoryError):
    """The system prompt template could not be read from its SSM parameter."""


class Unauthenticated(HistoryError):
    """No credential, or one that matches no configured frontend."""


class Forbidden(HistoryError):
    """The room is outside the caller's rooms; the message is the same for every room."""

    def __init__(self):
        super().__init__("room_id", "is outside the rooms this frontend may use")


class AccessMisconfigured(HistoryError):
    """The frontends configuration (AUTH_FRONTENDS or the AUTH_SECRET_ARN secret) is malformed."""


class AccessUnavailable(HistoryError):
    """The frontends secret could not be read from Secrets Manager."""
