"""/models, /model, /worker, /team, /news, /stats, /horde status: the Horde's public information."""

from __future__ import annotations

import contextlib
import re
import secrets
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot, calls_horde
from bot.errors import UserFacingError
from bot.services import validation
from bot.services.info import LOOKUP_CHARS, ActiveModel, InfoService, Team, Worker
from bot.ui.delivery import errors_stay_private
from bot.ui.embeds import HORDE_COLOUR, format_number
from bot.ui.errors import send_ephemeral
from bot.ui.paginator import Paginator
from bot.ui.text import escape_user_text

MODEL_TYPES = [
    app_commands.Choice(name="image", value="image"),
    app_commands.Choice(name="text", value="text"),
]


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def model_line(model: ActiveModel) -> str:
    queue = format_number(model.queued)
    unit = "tokens" if model.type == "text" else "megapixelsteps"
    return (
        f"**{escape_user_text(model.name, 100)}**: {model.count} worker{'s' if model.count != 1 else ''}, "
        f"{format_number(model.jobs)} jobs queued ({queue} {unit}), ETA {duration(model.eta)}"
    )


def model_pages(models: list[ActiveModel], title: str, per_page: int) -> list[discord.Embed]:
    pages = []
    for start in range(0, len(models), per_page):
        chunk = models[start : start + per_page]
        embed = discord.Embed(title=title, colour=HORDE_COLOUR)
        embed.description = "\n".join(model_line(m) for m in chunk)
        pages.append(embed)
    return pages


def worker_embed(worker: Worker) -> discord.Embed:
    embed = discord.Embed(title=f"Worker {escape_user_text(worker.name, 200)}", colour=HORDE_COLOUR)
    state = "online" if worker.online else "offline"
    if worker.maintenance_mode:
        state += ", in maintenance"
    embed.add_field(name="Status", value=state, inline=True)
    embed.add_field(name="Type", value=worker.type, inline=True)
    embed.add_field(name="Trusted", value="yes" if worker.trusted else "no", inline=True)
    if worker.team and worker.team.name:
        embed.add_field(name="Team", value=escape_user_text(worker.team.name, 200), inline=True)
    embed.add_field(name="Threads", value=str(worker.threads), inline=True)
    embed.add_field(name="Uptime", value=duration(worker.uptime), inline=True)
    embed.add_field(name="Requests fulfilled", value=f"{worker.requests_fulfilled:,}", inline=True)
    embed.add_field(name="Kudos earned", value=format_number(worker.kudos_rewards), inline=True)
    if worker.performance:
        embed.add_field(name="Speed", value=escape_user_text(worker.performance, 200), inline=True)
    if worker.type == "text" and worker.max_context_length:
        embed.add_field(
            name="Sizes",
            value=f"context {worker.max_context_length:,} tokens, answers up to {worker.max_length or 0:,}",
            inline=False,
        )
    elif worker.type == "image" and worker.max_pixels:
        embed.add_field(name="Max size", value=f"{worker.max_pixels:,} pixels", inline=True)
    offered = worker.models if worker.type != "interrogation" else worker.forms
    if offered:
        shown = ", ".join(escape_user_text(m, 80) for m in offered[:20])
        more = f" and {len(offered) - 20} more" if len(offered) > 20 else ""
        embed.add_field(
            name="Forms" if worker.type == "interrogation" else "Models",
            value=(shown + more)[:1024],
            inline=False,
        )
    if worker.info:
        embed.add_field(name="Info", value=escape_user_text(worker.info, 1000), inline=False)
    embed.set_footer(text=f"id {worker.id}")
    return embed


def team_embed(team: Team) -> discord.Embed:
    embed = discord.Embed(title=f"Team {escape_user_text(team.name, 200)}", colour=HORDE_COLOUR)
    if team.info:
        embed.description = escape_user_text(team.info, 1000)
    online = sum(1 for w in team.workers if w.online)
    embed.add_field(name="Workers", value=f"{team.worker_count} ({online} online)", inline=True)
    embed.add_field(name="Requests fulfilled", value=f"{team.requests_fulfilled:,}", inline=True)
    embed.add_field(name="Kudos earned", value=format_number(team.kudos), inline=True)
    embed.add_field(name="Uptime", value=duration(team.uptime), inline=True)
    if team.creator:
        embed.add_field(name="Created by", value=escape_user_text(team.creator, 200), inline=True)
    if team.models:
        names = ", ".join(escape_user_text(m.name, 80) for m in team.models[:20])
        embed.add_field(name="Models", value=names[:1024], inline=False)
    embed.set_footer(text=f"id {team.id}")
    return embed


