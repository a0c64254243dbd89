"""Errors that carry a message for the member who triggered them.

Services raise these; the single interaction error handler (`bot.ui.errors`) shows the message ephemerally.
Anything else is a bug: logged with a traceback, and the member gets a generic apology.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """An expected failure with a short, actionable message for the member."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotLinkedError(UserFacingError):
    def __init__(self, message: str = "This needs a linked AI Horde account: use `/login` first.") -> None:
        super().__init__(message)


class InvalidInputError(UserFacingError):
    """An option or field the member supplied is out of range or malformed."""


class RateLimitedError(UserFacingError):
    """The member (or guild) is sending too much; `retry_after` in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermissionDeniedError(UserFacingError):
    """The member may not do this here."""
