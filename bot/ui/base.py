"""Base View and Modal: one error path, and (for views) only the intended member may press."""

from __future__ import annotations

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
    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:  # type: ignore[override]
        await handle_interaction_error(interaction, error)
