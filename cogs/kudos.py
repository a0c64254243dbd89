"""Kudos gifting, Discord side: the raw reaction listener, /transfer with a confirm button, /kudos history.

The rules live in `bot.services.kudos`; this parses Discord events, renders replies and implements the
`KudosGateway` (reading a message's author, removing/adding reactions) the service works through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections import OrderedDict
from datetime import timedelta
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from discord.message import convert_emoji_reaction

from bot.bot import HordeBot, calls_horde
from bot.services.guild_config import render_emoji_key
from bot.services.kudos import (
    FAILED,
    FAILURE_TEXT,
    LAPSED,
    PENDING,
    QUEUED,
    SENT,
    Gift,
    KudosService,
    MessageAuthor,
    ReactionEvent,
)
from bot.ui.base import BaseView
from bot.ui.errors import send_ephemeral
from bot.ui.options import declare_range, resolved_user
from bot.ui.text import escape_user_text

log = logging.getLogger(__name__)
AUTHOR_CACHE = 2048  # message id -> author: authors never change, and storms hit the same few messages

STATE_TEXT = {
    PENDING: "waiting for them to /login",
    QUEUED: "queued",
    SENT: "sent",
    FAILED: "failed",
    LAPSED: "lapsed",
}


class DiscordKudosGateway:
    def __init__(self, bot: commands.Bot) -> None:
        self._bot = bot
        self._authors: OrderedDict[int, MessageAuthor] = OrderedDict()
        self._fetching: dict[int, asyncio.Future[MessageAuthor | None]] = {}

    def bot_user_id(self) -> int | None:
        return self._bot.user.id if self._bot.user else None

    def remember_author(self, message_id: int, author: MessageAuthor) -> None:
        self._authors[message_id] = author
        self._authors.move_to_end(message_id)
        while len(self._authors) > AUTHOR_CACHE:
            self._authors.popitem(last=False)

    async def message_author(self, channel_id: int, message_id: int) -> MessageAuthor | None:
        cached = self._authors.get(message_id)
        if cached is not None:
            return cached
        # Fifty reactions on one message at once: one fetch, the others wait for it.
        pending = self._fetching.get(message_id)
        if pending is not None:
            return await asyncio.shield(pending)
        task = asyncio.ensure_future(self._fetch_author(channel_id, message_id))
        self._fetching[message_id] = task
        try:
            return await asyncio.shield(task)
        finally:
            self._fetching.pop(message_id, None)

    async def _fetch_author(self, channel_id: int, message_id: int) -> MessageAuthor | None:
        channel = self._bot.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self._bot.fetch_channel(channel_id)
            except discord.HTTPException:
                return None
        if not isinstance(channel, discord.abc.Messageable):
            return None
        try:
            message = await channel.fetch_message(message_id)
        except (discord.NotFound, discord.Forbidden):
            return None
        except discord.HTTPException as exc:
            log.warning("kudos: can't read message %s: %s", message_id, exc)
            return None
        author = MessageAuthor(id=message.author.id, bot=message.author.bot)
        self.remember_author(message_id, author)
        return author

    def _can_manage(self, channel_id: int) -> bool:
        channel = self._bot.get_channel(channel_id)
        guild = getattr(channel, "guild", None)
        if channel is None or guild is None or guild.me is None:
            return False
        return bool(channel.permissions_for(guild.me).manage_messages)  # type: ignore[union-attr]

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> bool:
        if not self._can_manage(channel_id):
            return False
        try:
            await self._bot.http.remove_reaction(channel_id, message_id, emoji, user_id)
        except discord.HTTPException:
            return False
        return True

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> bool:
        try:
            await self._bot.http.add_reaction(channel_id, message_id, emoji)
        except discord.HTTPException:
            return False
        return True

    def display_name(self, guild_id: int | None, user_id: int) -> str:
        # A mention renders as the member's name; messages are sent with mentions disabled, so no ping.
        return f"<@{user_id}>"


def _gift_line(gift: Gift, *, sent: bool) -> str:
    other = gift.receiver_id if sent else gift.giver_id
    arrow = "to" if sent else "from"
    how = render_emoji_key(gift.emoji) if gift.source == "reaction" and gift.emoji else gift.source
    when = discord.utils.format_dt(gift.created_at, "R")
    state = STATE_TEXT.get(gift.state, gift.state)
    if gift.state == FAILED and gift.horde_rc in FAILURE_TEXT:
        state += f" ({FAILURE_TEXT[gift.horde_rc]})"
    return f"**{gift.amount:,}** {arrow} <@{other}> · {how} · {state} · {when}"[:300]


def _lines(lines: list[str], limit: int = 1024) -> str:
    """Whole lines only, within an embed field's limit."""
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept) or "none yet"


STALE_TRANSFER = (
    "This transfer is no longer waiting (the bot restarted since you ran the command), so nothing was "
    "sent. Run `/transfer` again to send it."
)
ALREADY_ANSWERED = (
    "This transfer was already answered (the message above says how). Run `/transfer` again for another gift."
)
EXPIRED_TRANSFER = "This transfer expired before it was confirmed; nothing was sent. Run `/transfer` again."


