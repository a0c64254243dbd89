"""/login, /logout, /userinfo: linking a member's AI Horde account."""

from __future__ import annotations

from typing import cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot, calls_horde
from bot.services.accounts import AccountService
from bot.ui.base import BaseModal
from bot.ui.embeds import horde_user_embed
from bot.ui.options import resolved_user
from bot.ui.terms import TERMS_SHORT
from bot.ui.text import escape_user_text

# What /logout keeps, in the member's words (README's "What /logout keeps" says the same, with the reasons;
# the code's declarations are in bot/db/member_data.py and each repository's MEMBER_DATA).
KEPT = (
    "the kudos gifts you gave or received (they are the other member's record too; ids and amounts only), "
    "and a safety cooldown while it runs"
)


class LoginModal(BaseModal, title="Link your AI Horde account"):
    # Explicit custom_id: stable across versions, and what tests address the field by.
    api_key: discord.ui.TextInput[LoginModal] = discord.ui.TextInput(
        label="AI Horde API key",
        custom_id="login:apikey",
        placeholder="Paste the key from aihorde.net/register",
        min_length=10,
        max_length=200,
        required=True,
    )

    def __init__(self, accounts: AccountService) -> None:
        super().__init__("login:modal")
        self._accounts = accounts

    async def on_submit(self, interaction: discord.Interaction) -> None:
        # The key is checked with the Horde: gated like the Horde-calling commands (a form is no command).
        services = cast(HordeBot, interaction.client).services
        await services.safety.gate(user_id=interaction.user.id, guild_id=interaction.guild_id)
        # Validation calls the Horde: acknowledge first so a slow Horde never times the interaction out.
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = await self._accounts.link(interaction.user.id, self.api_key.value)
        embed = horde_user_embed(user, title="Account linked", private=True)
        embed.description = (
            f"You are linked as **{escape_user_text(user.username, 200)}**. "
            "Your key is stored encrypted; `/logout` deletes it.\n\n" + TERMS_SHORT
        )
        await interaction.followup.send(embed=embed, ephemeral=True)


class AccountCog(commands.Cog):
    def __init__(self, bot: HordeBot) -> None:
        self.accounts = bot.services.accounts
        self.shared_keys = bot.services.shared_keys

    @app_commands.command(name="login", description="Link your AI Horde account with your API key")
    async def login(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(LoginModal(self.accounts))

    @app_commands.command(name="logout", description="Unlink your AI Horde account and delete your data")
    async def logout(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        created = await self.shared_keys.owned_rows(interaction.user.id)
        result = await self.accounts.unlink(interaction.user.id)
        if result.was_linked:
            lines = ["Your API key has been deleted, and so has everything else this bot stored about you"]
        else:
            lines = ["You had no linked account. Everything else this bot stored about you has been deleted"]
        lines[0] += f", except what it keeps on purpose: {KEPT}."
        if created:
            names = ", ".join(f"**{escape_user_text(row.name, 60)}**" for row in created[:10])
            lines.append(
                f"The shared keys you created ({names}) still work on the AI Horde and spend your "
                "kudos until you delete them there (aihorde.net), or log in again and use "
                "`/sharedkey delete` before logging out."
            )
        if result.problems:
            lines.append("**Could not be removed:**")
            lines += [f"- {problem}" for problem in result.problems[:10]]
        await interaction.followup.send("\n".join(lines)[:2000], ephemeral=True)

    @calls_horde
    @app_commands.command(name="userinfo", description="Show an AI Horde account: yours or a member's")
    @app_commands.describe(member="A member who linked their account (default: you)")
    async def userinfo(self, interaction: discord.Interaction, member: discord.User | None = None) -> None:
        await self.show_profile(interaction, member)

    async def show_profile(
        self, interaction: discord.Interaction, member: discord.User | discord.Member | None
    ) -> None:
        """/userinfo and the "Horde profile" user menu."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = await resolved_user(interaction, member) if member is not None else None
        if target is None or target.id == interaction.user.id:
            user = await self.accounts.me(interaction.user.id)
            embed = horde_user_embed(user, title="Your AI Horde account", private=True)
        else:
            profile = await self.accounts.public_profile(target.id)
            if profile is None:
                await interaction.followup.send(
                    f"{escape_user_text(target.display_name, 100)} has not linked an AI Horde account.",
                    ephemeral=True,
                )
                return
            embed = horde_user_embed(
                profile,
                title=f"AI Horde account of {escape_user_text(target.display_name, 100)}",
                private=True,
            )
        await interaction.followup.send(embed=embed, ephemeral=True)


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(AccountCog(bot))