STALE_PAGES = "These buttons stopped working when the bot restarted. Run the command again for fresh pages."
EXPIRED_PAGES = "These buttons have expired. Run the command again for fresh pages."


class StalePageButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"page:(?P<process>[0-9a-f]+):(?P<nonce>[0-9a-f]+):(?:prev|next)",
):
    """Previous/Next of a `/models` page from an earlier run of the bot: removes the dead buttons, says why.

    discord.py offers every click to dynamic items *and* to live views, so a click on this run's pages is
    left to its live `Paginator`."""

    def __init__(self, process: str, nonce: str = "0") -> None:
        super().__init__(discord.ui.Button(label="Next", custom_id=f"page:{process}:{nonce}:next"))
        self.process = process
        self.nonce = nonce

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StalePageButton:
        return cls(match["process"], match["nonce"])

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("InfoCog")  # type: ignore[attr-defined]
        this_run = isinstance(cog, InfoCog) and cog.process == self.process
        if this_run and self.nonce in cog.open_pages:
            return  # its live Paginator answers
        with contextlib.suppress(discord.HTTPException):
            await interaction.response.edit_message(view=None)
        await send_ephemeral(interaction, EXPIRED_PAGES if this_run else STALE_PAGES)


class InfoCog(commands.Cog):
    horde_group = app_commands.Group(name="horde", description="The AI Horde itself")

    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot
        self.info: InfoService = bot.services.info
        # Marks this run's page buttons, so those of an earlier run can be told apart after a restart.
        self.process = secrets.token_hex(4)
        self.open_pages: set[str] = set()  # nonces of this run's paginators still answering their buttons

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(StalePageButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(StalePageButton)

    @staticmethod
    async def _send(interaction: discord.Interaction, content: str | None = None, **kwargs: Any) -> Any:
        """The public answer. If Discord refuses it (a 429, say), the error must still reach only the
        member: after a public defer the first followup would otherwise become public."""
        async with errors_stay_private(interaction):
            return await interaction.followup.send(content or discord.utils.MISSING, **kwargs)

    @app_commands.command(name="models", description="Models served on the AI Horde right now")
    @app_commands.describe(type="Image or text models (default: image)", search="Part of a model name")
    @app_commands.choices(type=MODEL_TYPES)
    async def models(
        self,
        interaction: discord.Interaction,
        type: str = "image",
        search: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        async with errors_stay_private(interaction):
            # Discord's client offers only the choices; any other value (a hostile client) is refused.
            type = validation.choice(type, "type", [c.value for c in MODEL_TYPES])
            found = await self.info.models("text" if type == "text" else "image", search)
            if not found:
                # Nothing to show: like every error, said only to the member, with what to try next.
                what = f" matching “{escape_user_text(search, 100)}”" if search else ""
                other = "image" if type == "text" else "text"
                raise UserFacingError(
                    f"No {type} model{what} is served right now. Try part of the name, or `type:{other}`."
                )
        title = f"{len(found)} {type} model{'s' if len(found) != 1 else ''} on the AI Horde"
        pages = model_pages(found, title, self.info.settings.page_size)
        if len(pages) == 1:
            await self._send(interaction, embed=pages[0])
            return
        view = Paginator(
            pages,
            owner_id=interaction.user.id,
            timeout=self.info.settings.view_timeout,
            process=self.process,
            open_views=self.open_pages,
        )
        view.message = await self._send(interaction, embed=view.current, view=view, wait=True)

    @app_commands.command(name="model", description="Details of one model served on the AI Horde")
    @app_commands.describe(name="The model's name")
    async def model(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, LOOKUP_CHARS]
    ) -> None:
        await interaction.response.defer(thinking=True)
        async with errors_stay_private(interaction):
            found = await self.info.model(name)
        embed = discord.Embed(title=escape_user_text(found.name, 200), colour=HORDE_COLOUR)
        embed.add_field(name="Type", value=found.type, inline=True)
        embed.add_field(name="Workers", value=str(found.count), inline=True)
        embed.add_field(name="Jobs queued", value=format_number(found.jobs), inline=True)
        unit = "tokens" if found.type == "text" else "megapixelsteps"
        embed.add_field(name="Queue", value=f"{format_number(found.queued)} {unit}", inline=True)
        embed.add_field(name="ETA", value=duration(found.eta), inline=True)
        embed.add_field(name="Speed", value=f"{format_number(found.performance)} {unit}/s", inline=True)
        await self._send(interaction, embed=embed)

    @model.autocomplete("name")
    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = await self.info.model_suggestions(current)
        return [app_commands.Choice(name=n[:100], value=n[:100]) for n in names[:25]]

    # Each new name or id is a Horde call (the lists are cached, single look-ups are not): rate-limited.
    @calls_horde
    @app_commands.command(name="worker", description="Details of an AI Horde worker")
    @app_commands.describe(name_or_id="The worker's name or id")
    async def worker(
        self, interaction: discord.Interaction, name_or_id: app_commands.Range[str, 1, LOOKUP_CHARS]
    ) -> None:
        await interaction.response.defer(thinking=True)
        async with errors_stay_private(interaction):
            worker = await self.info.worker(name_or_id)
        await self._send(interaction, embed=worker_embed(worker))

    @calls_horde
    @app_commands.command(name="team", description="Details of an AI Horde team")
    @app_commands.describe(name_or_id="The team's name or id")
    async def team(
        self, interaction: discord.Interaction, name_or_id: app_commands.Range[str, 1, LOOKUP_CHARS]
    ) -> None:
        await interaction.response.defer(thinking=True)
        async with errors_stay_private(interaction):
            team = await self.info.team(name_or_id)
        await self._send(interaction, embed=team_embed(team))

    @app_commands.command(name="news", description="The latest AI Horde news")
    async def news(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        async with errors_stay_private(interaction):
            pieces = await self.info.news(limit=3)
        if not pieces:
            await self._send(interaction, "The AI Horde has no news right now.")
            return
        embed = discord.Embed(title="AI Horde news", colour=HORDE_COLOUR)
        for piece in pieces:
            title = piece.title or piece.importance or "News"
            name = f"{piece.date_published[:10]} · {title}"
            value = escape_user_text(piece.newspiece, 900)
            if piece.more_info_urls:
                value += "\n" + piece.more_info_urls[0][:100]
            embed.add_field(name=escape_user_text(name, 250), value=value or "—", inline=False)
        await self._send(interaction, embed=embed)

    @app_commands.command(name="stats", description="How much the AI Horde generates, and its queues")
    async def stats(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        async with errors_stay_private(interaction):
            stats = await self.info.stats()
        img, txt, perf = stats.images, stats.text, stats.performance
        embed = discord.Embed(title="AI Horde statistics", colour=HORDE_COLOUR)
        embed.add_field(
            name="Images",
            value=(
                f"{img.minute.images:,} last minute · {img.day.images:,} today · "
                f"{img.month.images:,} this month · {img.total.images:,} in total"
            ),
            inline=False,
        )
        embed.add_field(
            name="Text tokens",
            value=(
                f"{txt.minute.tokens:,} last minute · {txt.day.tokens:,} today · "
                f"{txt.month.tokens:,} this month · {txt.total.tokens:,} in total"
            ),
            inline=False,
        )
        embed.add_field(
            name="Queues",
            value=(
                f"{perf.queued_requests:,} image requests ({format_number(perf.queued_megapixelsteps)} "
                f"megapixelsteps) · {perf.queued_text_requests:,} text requests "
                f"({format_number(perf.queued_tokens)} tokens) · "
                f"{format_number(perf.queued_forms)} alchemy forms"
            ),
            inline=False,
        )
        embed.add_field(
            name="Workers",
            value=(
                f"{perf.worker_count:,} image ({perf.thread_count:,} threads) · "
                f"{perf.text_worker_count:,} text · {perf.interrogator_count:,} alchemy"
            ),
            inline=False,
        )
        await self._send(interaction, embed=embed)

    @horde_group.command(name="status", description="Is the AI Horde up, and in maintenance?")
    async def status(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        async with errors_stay_private(interaction):
            health = await self.info.health()
        embed = discord.Embed(title="AI Horde status", colour=HORDE_COLOUR)
        if not health.reachable:
            embed.description = "The AI Horde is not answering right now. Please try again in a few minutes."
            await self._send(interaction, embed=embed)
            return
        modes = health.modes
        maintenance = bool(modes and modes.maintenance_mode)
        embed.description = (
            "In maintenance mode: new requests are refused for now."
            if maintenance
            else "Up and accepting requests."
        )
        embed.add_field(name="Version", value=health.version or "?", inline=True)
        embed.add_field(name="Maintenance", value="yes" if maintenance else "no", inline=True)
        embed.add_field(
            name="Invite-only workers", value="yes" if modes and modes.invite_only_mode else "no", inline=True
        )
        if health.performance is not None:
            perf = health.performance
            embed.add_field(
                name="Workers online",
                value=(
                    f"{perf.worker_count} image · {perf.text_worker_count} text · "
                    f"{perf.interrogator_count} alchemy"
                ),
                inline=False,
            )
        await self._send(interaction, embed=embed)


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(InfoCog(bot))