def transfer_button_id(process: str, action: str, view: str = "0") -> str:
    return f"kudos:transfer:{process}:{view}:{action}"


class StaleTransferButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"kudos:transfer:(?P<process>[0-9a-f]+):(?:(?P<view>[0-9a-f]+):)?(?P<action>confirm|cancel)",
):
    """Send/Cancel of a /transfer confirmation whose view is gone: from an earlier run of the bot (views
    live in memory), or expired while its buttons stayed (the edit removing them failed). Answered
    privately with what to do, never left as "This interaction failed". discord.py offers every click to
    dynamic items *and* to live views, so a confirmation still open in this run is left to its
    `TransferView` (which stays open, answering repeated clicks, until it expires)."""

    def __init__(self, process: str, action: str, view: str | None = None) -> None:
        super().__init__(
            discord.ui.Button(label="Send kudos", custom_id=transfer_button_id(process, action, view or "0"))
        )
        self.process = process
        self.view_id = view

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StaleTransferButton:
        return cls(match["process"], match["action"], match["view"])

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("KudosCog")  # type: ignore[attr-defined]
        this_run = isinstance(cog, KudosCog) and cog.process == self.process
        if this_run and self.view_id in cog.open_transfers:
            return
        text = EXPIRED_TRANSFER if this_run else STALE_TRANSFER
        try:
            await interaction.response.edit_message(content=text, view=None)
        except discord.HTTPException:
            await send_ephemeral(interaction, text)


class TransferView(BaseView):
    def __init__(
        self,
        kudos: KudosService,
        *,
        invoker: int,
        receiver: discord.abc.User,
        amount: int,
        reason: str | None,
        process: str = "0",
        open_views: set[str] | None = None,
    ) -> None:
        super().__init__(owner_id=invoker, timeout=kudos.settings.transfer_confirm_seconds)
        # Marked with this run of the bot and this view: `StaleTransferButton` answers the buttons once the
        # view is gone (expired, or the bot restarted). Listed in `open_views` while it answers itself.
        self.view_id = secrets.token_hex(4)
        self.confirm.custom_id = transfer_button_id(process, "confirm", self.view_id)
        self.cancel.custom_id = transfer_button_id(process, "cancel", self.view_id)
        self._open_views = open_views if open_views is not None else set()
        self._open_views.add(self.view_id)
        self._kudos = kudos
        self._receiver = receiver
        self._amount = amount
        self._reason = reason
        self._answered = False
        self.origin: discord.Interaction | None = None

    @discord.ui.button(
        label="Send kudos", style=discord.ButtonStyle.success, custom_id="kudos:transfer:confirm"
    )
    async def confirm(self, interaction: discord.Interaction, _button: discord.ui.Button[Any]) -> None:
        if self._answered:
            await interaction.response.send_message(ALREADY_ANSWERED, ephemeral=True)
            return
        self._answered = True  # before any await: a double click sends once
        try:
            await interaction.response.edit_message(
                content=f"Sending **{self._amount:,}** kudos to {self._receiver.mention}…", view=None
            )
        except discord.HTTPException:
            # Discord refused the answer (a 429, say): nothing was recorded, the button may be pressed again.
            self._answered = False
            raise
        assert interaction.message is not None
        gift = await self._kudos.transfer(
            token=interaction.message.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            giver_id=interaction.user.id,
            receiver_id=self._receiver.id,
            amount=self._amount,
            reason=self._reason,
        )
        text = await self._outcome_text(gift)
        try:
            await interaction.edit_original_response(content=text, view=None)
        except discord.HTTPException:
            # The gift is recorded: never answer with a generic "try again" (that would invite a second
            # transfer). Say what happened in a new private message instead.
            try:
                await interaction.followup.send(text, ephemeral=True)
            except discord.HTTPException:
                log.info("kudos: could not show the outcome of /transfer gift %s", gift.id)

    async def _outcome_text(self, gift: Gift) -> str:
        who = self._receiver.mention
        if gift.state == PENDING:
            return (
                f"{who} hasn't linked an AI Horde account yet. Your **{gift.amount:,}** kudos wait for them "
                f"for {self._kudos.settings.pending_days:g} days (they were told how to claim them); "
                "after that the gift lapses and nothing is taken."
            )
        outcome = await self._kudos.wait_for(gift, self._kudos.settings.transfer_wait_seconds)
        state = outcome.gift.state
        if state == SENT:
            return f"Sent **{gift.amount:,}** kudos to {who}."
        if state == FAILED:
            why = outcome.why or FAILURE_TEXT.get(outcome.gift.horde_rc or "", "the AI Horde refused it")
            return f"Not sent: {why}. Nothing was taken from your account."
        if outcome.why:
            return f"Queued: {outcome.why}. It will be sent automatically; `/kudos history` shows it."
        return f"Queued **{gift.amount:,}** kudos for {who}; `/kudos history` shows when it is sent."

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary, custom_id="kudos:transfer:cancel")
    async def cancel(self, interaction: discord.Interaction, _button: discord.ui.Button[Any]) -> None:
        if self._answered:
            await interaction.response.send_message(ALREADY_ANSWERED, ephemeral=True)
            return
        self._answered = True
        await interaction.response.edit_message(content="Cancelled: no kudos were sent.", view=None)

    async def on_timeout(self) -> None:
        # From now on `StaleTransferButton` answers this view's buttons (if the edit below fails, they stay).
        self._open_views.discard(self.view_id)
        if self._answered or self.origin is None:
            return
        self._answered = True
        with contextlib.suppress(discord.HTTPException):
            await self.origin.edit_original_response(content=EXPIRED_TRANSFER, view=None)


