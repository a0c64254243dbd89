"""The member-data contract: whatever the bot stores about a member can be forgotten.

Every repository whose tables hold a member's Discord id declares, in `MEMBER_DATA`, each such column as
either *forgotten* (its `forget_member(discord_id)` removes the id, run by `/logout`) or *kept*, with the
reason in plain words (README's "What /logout keeps" repeats them). `tests/test_member_data.py` walks the
SQLAlchemy metadata with `member_id_columns` and fails on any column that is neither, so a table added later
by any feature is caught the day it is written.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Column, MetaData

# Snowflakes that are not members: a column named like this holds a guild, channel, message, thread or role.
_NOT_MEMBER = re.compile(r"(^|_)(guild|channel|message|thread|role|webhook|application|emoji|attachment)_id$")
# Names that say "a member" whatever their type (a member id stored as text or a plain Integer is still one).
_MEMBER_NAME = re.compile(
    r"(^|_)(user|member|owner|author|giver|receiver|host|discord|requester|creator|set_by|created_by)(_id)?$"
)


@dataclass(frozen=True)
class MemberData:
    """What a repository stores about members: `"table.column"` names."""

    forgets: tuple[str, ...] = ()
    keeps: Mapping[str, str] = field(default_factory=dict)  # "table.column" -> why it is kept


def is_member_column(column: Column[object]) -> bool:
    """A column that holds a member's Discord id.

    Every Discord id is a 64-bit snowflake, so every BigInteger column counts unless its name says it is a
    guild, channel, message, thread or role; a column named for a member counts whatever its type (except
    the Horde's own ids, `horde_*`). `info={"member_id": True/False}` on the column overrides both."""
    marked = column.info.get("member_id")
    if marked is not None:
        return bool(marked)
    name = column.name
    if name.startswith("horde_"):
        return False
    if _MEMBER_NAME.search(name):
        return True
    return isinstance(column.type, BigInteger) and not _NOT_MEMBER.search(name)


def member_id_columns(metadata: MetaData) -> list[str]:
    """Every `table.column` of the schema that holds a member's Discord id, sorted."""
    return sorted(
        f"{table.name}.{column.name}"
        for table in metadata.tables.values()
        for column in table.columns
        if is_member_column(column)
    )


def declarations() -> Iterator[tuple[type, MemberData]]:
    """Every repository class in `bot.db` with its `MEMBER_DATA` (importing each module once)."""
    import bot.db

    for module_info in pkgutil.iter_modules(bot.db.__path__, "bot.db."):
        if module_info.name.endswith(".migrations"):
            continue
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            data = getattr(value, "MEMBER_DATA", None)
            if (
                isinstance(value, type)
                and value.__module__ == module.__name__
                and isinstance(data, MemberData)
            ):
                yield value, data


def declared_kept() -> dict[str, str]:
    """`table.column` -> why, over every repository."""
    kept: dict[str, str] = {}
    for _cls, data in declarations():
        kept.update(data.keeps)
    return kept
