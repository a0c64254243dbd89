"""/sharedkey (a member's own shared keys) and /serverkey (the guild's key for unlinked members)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot, calls_horde
from bot.errors import InvalidInputError, PermissionDeniedError
from bot.services.limits import (
    MAX_SHARED_KEY_KUDOS,
    MAX_SHARED_KEY_NAME,
    MAX_SHARED_KEY_PIXELS,
    MAX_SHARED_KEY_STEPS,
    MAX_SHARED_KEY_TOKENS,
    MIN_SHARED_KEY_NAME,
)
from bot.services.sharedkeys import MAX_SHARED_KEY_DAYS, SharedKeyDetails, SharedKeyRequest, SharedKeyService
from bot.ui.base import BaseModal
from bot.ui.embeds import HORDE_COLOUR
from bot.ui.text import escape_user_text

# The value of a key option is our row id (from the autocomplete), never the key itself.
KeyChoice = app_commands.Range[str, 1, 20]


def limits_text(details: SharedKeyDetails) -> str:
    def limit(value: int, unit: str) -> str:
        return "no limit" if value == -1 else f"{value:,} {unit}"

    kudos = "unlimited" if details.kudos == -1 else f"{details.utilized:,} of {details.kudos:,} used"
    expiry = details.expiry[:10] if details.expiry else "never"
    return (
        f"Kudos: {kudos} · expires: {expiry}\n"
        f"Per image: {limit(details.max_image_pixels, 'pixels')}, "
        f"{limit(details.max_image_steps, 'steps')} · "
        f"per text: {limit(details.max_text_tokens, 'tokens')}"
    )


class PasteServerKeyModal(BaseModal, title="Set this server's shared key"):
    key: discord.ui.TextInput[PasteServerKeyModal] = discord.ui.TextInput(
        label="Shared key",
        custom_id="serverkey:key",
        placeholder="The shared key's id (a UUID)",
        min_length=10,
        max_length=100,
    )

    def __init__(self, keys: SharedKeyService) -> None:
        super().__init__("serverkey:modal")
        self._keys = keys

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if interaction.guild_id is None:
            raise PermissionDeniedError("Use this in a server.")
        details = await self._keys.set_guild_key(interaction.guild_id, interaction.user.id, self.key.value)
        await interaction.followup.send(_set_text(details), ephemeral=True)


def _set_text(details: SharedKeyDetails) -> str:
    return (
        "Members without a linked account now use the shared key "
        f"**{escape_user_text(details.name, 100)}**.\n" + limits_text(details)
    )


def _require_manage_guild(interaction: discord.Interaction) -> int:
    if interaction.guild_id is None:
        raise PermissionDeniedError("Use this in a server.")
    if not interaction.permissions.manage_guild:
        raise PermissionDeniedError(
            "Only members with the Manage Server permission can change the server's key."
        )
    return interaction.guild_id


class SharedKeyCog(commands.Cog):
    sharedkey = app_commands.Group(name="sharedkey", description="Shared keys: let others spend your kudos")
    serverkey = app_commands.Group(
        name="serverkey",
        description="The shared key that pays for members who have not linked an account",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: HordeBot) -> None:
        self.keys: SharedKeyService = bot.services.shared_keys

    async def own_key_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        rows = await self.keys.owned_rows(interaction.user.id)
        needle = current.casefold()
        # The value is our row id: the key itself never goes into a choice.
        return [
            app_commands.Choice(name=row.name[:100], value=str(row.id))
            for row in rows
            if needle in row.name.casefold()
        ][:25]

    @calls_horde
    @sharedkey.command(name="create", description="Create a shared key that spends your kudos")
    @app_commands.describe(
        name="A name to recognise it by",
        kudos="How many kudos it may spend in total (-1: unlimited)",
        expiry_days="Days until it expires (-1: never)",
        max_image_pixels="Largest image, in pixels (-1: no limit)",
        max_image_steps="Most steps per image (-1: no limit)",
        max_text_tokens="Longest text answer, in tokens (-1: no limit)",
    )
    async def create(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, MIN_SHARED_KEY_NAME, MAX_SHARED_KEY_NAME],
        kudos: app_commands.Range[int, -1, MAX_SHARED_KEY_KUDOS] = 5000,
        expiry_days: app_commands.Range[int, -1, MAX_SHARED_KEY_DAYS] = -1,
        max_image_pixels: app_commands.Range[int, -1, MAX_SHARED_KEY_PIXELS] = -1,
        max_image_steps: app_commands.Range[int, -1, MAX_SHARED_KEY_STEPS] = -1,
        max_text_tokens: app_commands.Range[int, -1, MAX_SHARED_KEY_TOKENS] = -1,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        spec = SharedKeyRequest(
            name=name,
            kudos=kudos,
            expiry_days=expiry_days,
            max_image_pixels=max_image_pixels,
            max_image_steps=max_image_steps,
            max_text_tokens=max_text_tokens,
        )
        _row, details = await self.keys.create(interaction.user.id, spec)
        embed = discord.Embed(title=f"Shared key {escape_user_text(details.name, 200)}", colour=HORDE_COLOUR)
        embed.description = (
            f"Key: `{details.id}`\n"
            "Whoever has this key spends your kudos, up to its limits. Share it only with people you trust; "
            "`/sharedkey delete` revokes it."
        )
        embed.add_field(name="Limits", value=limits_text(details), inline=False)
        embed.set_footer(text="Only you can see this.")
        await interaction.followup.send(embed=embed, ephemeral=True)

    @calls_horde
    @sharedkey.command(name="info", description="Your shared keys and what they have spent")
    async def info(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        owned = await self.keys.mine(interaction.user.id)
        if not owned:
            await interaction.followup.send(
                "You have no shared keys here. Create one with `/sharedkey create`.", ephemeral=True
            )
            return
        embed = discord.Embed(title="Your shared keys", colour=HORDE_COLOUR)
        for item in owned[:25]:
            value = (
                limits_text(item.details)
                if item.details
                else "The AI Horde no longer knows this key (deleted?)."
            )
            embed.add_field(name=escape_user_text(item.row.name, 200), value=value, inline=False)
        embed.set_footer(text="Only you can see this. The keys themselves are shown only when created.")
        await interaction.followup.send(embed=embed, ephemeral=True)

    @calls_horde
    @sharedkey.command(name="delete", description="Delete one of your shared keys (it stops working at once)")
    @app_commands.describe(key="Which key")
    @app_commands.autocomplete(key=own_key_autocomplete)
    async def delete(self, interaction: discord.Interaction, key: KeyChoice) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if not (key.isascii() and key.isdigit()):  # "²" is a digit to isdigit, not to int()
            raise InvalidInputError("Pick one of your keys from the list.")
        name = await self.keys.delete(interaction.user.id, int(key))
        await interaction.followup.send(
            f"Deleted the shared key **{escape_user_text(name, 100)}**: it no longer works.", ephemeral=True
        )

    @calls_horde
    @serverkey.command(name="set", description="Pay for unlinked members with a shared key")
    @app_commands.describe(key="One of your shared keys (leave empty to paste another one)")
    @app_commands.autocomplete(key=own_key_autocomplete)
    async def server_set(self, interaction: discord.Interaction, key: KeyChoice | None = None) -> None:
        guild_id = _require_manage_guild(interaction)
        if key is None:
            await interaction.response.send_modal(PasteServerKeyModal(self.keys))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        if not (key.isascii() and key.isdigit()):  # "²" is a digit to isdigit, not to int()
            raise InvalidInputError("Pick one of your keys from the list, or leave it empty to paste one.")
        details = await self.keys.set_guild_key_from_owned(guild_id, interaction.user.id, int(key))
        await interaction.followup.send(_set_text(details), ephemeral=True)

    @serverkey.command(name="clear", description="Stop paying for unlinked members")
    async def server_clear(self, interaction: discord.Interaction) -> None:
        guild_id = _require_manage_guild(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        cleared = await self.keys.clear_guild_key(guild_id)
        text = (
            "The server's shared key was removed: unlinked members use the anonymous key (if allowed)."
            if cleared
            else "This server had no shared key."
        )
        await interaction.followup.send(text, ephemeral=True)

    @calls_horde
    @serverkey.command(name="info", description="The server's shared key and what it has left")
    async def server_info(self, interaction: discord.Interaction) -> None:
        guild_id = _require_manage_guild(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        found = await self.keys.guild_key_details(guild_id)
        if found is None:
            await interaction.followup.send("This server has no shared key.", ephemeral=True)
            return
        name, details = found
        body = limits_text(details) if details else "The AI Horde no longer knows this key: set another."
        await interaction.followup.send(
            f"Server key **{escape_user_text(name, 100)}**\n{body}", ephemeral=True
        )


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(SharedKeyCog(bot))
