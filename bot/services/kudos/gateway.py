"""What the kudos feature needs from Discord, without Discord types: the reaction events it hears and the
`KudosGateway` the cog plugs in (`KudosService.gateway`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class MessageAuthor:
    id: int
    bot: bool


@dataclass(frozen=True)
class ReactionEvent:
    """A raw reaction add, without Discord types."""

    guild_id: int | None
    channel_id: int
    message_id: int
    user_id: int
    emoji_name: str | None
    emoji_id: int | None
    emoji_text: str  # as Discord accepts it back for removing/adding a reaction ("👍", "name:id")
    user_is_bot: bool = False
    message_author_id: int | None = None  # when the gateway event carries it


class KudosGateway(Protocol):
    """What the service needs from Discord (installed by `cogs.kudos`)."""

    def bot_user_id(self) -> int | None: ...

    async def message_author(self, channel_id: int, message_id: int) -> MessageAuthor | None:
        """None when the message is gone or can't be read."""

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> bool: ...

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> bool: ...

    def display_name(self, guild_id: int | None, user_id: int) -> str: ...


class NoGateway:
    """Until the cog plugs Discord in: nobody's messages, no reactions, members by number."""

    def bot_user_id(self) -> int | None:
        return None

    async def message_author(self, channel_id: int, message_id: int) -> MessageAuthor | None:
        return None

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> bool:
        return False

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> bool:
        return False

    def display_name(self, guild_id: int | None, user_id: int) -> str:
        return f"member {user_id}"


__all__ = ["KudosGateway", "MessageAuthor", "NoGateway", "ReactionEvent"]
