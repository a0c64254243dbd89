"""Images the bot reads from Discord: message attachments, or a member's avatar (user menus)."""

from __future__ import annotations

from typing import Protocol

import discord

from bot.errors import InvalidInputError


class ImageSource(Protocol):
    """What the generation and alchemy commands read an input image from (`discord.Attachment` is one).
    `size` is 0 when unknown before the download (the services check the bytes they get)."""

    @property
    def size(self) -> int: ...

    @property
    def filename(self) -> str: ...

    async def read(self) -> bytes: ...


class AvatarSource:
    """A member's avatar as an input image (downloaded when the job needs it)."""

    def __init__(self, member: discord.User | discord.Member) -> None:
        self._asset = member.display_avatar
        self.filename = f"avatar_{member.id}.png"
        self.size = 0

    async def read(self) -> bytes:
        try:
            return await self._asset.read()
        except (discord.HTTPException, discord.DiscordException, ValueError):
            raise InvalidInputError(
                "I couldn't download that member's avatar from Discord. Try again in a minute."
            ) from None
