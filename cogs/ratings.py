"""/rate, /rate-party, /rate-stats, and the Rate button on shared generations.

Every button is a `DynamicItem` whose custom_id carries only our own database row id (never a ratings or
Horde id), so buttons keep working after a restart; whose clicks count is decided by the service, from the
database. Every click is acknowledged first (the ratings service may be slow), then answered.

For the generation feature: `generation_rate_button(rating_id)` is the button to add to a generation
result, with `rating_id` from `services.ratings.offer_generation_rating(...)` (None: no button).
"""

from __future__ import annotations

import io
import logging
import re
from datetime import datetime
from typing import Any, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot, calls_horde
from bot.services.ratings import (
    ARTIFACT_LABELS,
    CHOOSING,
    FAILED,
    MAX_DATASET_CHARS,
    RETRYING,
    SUBMITTED,
    SUBMITTING,
    GenerationStep,
    PartySummary,
    RatingsService,
    ServedImage,
    Totals,
    VoteRecord,
    kudos_text,
)
from bot.ui.base import BaseDynamicButton
from bot.ui.embeds import HORDE_COLOUR
from bot.ui.text import escape_user_text

log = logging.getLogger(__name__)
Dataset = app_commands.Range[str, 1, MAX_DATASET_CHARS]

ID = r"[0-9]{1,18}"
ARTIFACT_STYLES = (
    discord.ButtonStyle.success,
    discord.ButtonStyle.secondary,
    discord.ButtonStyle.secondary,
    discord.ButtonStyle.secondary,
    discord.ButtonStyle.secondary,
    discord.ButtonStyle.danger,
)
AESTHETIC_HELP = "How much do you like this image, on its own? **1** = not at all … **10** = love it."
ARTIFACT_HELP = (
    "Any flaws? **0** flawless · **1** little · **2** some · **3** obvious · **4** harmful · **5** garbage"
)


def _ratings(interaction: discord.Interaction) -> RatingsService:
    return cast(HordeBot, interaction.client).services.ratings


def _cog(interaction: discord.Interaction) -> RatingsCog | None:
    cog = cast(HordeBot, interaction.client).get_cog("RatingsCog")
    return cog if isinstance(cog, RatingsCog) else None


def artifact_label(value: int) -> str:
    return f"{value} · {ARTIFACT_LABELS[value]}"


# --- rendering ------------------------------------------------------------------------------------------


# The image is a plain attachment shown above the embed, not the embed's `attachment://` image: editing
# an embed that points at an attachment makes Discord show the image twice, and every step edits it.
def served_embed(
    served: ServedImage, *, party_until: datetime | None = None, starter: str = ""
) -> discord.Embed:
    if party_until is None:
        embed = discord.Embed(title="Rate this image", description=AESTHETIC_HELP, colour=HORDE_COLOUR)
    else:
        ends = int(party_until.timestamp())
        embed = discord.Embed(
            title="Rating party!",
            description=(
                f"{AESTHETIC_HELP}\nEvery linked member can rate once and earns kudos with their own key. "
                f"Ends <t:{ends}:R>."
            ),
            colour=HORDE_COLOUR,
        )
        if starter:
            embed.set_author(name=f"Started by {starter}")
    footer = "Ratings feed the open aesthetic datasets of the AI Horde (LAION)."
    if served.dataset:
        footer = f"Dataset: {served.dataset[:100]} · " + footer
    embed.set_footer(text=footer)
    return embed