class KudosCog(commands.Cog):
    kudos_group = app_commands.Group(name="kudos", description="Kudos gifts", guild_only=True)

    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot
        self.kudos: KudosService = bot.services.kudos
        self.gateway = DiscordKudosGateway(bot)
        # Marks this run's /transfer buttons, so those of an earlier run can be told apart after a restart.
        self.process = secrets.token_hex(4)
        self.open_transfers: set[str] = set()  # ids of this run's confirmations still answering clicks
        declare_range(self, "transfer", "amount", max_value=self.kudos.settings.transfer_max)

    async def cog_load(self) -> None:
        self.kudos.gateway.plug(self.gateway)
        self.kudos.start()
        self.bot.add_dynamic_items(StaleTransferButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(StaleTransferButton)
        self.kudos.stop()
        self.kudos.gateway.unplug(self.gateway)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.guild_id is None:
            return
        user_is_bot = bool(payload.member.bot) if payload.member is not None else False
        if payload.message_author_id is not None and payload.message_id not in self.gateway._authors:
            author = self.bot.get_user(payload.message_author_id)
            if author is not None:
                self.gateway.remember_author(payload.message_id, MessageAuthor(id=author.id, bot=author.bot))
        await self.kudos.on_reaction(
            ReactionEvent(
                guild_id=payload.guild_id,
                channel_id=payload.channel_id,
                message_id=payload.message_id,
                user_id=payload.user_id,
                emoji_name=payload.emoji.name,
                emoji_id=payload.emoji.id,
                emoji_text=convert_emoji_reaction(payload.emoji),
                user_is_bot=user_is_bot,
                message_author_id=payload.message_author_id,
            )
        )

    @calls_horde
    @app_commands.command(name="transfer", description="Gift kudos from your AI Horde account to a member")
    @app_commands.describe(
        member="Who receives the kudos",
        amount="How many kudos",
        reason="Why (shown in the kudos log)",
    )
    @app_commands.guild_only()
    async def transfer(
        self,
        interaction: discord.Interaction,
        member: discord.User,
        amount: app_commands.Range[int, 1, None],  # the maximum is the `kudos.transfer_max` setting
        reason: app_commands.Range[str, 1, 150] | None = None,
    ) -> None:
        await self.offer_transfer(interaction, member, amount, reason)

    async def offer_transfer(
        self,
        interaction: discord.Interaction,
        member: discord.User | discord.Member,
        amount: int,
        reason: str | None,
    ) -> None:
        """/transfer and the "Send kudos" user menu: check, then the confirm button (same ledger)."""
        # Acknowledged first: the checks read the member's link (the database).
        await interaction.response.defer(ephemeral=True, thinking=True)
        receiver = await resolved_user(interaction, member)  # the payload may not resolve the member
        await self.kudos.check_transfer(interaction.user.id, receiver.id, receiver.bot, amount)
        view = TransferView(
            self.kudos,
            invoker=interaction.user.id,
            receiver=receiver,
            amount=amount,
            reason=escape_user_text(reason, 150) if reason else None,
            process=self.process,
            open_views=self.open_transfers,
        )
        shown_reason = f"\nReason: {escape_user_text(reason, 150)}" if reason else ""
        expires = discord.utils.format_dt(discord.utils.utcnow() + timedelta(seconds=view.timeout or 0), "R")
        await interaction.followup.send(
            f"Send **{amount:,}** kudos from your AI Horde account to {receiver.mention}?{shown_reason}\n"
            f"This button expires {expires}.",
            view=view,
            ephemeral=True,
        )
        view.origin = interaction

    @kudos_group.command(name="history", description="Recent kudos gifts sent and received")
    @app_commands.describe(member="Whose gifts (default: yours)")
    async def history(self, interaction: discord.Interaction, member: discord.User | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = await resolved_user(interaction, member) if member is not None else interaction.user
        sent, received = await self.kudos.history(target.id)
        whose = (
            "Your" if target.id == interaction.user.id else f"{escape_user_text(target.display_name, 80)}'s"
        )
        embed = discord.Embed(title=f"{whose} kudos gifts")
        embed.add_field(
            name="Sent",
            value=_lines([_gift_line(g, sent=True) for g in sent]),
            inline=False,
        )
        embed.add_field(
            name="Received",
            value=_lines([_gift_line(g, sent=False) for g in received]),
            inline=False,
        )
        await interaction.followup.send(embed=embed, ephemeral=True)


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(KudosCog(bot))
