"""Typed shapes of what the bot sends to and reads from the Horde (see shared/horde/swagger.json).

Responses are parsed by `HordeResponse` models, which accept what the real server sends (the recorded
exchanges in tests/data/horde/transcripts/ are its word): extra keys are ignored (the Horde adds fields over
time), a missing key or a `null` takes the field's default, and only the fields the bot cannot work
without are required. A response that still doesn't fit raises `HordeUnexpectedResponse` naming the field.
"""

from __future__ import annotations

import functools
import re
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


@functools.cache
def _nullable_names(model: type[BaseModel]) -> frozenset[str]:
    """Names (and aliases) of the fields of `model` whose type admits None."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nullable = annotation is Any or annotation is None or annotation is type(None)
        if get_origin(annotation) in (Union, types.UnionType):
            nullable = type(None) in get_args(annotation)
        if nullable:
            names.add(name)
            if field.alias:
                names.add(field.alias)
    return frozenset(names)


class HordeResponse(BaseModel):
    """Base of every model of a Horde *response*.

    The real server sends `null` for fields it has no value for (news `tags`, `usage.megapixelsteps`...),
    so a `null` in a field that can't hold None means "not given": the field's default applies. A required
    field (one the bot cannot work without) that is missing or null fails validation naming that field.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nullable = _nullable_names(cls)
            return {k: v for k, v in data.items() if v is not None or k in nullable}
        return data


class HordeRequest(BaseModel):
    """Base of the bodies the bot sends: strict about what the bot itself builds."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RequestProgress(HordeResponse):
    """Where an image or text request stands (the Horde's `RequestStatusCheck`): the fields its check and
    status answers share."""

    finished: int = 0
    processing: int = 0
    restarted: int = 0
    waiting: int = 0
    done: bool = False
    faulted: bool = False
    wait_time: int = 0
    queue_position: int = 0
    kudos: float = 0
    is_possible: bool = True


class KudosDetails(HordeResponse):
    accumulated: float = 0
    gifted: float = 0
    donated: float = 0
    admin: float = 0
    received: float = 0
    recurring: float = 0
    awarded: float = 0


class UsageRecord(HordeResponse):
    megapixelsteps: float = 0
    tokens: int = 0


class FulfillmentRecord(HordeResponse):
    image: int = 0
    text: int = 0
    interrogation: int = 0


class UserRecords(HordeResponse):
    usage: UsageRecord = Field(default_factory=UsageRecord)
    contribution: UsageRecord = Field(default_factory=UsageRecord)
    fulfillment: FulfillmentRecord = Field(default_factory=FulfillmentRecord)
    request: FulfillmentRecord = Field(default_factory=FulfillmentRecord)


class HordeUser(HordeResponse):
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