def vote_embed(vote: VoteRecord, *, retry_in: float | None = None, solo: bool = True) -> discord.Embed:
    chosen = f"You rated it **{vote.rating}/10**"
    if vote.artifacts is not None:
        chosen += f" with **{ARTIFACT_LABELS[vote.artifacts]}**"
    if vote.state == CHOOSING:
        return discord.Embed(
            title="Rate this image", description=f"{chosen}.\n{ARTIFACT_HELP}", colour=HORDE_COLOUR
        )
    if vote.state == SUBMITTED and vote.reward is None:
        embed = discord.Embed(
            title="Thanks! Rating delivered",
            description=f"{chosen}. {escape_user_text(vote.error or '', 500)}",
            colour=discord.Colour.green(),
        )
    elif vote.state == SUBMITTED:
        embed = discord.Embed(
            title=f"Thanks! +{kudos_text(vote.reward)} kudos",
            description=f"{chosen}. Your rating was submitted and the kudos go to your AI Horde account.",
            colour=discord.Colour.green(),
        )
    elif vote.state in (RETRYING, SUBMITTING):
        when = f" in about {int(retry_in) + 1} s" if retry_in is not None else " shortly"
        embed = discord.Embed(
            title="Rating saved, not delivered yet",
            description=(
                f"{chosen}. The ratings service is not answering right now, so I'll send it again{when} "
                "and tell you how it went. No need to click again."
            ),
            colour=discord.Colour.orange(),
        )
    else:
        embed = discord.Embed(
            title="Rating not submitted",
            description=f"{chosen}.\n{escape_user_text(vote.error or 'The rating failed.', 1000)}",
            colour=discord.Colour.red(),
        )
    if solo and vote.state in (SUBMITTED, FAILED, RETRYING, SUBMITTING):
        embed.set_footer(text="Press Next image to keep going.")
    return embed


def aesthetic_view(image_row_id: int, *, solo: bool) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for value in range(1, 11):
        view.add_item(AestheticButton(image_row_id, value))
    if solo:
        view.add_item(SkipButton(image_row_id))
    return view


