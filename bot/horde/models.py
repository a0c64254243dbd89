"""Typed shapes of what the bot sends to and reads from the Horde (see shared/horde/swagger.json).

Responses are parsed with `extra="ignore"`: the Horde adds fields over time and the bot must not break.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

ANON_KEY = "0000000000"
_KEY_CHARS = re.compile(r"^[A-Za-z0-9_\-]{10,128}$")


class ApiKey:
    """A Horde API key. Its str/repr never show the key; only `reveal()` does, at the HTTP edge."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not _KEY_CHARS.match(value):
            raise ValueError("not an API key")
        self._value = value

    @classmethod
    def parse(cls, raw: str) -> ApiKey:
        """Accept a key as members paste it: surrounding or wrapped whitespace is removed."""
        cleaned = "".join(raw.split())
        return cls(cleaned)

    @classmethod
    def anonymous(cls) -> ApiKey:
        return cls(ANON_KEY)

    @property
    def is_anonymous(self) -> bool:
        return self._value == ANON_KEY

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class KudosDetails(_Model):
    accumulated: float = 0
    gifted: float = 0
    donated: float = 0
    admin: float = 0
    received: float = 0
    recurring: float = 0
    awarded: float = 0


class UsageRecord(_Model):
    megapixelsteps: float = 0
    tokens: int = 0


class FulfillmentRecord(_Model):
    image: int = 0
    text: int = 0
    interrogation: int = 0


class UserRecords(_Model):
    usage: UsageRecord = Field(default_factory=UsageRecord)
    contribution: UsageRecord = Field(default_factory=UsageRecord)
    fulfillment: FulfillmentRecord = Field(default_factory=FulfillmentRecord)
    request: FulfillmentRecord = Field(default_factory=FulfillmentRecord)


class HordeUser(_Model):
    """`UserDetails` from `/find_user` and `/users/{id}`."""

    username: str
    id: int
    kudos: float = 0
    concurrency: int = 0
    worker_count: int = 0
    worker_ids: list[str] | None = None
    trusted: bool = False
    moderator: bool = False
    flagged: bool = False
    pseudonymous: bool = False
    account_age: int = 0
    kudos_details: KudosDetails = Field(default_factory=KudosDetails)
    records: UserRecords = Field(default_factory=UserRecords)

    @property
    def alias(self) -> str:
        """`name#id`: the form `kudos/transfer` takes."""
        return self.username
