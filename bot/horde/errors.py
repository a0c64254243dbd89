"""One exception type for every way a Horde call can fail.

The Horde answers errors in four shapes (API_NOTES §2): `{"message","rc"}`, flask-restx validation
`{"errors":{...},"message":...}`, the rate limiter's `{"message":"2 per 1 second"}` and a bare 500.
All become `HordeError`; transport failures become its subclass `HordeUnavailable`, and a 2xx answer the
bot can't read becomes `HordeUnexpectedResponse` (named as such to members, never as an outage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Where a `Retry-After` header means "wait this long": the limiter's 429 (TooManyPrompts included), a 5xx
# (a proxy's 503), and an IP timeout.
RETRY_AFTER_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_RCS = frozenset({"TimeoutIP"})


class HordeError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        rc: str | None = None,
        retry_after: float | None = None,
        errors: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.rc = rc
        self.retry_after = retry_after
        self.errors: dict[str, str] = dict(errors or {})
        # Which key paid for the refused request: "own" (the member's linked key), "guild" (the server's
        # shared key, /serverkey), "anon" (the anonymous key), or None (not a paid request / unknown).
        # Set by the service that chose the key, so the member is told about the right key.
        self.key_source: str | None = None

    @property
    def is_rate_limit(self) -> bool:
        """The limiter's 429 (no rc). `TooManyPrompts` is a 429 too, but about concurrency."""
        return self.status == 429 and self.rc is None

    def __repr__(self) -> str:
        return f"HordeError(status={self.status!r}, rc={self.rc!r}, message={self.message!r})"

    @classmethod
    def from_response(cls, status: int, body: Any, retry_after: float | None) -> HordeError:
        message = "The AI Horde returned an error"
        rc: str | None = None
        errors: dict[str, str] = {}
        if isinstance(body, Mapping):
            raw_message = body.get("message")
            if isinstance(raw_message, str) and raw_message:
                message = raw_message
            raw_rc = body.get("rc")
            rc = raw_rc if isinstance(raw_rc, str) and raw_rc else None
            raw_errors = body.get("errors")
            if isinstance(raw_errors, Mapping):
                errors = {str(k): str(v) for k, v in raw_errors.items()}
        if status not in RETRY_AFTER_STATUSES and rc not in RETRY_AFTER_RCS:
            # The real server sends the limiter's Retry-After (its window: "1", "40"...) on *every* answer
            # of a limited route (transcripts 02-115): on a 400 CorruptPrompt it says nothing about waiting.
            retry_after = None
        if status >= 500:
            return HordeUnavailable(message, status=status, rc=rc, retry_after=retry_after)
        return cls(message, status=status, rc=rc, retry_after=retry_after, errors=errors)


class HordeUnavailable(HordeError):
    """The Horde could not be reached, timed out, answered 5xx or sent something unreadable."""


class HordeUnexpectedResponse(HordeError):
    """The Horde answered (2xx) but with something this bot can't read: not JSON, or a required field
    missing or of the wrong type. Not an outage: retrying won't help until the bot (or the Horde) changes.

    `endpoint` is the route template (`GET /generate/status/{id}`: never a request id), `field` the dotted
    path of the first field that didn't fit (`""` when the body wasn't JSON at all).
    """

    def __init__(self, endpoint: str, field: str, problem: str, *, status: int | None = None) -> None:
        where = f"field `{field}`" if field else "the body"
        super().__init__(f"unexpected answer from {endpoint}: {where}: {problem}", status=status)
        self.endpoint = endpoint
        self.field = field
        self.problem = problem

    def __repr__(self) -> str:
        return (
            f"HordeUnexpectedResponse(endpoint={self.endpoint!r}, field={self.field!r}, "
            f"status={self.status!r})"
        )
