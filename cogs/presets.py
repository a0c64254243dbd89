"""/preset save|list|delete: named sets of /generate options, a member's own or (admins) a server's.

Thin: parse, call `PresetService`, render. Used with the `preset` option of /generate and /generate-advanced.
"""

from __future__ import annotations

from typing import cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot
from bot.services.generation_extras import MAX_LORAS_CHARS, MAX_TIS_CHARS, MAX_WORKERS_CHARS
from bot.services.presets import PresetService, Scope, describe
from bot.ui.embeds import HORDE_COLOUR
from bot.ui.generate_options import SPEED_CHOICES, describe_options, generate_options
from bot.ui.text import escape_user_text
from cogs.generate import nsfw_allowed_here, preset_autocomplete
from cogs.generate_advanced import lora_autocomplete


def _service(interaction: discord.Interaction) -> PresetService:
    return cast(HordeBot, interaction.client).services.presets


def _is_admin(interaction: discord.Interaction) -> bool:
    permissions = interaction.permissions
    return bool(permissions.manage_guild) if permissions is not None else False


def _scope(server: bool | None) -> Scope:
    return "guild" if server else "member"


class PresetCog(commands.Cog):
    preset = app_commands.Group(name="preset", description="Saved sets of /generate options")

    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot

    @preset.command(
        name="save", description="Save options for /generate under a name (yours, or the server's)"
    )
    @describe_options(
        name="The preset's name (use it with /generate preset:<name>)",
        server="Save it for everyone in this server (Manage Server)",
        # No search for these here (/generate has it): a category of styles could not be picked.
        model="The model",
        style="A Horde style",
    )
    @app_commands.choices(speed=SPEED_CHOICES)
    @app_commands.autocomplete(loras=lora_autocomplete)
    async def save(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 50],
        server: bool = False,
        negative: app_commands.Range[str, 1, 2000] | None = None,
        model: app_commands.Range[str, 1, 100] | None = None,
        style: app_commands.Range[str, 1, 100] | None = None,
        size: app_commands.Range[str, 3, 20] | None = None,
        steps: app_commands.Range[int, 1, 500] | None = None,
        cfg: app_commands.Range[float, 0.0, 100.0] | None = None,
        sampler: app_commands.Range[str, 1, 30] | None = None,
        n: app_commands.Range[int, 1, 20] | None = None,
        karras: bool | None = None,
        hires_fix: bool | None = None,
        tiling: bool | None = None,
        post_processing: app_commands.Range[str, 1, 300] | None = None,
        loras: app_commands.Range[str, 1, MAX_LORAS_CHARS] | None = None,
        tis: app_commands.Range[str, 1, MAX_TIS_CHARS] | None = None,
        clip_skip: app_commands.Range[int, 1, 12] | None = None,
        facefixer_strength: app_commands.Range[float, 0.0, 1.0] | None = None,
        hires_fix_denoising_strength: app_commands.Range[float, 0.01, 1.0] | None = None,
        seed_variation: app_commands.Range[int, 1, 1000] | None = None,
        transparent: bool | None = None,
        workers: app_commands.Range[str, 1, MAX_WORKERS_CHARS] | None = None,
        speed: str | None = None,
        allow_downgrade: bool | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        options = generate_options(
            negative=negative,
            model=model,
            style=style,
            size=size,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            n=n,
            karras=karras,
            hires_fix=hires_fix,
            tiling=tiling,
            post_processing=post_processing,
            loras=loras,
            tis=tis,
            clip_skip=clip_skip,
            facefixer_strength=facefixer_strength,
            hires_fix_denoising_strength=hires_fix_denoising_strength,
            seed_variation=seed_variation,
            transparent=transparent,
            workers=workers,
            speed=speed,
            allow_downgrade=allow_downgrade,
        )
        nsfw_allowed = await nsfw_allowed_here(interaction)
        replaced = await _service(interaction).save(
            _scope(server),
            name,
            options,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            is_admin=_is_admin(interaction),
            nsfw_allowed=nsfw_allowed,
        )
        whose = "this server's" if server else "your"
        verb = "Updated" if replaced else "Saved"
        clean = escape_user_text(" ".join(name.split()), 60)
        await interaction.followup.send(
            f"{verb} {whose} preset **{clean}**. Use it with `/generate preset:{clean}`; "
            "options you type there win over the preset's.",
            ephemeral=True,
        )

    @preset.command(name="list", description="Your presets and this server's")
    async def list_presets(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        mine, server = await _service(interaction).listing(
            user_id=interaction.user.id, guild_id=interaction.guild_id
        )
        embed = discord.Embed(title="Generation presets", colour=HORDE_COLOUR)
        for title, presets in (("Yours", mine), ("This server's", server)):
            if interaction.guild_id is None and title != "Yours":
                continue
            lines = [
                f"**{escape_user_text(p.name, 60)}**: {escape_user_text(describe(p), 200)}" for p in presets
            ]
            embed.add_field(name=title, value="\n".join(lines)[:1024] or "none yet", inline=False)
        embed.set_footer(text="Save one with /preset save; use it with /generate preset:<name>")
        await interaction.followup.send(embed=embed, ephemeral=True)

    @preset.command(name="delete", description="Delete one of your presets, or (Manage Server) the server's")
    @app_commands.describe(name="The preset to delete", server="Delete the server's preset of that name")
    @app_commands.autocomplete(name=preset_autocomplete)
    async def delete(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 50], server: bool = False
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await _service(interaction).delete(
            _scope(server),
            name,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            is_admin=_is_admin(interaction),
        )
        await interaction.followup.send(
            f"Deleted the preset **{escape_user_text(name.strip(), 60)}**.", ephemeral=True
        )


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(PresetCog(bot))