def artifacts_view(vote_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for value in range(6):
        view.add_item(ArtifactButton(vote_id, value))
    return view


def next_view(image_row_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(NextImageButton(image_row_id, label="Next image"))
    return view


def file_of(served: ServedImage) -> discord.File:
    return discord.File(io.BytesIO(served.data), filename=served.filename)


def totals_text(totals: Totals) -> str:
    text = (
        f"**{totals.submitted:,}** ratings submitted · **{kudos_text(totals.rewards)}** kudos earned · "
        f"**{totals.failures:,}** failed"
    )
    if totals.pending:
        text += f" · **{totals.pending:,}** waiting for a retry"
    return text


def distribution_text(summary: PartySummary) -> str:
    top = max(summary.counts.values()) or 1
    lines = []
    for value in range(10, 0, -1):
        count = summary.counts.get(value, 0)
        bar = "█" * round(12 * count / top) if count else ""
        lines.append(f"{value:>2} │{bar:<12} {count}")
    return "```\n" + "\n".join(lines) + "\n```"


def party_results_embed(message: discord.Message, summary: PartySummary) -> discord.Embed:
    """The party's message once it ended: its image stays, the buttons go, the distribution is shown."""
    embed = message.embeds[0] if message.embeds else discord.Embed(colour=HORDE_COLOUR)
    embed.title = "Rating party: results"
    average = summary.average
    if summary.raters:
        embed.description = (
            f"**{summary.raters}** member(s) rated this image, average **{average:.1f}/10**."
            if average is not None
            else ""
        )
        embed.clear_fields()
        embed.add_field(name="Ratings", value=distribution_text(summary), inline=False)
    else:
        embed.description = "Nobody rated this image. Next time!"
    return embed


def generation_step_message(step: GenerationStep) -> tuple[discord.Embed, discord.ui.View | None]:
    record = step.record
    number = f"Image {step.position + 1} of {step.total}"
    if step.phase in ("rating", "artifacts"):
        if step.phase == "rating":
            embed = discord.Embed(title=f"Rate your images: {number}", description=AESTHETIC_HELP)
            view = discord.ui.View(timeout=None)
            for value in range(1, 11):
                view.add_item(GenerationAestheticButton(record.id, step.position, value))
        else:
            chosen = record.items[step.position].rating
            embed = discord.Embed(
                title=f"Rate your images: {number}",
                description=f"You rated it **{chosen}/10**.\n{ARTIFACT_HELP}",
            )
            view = discord.ui.View(timeout=None)
            for value in range(6):
                view.add_item(GenerationArtifactButton(record.id, step.position, value))
        embed.colour = HORDE_COLOUR
        if step.position < len(record.preview_urls):
            embed.set_image(url=record.preview_urls[step.position])
        embed.set_footer(text="Your ratings go to the AI Horde's open aesthetic datasets and refund kudos.")
        return embed, view
    if record.state == SUBMITTED:
        return (
            discord.Embed(
                title=f"Thanks! +{kudos_text(record.reward)} kudos",
                description=f"Your ratings of {step.total} image(s) were submitted to the AI Horde.",
                colour=discord.Colour.green(),
            ),
            None,
        )
    if record.state in (RETRYING, SUBMITTING):
        return (
            discord.Embed(
                title="Ratings saved, not delivered yet",
                description="The AI Horde is not answering right now; I'll send them again shortly "
                "and tell you how it went.",
                colour=discord.Colour.orange(),
            ),
            None,
        )
    return (
        discord.Embed(
            title="Ratings not submitted",
            description=escape_user_text(record.error or "The rating failed.", 1000),
            colour=discord.Colour.red(),
        ),
        None,
    )


# --- buttons --------------------------------------------------------------------------------------------


def _aesthetic_button(value: int, custom_id: str) -> discord.ui.Button[Any]:
    """A 1-10 rating (an image's or a generation's): 1-5 on the first row, 6-10 on the second."""
    return discord.ui.Button(
        label=str(value),
        style=discord.ButtonStyle.primary if value == 10 else discord.ButtonStyle.secondary,
        custom_id=custom_id,
        row=0 if value <= 5 else 1,
    )


def _artifact_button(value: int, custom_id: str) -> discord.ui.Button[Any]:
    """A 0-5 flaws rating, on two rows."""
    return discord.ui.Button(
        label=artifact_label(value),
        style=ARTIFACT_STYLES[value],
        custom_id=custom_id,
        row=0 if value < 3 else 1,
    )


class _RatingsButton(BaseDynamicButton, template=r"(?!x)x"):
    """The ratings feature's persistent buttons (errors answered through the one handler)."""


class AestheticButton(_RatingsButton, template=rf"rate:a:(?P<row>{ID}):(?P<value>[0-9]{{1,2}})"):
    def __init__(self, image_row_id: int, value: int) -> None:
        super().__init__(_aesthetic_button(value, f"rate:a:{image_row_id}:{value}"))
        self.image_row_id = image_row_id
        self.value = value

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> AestheticButton:
        return cls(int(match["row"]), int(match["value"]))

    async def run(self, interaction: discord.Interaction) -> None:
        ratings = _ratings(interaction)
        message = interaction.message
        if message is not None and message.flags.ephemeral:
            # `/rate`: the member's own image; the next step replaces the buttons of this message.
            await interaction.response.defer()
            choice = await ratings.choose(self.image_row_id, interaction.user.id, self.value)
            if not choice.created and choice.vote.state == SUBMITTING:
                return  # another click is submitting it and will show the outcome
            await _show_vote(interaction, choice.vote, solo=True)
            return
        # A rating party: the public message stays; each member gets their own next step.
        await interaction.response.defer(ephemeral=True, thinking=True)
        choice = await ratings.choose(self.image_row_id, interaction.user.id, self.value)
        vote = choice.vote
        if vote.state == CHOOSING:
            embed = vote_embed(vote, solo=False)
            await interaction.followup.send(embed=embed, view=artifacts_view(vote.id), ephemeral=True)
        else:
            embed = vote_embed(vote, retry_in=ratings.retry_eta("vote", vote.id), solo=False)
            embed.title = "You already rated this image"
            await interaction.followup.send(embed=embed, ephemeral=True)


class ArtifactButton(_RatingsButton, template=rf"rate:f:(?P<vote>{ID}):(?P<value>[0-5])"):
    def __init__(self, vote_id: int, value: int) -> None:
        super().__init__(_artifact_button(value, f"rate:f:{vote_id}:{value}"))
        self.vote_id = vote_id
        self.value = value

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ArtifactButton:
        return cls(int(match["vote"]), int(match["value"]))

    async def run(self, interaction: discord.Interaction) -> None:
        # Acknowledge before anything else: the submission goes to a service that may be slow or down.
        await interaction.response.defer()
        ratings = _ratings(interaction)
        outcome = await ratings.submit(self.vote_id, interaction.user.id, self.value)
        if not outcome.won and outcome.vote.state == SUBMITTING:
            return  # another click is submitting it and will show the outcome
        image = await ratings.image(outcome.vote.image_row_id)
        solo = image is not None and not image.is_party
        await _show_vote(interaction, outcome.vote, solo=solo)


async def _show_vote(interaction: discord.Interaction, vote: VoteRecord, *, solo: bool) -> None:
    ratings = _ratings(interaction)
    retry_in = ratings.retry_eta("vote", vote.id)
    embed = vote_embed(vote, retry_in=retry_in, solo=solo)
    if vote.state == CHOOSING:
        view: discord.ui.View | None = artifacts_view(vote.id)
    elif solo:
        view = next_view(vote.image_row_id)
    else:
        view = None
    if vote.state == RETRYING:
        cog = _cog(interaction)
        if cog is not None:
            cog.remember(("vote", vote.id), interaction)
    await interaction.edit_original_response(embed=embed, view=view)


class NextImageButton(_RatingsButton, template=rf"rate:n:(?P<row>{ID})"):
    def __init__(self, image_row_id: int, *, label: str = "Next image") -> None:
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.primary if label == "Next image" else discord.ButtonStyle.secondary,
                custom_id=f"rate:n:{image_row_id}",
                row=2,
            )
        )
        self.image_row_id = image_row_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> NextImageButton:
        return cls(int(match["row"]))

    async def run(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        served = await _ratings(interaction).next_image(self.image_row_id, interaction.user.id)
        if served is None:
            return  # a double click: the first one is already showing the next image
        await interaction.edit_original_response(
            embed=served_embed(served),
            attachments=[file_of(served)],
            view=aesthetic_view(served.row.id, solo=True),
        )


class SkipButton(_RatingsButton, template=rf"rate:s:(?P<row>{ID})"):
    """Skip an image without rating it. Each skip fetches and downloads another image, so skips count
    against the member's request budget like the Horde-calling commands (a rating paces itself)."""

    def __init__(self, image_row_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Skip", style=discord.ButtonStyle.secondary, custom_id=f"rate:s:{image_row_id}", row=2
            )
        )
        self.image_row_id = image_row_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> SkipButton:
        return cls(int(match["row"]))

    async def run(self, interaction: discord.Interaction) -> None:
        services = cast(HordeBot, interaction.client).services
        await services.safety.gate(user_id=interaction.user.id, guild_id=interaction.guild_id)
        await NextImageButton(self.image_row_id, label="Skip").run(interaction)


