"""Pages of embeds with Previous/Next buttons that only the invoker can press and that stop on timeout."""

from __future__ import annotations

import contextlib
import secrets

import discord

from bot.ui.base import BaseView


class Paginator(BaseView):
    def __init__(
        self,
        pages: list[discord.Embed],
        *,
        owner_id: int,
        timeout: float,
        process: str | None = None,
        open_views: set[str] | None = None,
    ) -> None:
        super().__init__(owner_id=owner_id, timeout=timeout)
        if not pages:
            raise ValueError("a paginator needs at least one page")
        if process is not None:
            # "page:<process>:<nonce>:<direction>": after a restart the owner of `process` (a cog) can
            # recognise the old run's buttons and answer them (a view lives in memory only, and its timeout
            # died with the old process, so its buttons were never removed).
            # Listed in `open_views` while this view answers its buttons itself; once it has timed out (and
            # the edit removing the buttons failed), the cog's stale-button handler answers them.
            nonce = secrets.token_hex(4)
            self.previous.custom_id = f"page:{process}:{nonce}:prev"
            self.next.custom_id = f"page:{process}:{nonce}:next"
        self.nonce = nonce if process is not None else None
        self._open_views = open_views if open_views is not None else set()
        if self.nonce is not None:
            self._open_views.add(self.nonce)
        self.pages = pages
        self.index = 0
        self.message: discord.Message | discord.WebhookMessage | None = None
        for number, page in enumerate(pages, start=1):
            footer = f"Page {number}/{len(pages)}"
            page.set_footer(text=f"{page.footer.text} · {footer}" if page.footer.text else footer)
        self._sync()

    def _sync(self) -> None:
        self.previous.disabled = self.index == 0
        self.next.disabled = self.index >= len(self.pages) - 1

    @property
    def current(self) -> discord.Embed:
        return self.pages[self.index]

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary, emoji="◀️")
    async def previous(self, interaction: discord.Interaction, _button: discord.ui.Button[Paginator]) -> None:
        self.index = max(0, self.index - 1)
        self._sync()
        await interaction.response.edit_message(embed=self.current, view=self)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.secondary, emoji="▶️")
    async def next(self, interaction: discord.Interaction, _button: discord.ui.Button[Paginator]) -> None:
        self.index = min(len(self.pages) - 1, self.index + 1)
        self._sync()
        await interaction.response.edit_message(embed=self.current, view=self)

    async def on_timeout(self) -> None:
        """Remove the buttons so nobody presses a dead control."""
        if self.nonce is not None:
            self._open_views.discard(self.nonce)
        if self.message is None:
            return
        # Deleted, or the interaction token expired: then there is nothing left to tidy.
        with contextlib.suppress(discord.HTTPException):
            await self.message.edit(view=None)
