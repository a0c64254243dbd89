"""Base View, Modal and persistent button: one error path; for views, only the intended member may press."""

from __future__ import annotations

import secrets
from typing import Any

import discord

from bot.ui.errors import handle_interaction_error, send_ephemeral


class BaseView(discord.ui.View):
    """A view whose errors go to the shared handler. With `owner_id`, others get a polite refusal."""

    def __init__(self, *, owner_id: int | None = None, timeout: float | None = 180.0) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if self.owner_id is not None and interaction.user.id != self.owner_id:
            await send_ephemeral(interaction, "These buttons belong to someone else.")
            return False
        return True

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await handle_interaction_error(interaction, error)


class BaseModal(discord.ui.Modal):
    """A form whose errors go to the shared handler. Its custom id is `name` plus a token new for each
    opening: discord.py finds the form a submission belongs to by this id alone, so two members with the
    same form open at once (with one fixed id) would share one form object, and one of them would be
    answered with the other's values or not at all."""

    def __init__(self, name: str) -> None:
        super().__init__(custom_id=f"{name}:{secrets.token_hex(8)}")

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:  # type: ignore[override]
        await handle_interaction_error(interaction, error)


class BaseDynamicButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?!x)x"):
    """A persistent button (its custom id is parsed back after a restart): subclasses set their own
    `template`, implement `from_custom_id` and `run`. discord.py only logs a dynamic item's exceptions, so
    they go to the shared handler here: the member reads what went wrong."""

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await self.run(interaction)
        except Exception as exc:
            await handle_interaction_error(interaction, exc)

    async def run(self, interaction: discord.Interaction) -> None:
        raise NotImplementedError