class RateGenerationButton(_RatingsButton, template=rf"rgen:(?P<row>{ID})"):
    """The Rate button on a generation result (public): opens the member's private two-step flow."""

    def __init__(self, rating_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Rate", emoji="⭐", style=discord.ButtonStyle.secondary, custom_id=f"rgen:{rating_id}"
            )
        )
        self.rating_id = rating_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RateGenerationButton:
        return cls(int(match["row"]))

    async def run(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        previews = []
        if interaction.message is not None:
            previews = [
                a.url for a in interaction.message.attachments if (a.content_type or "").startswith("image/")
            ]
        step = await _ratings(interaction).begin_generation_rating(
            self.rating_id, interaction.user.id, previews
        )
        embed, view = generation_step_message(step)
        if view is None:
            await interaction.followup.send(embed=embed, ephemeral=True)
        else:
            await interaction.followup.send(embed=embed, view=view, ephemeral=True)


def generation_rate_button(rating_id: int) -> RateGenerationButton:
    """For the generation feature: the Rate button to add to a result's view (see module docstring)."""
    return RateGenerationButton(rating_id)


class _GenerationChoiceButton(_RatingsButton, template=r"(?!x)x"):
    """A value for one image of a generation's rating: `rgen:<a|f>:<rating row>:<image position>:<value>`."""

    def __init__(self, rating_id: int, position: int, value: int, button: discord.ui.Button[Any]) -> None:
        super().__init__(button)
        self.rating_id = rating_id
        self.position = position
        self.value = value

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Any:
        return cls(int(match["row"]), int(match["pos"]), int(match["value"]))  # type: ignore[call-arg]

    async def run(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        step = await self.choose(_ratings(interaction), interaction.user.id)
        if step is not None:
            await _show_generation_step(interaction, step)

    async def choose(self, ratings: RatingsService, user_id: int) -> GenerationStep | None:
        raise NotImplementedError


class GenerationAestheticButton(
    _GenerationChoiceButton, template=rf"rgen:a:(?P<row>{ID}):(?P<pos>[0-9]{{1,2}}):(?P<value>[0-9]{{1,2}})"
):
    def __init__(self, rating_id: int, position: int, value: int) -> None:
        super().__init__(
            rating_id,
            position,
            value,
            _aesthetic_button(value, f"rgen:a:{rating_id}:{position}:{value}"),
        )

    async def choose(self, ratings: RatingsService, user_id: int) -> GenerationStep | None:
        return await ratings.choose_generation_rating(self.rating_id, user_id, self.position, self.value)


class GenerationArtifactButton(
    _GenerationChoiceButton, template=rf"rgen:f:(?P<row>{ID}):(?P<pos>[0-9]{{1,2}}):(?P<value>[0-5])"
):
    def __init__(self, rating_id: int, position: int, value: int) -> None:
        super().__init__(
            rating_id,
            position,
            value,
            _artifact_button(value, f"rgen:f:{rating_id}:{position}:{value}"),
        )

    async def choose(self, ratings: RatingsService, user_id: int) -> GenerationStep | None:
        return await ratings.choose_generation_artifacts(self.rating_id, user_id, self.position, self.value)


async def _show_generation_step(interaction: discord.Interaction, step: GenerationStep) -> None:
    embed, view = generation_step_message(step)
    if step.record.state == RETRYING:
        cog = _cog(interaction)
        if cog is not None:
            cog.remember(("rating", step.record.id), interaction)
    await interaction.edit_original_response(embed=embed, view=view)


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    AestheticButton,
    ArtifactButton,
    NextImageButton,
    SkipButton,
    RateGenerationButton,
    GenerationAestheticButton,
    GenerationArtifactButton,
)


# --- commands -------------------------------------------------------------------------------------------


class RatingsCog(commands.Cog):
    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot
        self.ratings = bot.services.ratings
        self.clock = bot.services.clock
        # Clicks whose rating is being retried in the background: told the outcome while the token lives
        # (the bot's one registry of live tokens; keys ("vote", vote id) and ("rating", rating id)).
        self.replies = bot.replies

    async def cog_load(self) -> None:
        self.ratings.on_vote_settled.subscribe(self._vote_settled)
        self.ratings.on_generation_settled.subscribe(self._generation_settled)
        self.ratings.on_party_closed.subscribe(self._party_closed)
        await self.ratings.start()

    async def cog_unload(self) -> None:
        self.ratings.on_vote_settled.unsubscribe(self._vote_settled)
        self.ratings.on_generation_settled.unsubscribe(self._generation_settled)
        self.ratings.on_party_closed.unsubscribe(self._party_closed)

    def remember(self, key: tuple[str, int], interaction: discord.Interaction) -> None:
        self.replies.add(key, interaction)

    def _take(self, key: tuple[str, int]) -> discord.Interaction | None:
        return self.replies.take(key)

    async def _vote_settled(self, vote: VoteRecord) -> None:
        interaction = self._take(("vote", vote.id))
        if interaction is None:
            return  # the outcome is in /rate-stats
        embed = vote_embed(vote, solo=False)
        embed.title = (embed.title or "") + " (earlier rating)"
        await interaction.followup.send(embed=embed, ephemeral=True)

    async def _generation_settled(self, record: Any) -> None:
        interaction = self._take(("rating", record.id))
        if interaction is None:
            return
        embed, _ = generation_step_message(GenerationStep(record, "done", max(0, len(record.items) - 1)))
        await interaction.followup.send(embed=embed, ephemeral=True)

    async def _party_closed(self, summary: PartySummary, attempt: int = 1) -> None:
        row = summary.row
        if row.channel_id is None or row.message_id is None:
            return
        channel = self.bot.get_channel(row.channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            return
        try:
            message = await channel.fetch_message(row.message_id)
            await message.edit(embed=party_results_embed(message, summary), view=None)
        except (discord.NotFound, discord.Forbidden) as exc:
            # Deleted by a moderator, or the bot lost access: the results have nowhere to go.
            log.info("rating party %s: its message is gone (%s)", row.id, exc.status)
        except discord.HTTPException as exc:
            # A Discord rate limit discord.py gave up on, or an outage: show the results a little later.
            settings = self.ratings.settings
            if (exc.status == 429 or exc.status >= 500) and attempt < settings.submit_attempts:
                delay = settings.retry_base_seconds * 2 ** (attempt - 1)
                log.info(
                    "rating party %s: results not posted (%s), again in %.0f s", row.id, exc.status, delay
                )

                async def again() -> None:
                    await self._party_closed(summary, attempt + 1)

                self.bot.services.scheduler.call_later(f"ratings:party-results:{row.id}", delay, again)
            else:
                log.warning("rating party %s: results could not be posted (%s)", row.id, exc.status)

    # --- /rate -----------------------------------------------------------------------------------------

    @calls_horde
    @app_commands.command(
        name="rate", description="Rate images for the AI Horde's open datasets and earn kudos"
    )
    @app_commands.describe(dataset="Which dataset to rate (default: any)")
    @app_commands.guild_only()
    async def rate(self, interaction: discord.Interaction, dataset: Dataset | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        served = await self.ratings.serve(
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            discord_id=interaction.user.id,
            dataset=dataset,
        )
        await interaction.edit_original_response(
            embed=served_embed(served),
            attachments=[file_of(served)],
            view=aesthetic_view(served.row.id, solo=True),
        )

    async def _dataset_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        datasets = await self.ratings.dataset_choices(current)
        return [app_commands.Choice(name=d.label[:100], value=d.id[:100]) for d in datasets]

    @rate.autocomplete("dataset")
    async def rate_dataset_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return await self._dataset_choices(interaction, current)

    # --- /rate-party -----------------------------------------------------------------------------------

    @calls_horde
    @app_commands.command(
        name="rate-party", description="Post an image for everyone here to rate for a few minutes"
    )
    @app_commands.describe(dataset="Which dataset to take the image from (default: any)")
    @app_commands.guild_only()
    async def rate_party(self, interaction: discord.Interaction, dataset: Dataset | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None and interaction.channel_id is not None
        channel = interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            await interaction.followup.send("I can't post in this channel.", ephemeral=True)
            return
        served = await self.ratings.start_party(
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            discord_id=interaction.user.id,
            dataset=dataset,
        )
        ends = served.row.ends_at or self.clock.now()
        starter = escape_user_text(interaction.user.display_name, 80)
        try:
            message = await channel.send(
                embed=served_embed(served, party_until=ends, starter=starter),
                file=file_of(served),
                view=aesthetic_view(served.row.id, solo=False),
            )
        except discord.HTTPException:
            await self.ratings.end_party(served.row.id)
            raise
        await self.ratings.set_party_message(served.row.id, message.id)
        await interaction.followup.send(
            f"Your rating party is on! It ends <t:{int(ends.timestamp())}:R>; rate it yourself too.",
            ephemeral=True,
        )

    @rate_party.autocomplete("dataset")
    async def party_dataset_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return await self._dataset_choices(interaction, current)

    # --- /rate-stats -----------------------------------------------------------------------------------

    @app_commands.command(name="rate-stats", description="Image rating figures: yours and this server's")
    @app_commands.guild_only()
    async def rate_stats(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        stats = await self.ratings.stats(guild_id=interaction.guild_id, discord_id=interaction.user.id)
        embed = discord.Embed(title="Image ratings", colour=HORDE_COLOUR)
        embed.add_field(name="You", value=totals_text(stats.member), inline=False)
        embed.add_field(name="This server", value=totals_text(stats.guild), inline=False)
        embed.set_footer(text="Rate with /rate; each rating earns kudos for your AI Horde account.")
        await interaction.followup.send(embed=embed, ephemeral=True)


async def setup(bot: HordeBot) -> None:
    bot.add_dynamic_items(*DYNAMIC_ITEMS)
    await bot.add_cog(RatingsCog(bot))
