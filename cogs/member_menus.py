"""User context menus (right-click a member → Apps): Horde profile, Send kudos, Remix avatar, Describe avatar.

Each is a door into an existing feature, with its rules: the profile is /userinfo's, the gift goes through
/transfer's confirm button and ledger, the remix is "Remix with Horde" on the avatar, the description is
/describe's caption.
"""

from __future__ import annotations

from typing import TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot, calls_horde
from bot.errors import InvalidInputError
from bot.ui.base import BaseModal
from bot.ui.uploads import AvatarSource
from cogs.account import AccountCog
from cogs.alchemy import AlchemyCog
from cogs.generate import GenerateCog, RemixModal
from cogs.kudos import KudosCog

MAX_KUDOS_TYPED = 10_000_000  # a typo guard; the service applies the real limits


T = TypeVar("T")


def _cog(bot: HordeBot, name: str, kind: type[T]) -> T:
    cog = bot.get_cog(name)
    if not isinstance(cog, kind):
        raise InvalidInputError("That feature is not available right now.")
    return cog


class SendKudosModal(BaseModal, title="Send kudos"):
    amount: discord.ui.TextInput[SendKudosModal] = discord.ui.TextInput(
        label="How many kudos", custom_id="kudos:menu:amount", max_length=9, placeholder="100"
    )
    reason: discord.ui.TextInput[SendKudosModal] = discord.ui.TextInput(
        label="Why (optional, shown in the kudos log)",
        custom_id="kudos:menu:reason",
        required=False,
        max_length=150,
    )

    def __init__(self, cog: KudosCog, member: discord.User | discord.Member) -> None:
        super().__init__("kudos:menu-modal")
        self.cog = cog
        self.member = member

    async def on_submit(self, interaction: discord.Interaction) -> None:
        raw = (self.amount.value or "").strip().replace(",", "")
        if not raw.isdigit() or not 0 < int(raw) <= MAX_KUDOS_TYPED:
            raise InvalidInputError(
                f"The amount must be a whole number of kudos, like 100 (got `{raw[:12]}`)."
            )
        reason = (self.reason.value or "").strip() or None
        await self.cog.offer_transfer(interaction, self.member, int(raw), reason)


class MemberMenusCog(commands.Cog):
    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot
        self.menus = [
            calls_horde(app_commands.ContextMenu(name="Horde profile", callback=self.profile)),
            calls_horde(app_commands.ContextMenu(name="Send kudos", callback=self.send_kudos)),
            calls_horde(app_commands.ContextMenu(name="Remix avatar", callback=self.remix_avatar)),
            calls_horde(app_commands.ContextMenu(name="Describe avatar", callback=self.describe_avatar)),
        ]
        # Gifts are a server thing, as /transfer.
        self.menus[1].guild_only = True

    async def cog_load(self) -> None:
        for menu in self.menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    async def profile(self, interaction: discord.Interaction, member: discord.User | discord.Member) -> None:
        await _cog(self.bot, "AccountCog", AccountCog).show_profile(interaction, member)

    async def send_kudos(
        self, interaction: discord.Interaction, member: discord.User | discord.Member
    ) -> None:
        cog = _cog(self.bot, "KudosCog", KudosCog)
        # Refused at once (yourself, a bot, not linked) rather than after the form is filled in.
        await cog.kudos.check_transfer(interaction.user.id, member.id, member.bot, 1)
        await interaction.response.send_modal(SendKudosModal(cog, member))

    async def remix_avatar(
        self, interaction: discord.Interaction, member: discord.User | discord.Member
    ) -> None:
        cog = _cog(self.bot, "GenerateCog", GenerateCog)
        await interaction.response.send_modal(RemixModal(cog, AvatarSource(member)))

    async def describe_avatar(
        self, interaction: discord.Interaction, member: discord.User | discord.Member
    ) -> None:
        cog = _cog(self.bot, "AlchemyCog", AlchemyCog)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await cog.run_action(interaction, AvatarSource(member), "describe", public=False)


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(MemberMenusCog(bot))
