"""The bot's terms (/terms) and their short form (shown by /login): what is stored, for how long, who can
see it, and the AI Horde's rules. Keep this true when a feature stores something new."""

from __future__ import annotations

import discord

from bot.config import RetentionSettings
from bot.ui.embeds import HORDE_COLOUR


def horde_site(api_url: str) -> str:
    """`https://aihorde.net/api` → `https://aihorde.net` (the Horde's website, where its terms live)."""
    site = api_url.rstrip("/")
    for suffix in ("/api/v2", "/api"):
        if site.endswith(suffix):
            return site[: -len(suffix)]
    return site


TERMS_SHORT = (
    "This bot keeps your API key encrypted until `/logout`, with your requests, ratings, presets and "
    "conversations; your prompts and images go to the AI Horde's volunteer workers. No sexual content "
    "involving minors, ever; NSFW only in NSFW channels. Everything: `/terms`."
)


def _days(days: int, forever: str) -> str:
    """A retention period as members read it (0 days means the prune keeps the rows for good)."""
    if days == 0:
        return forever
    return "1 day" if days == 1 else f"{days} days"


def kept_for(retention: RetentionSettings) -> str:
    """How long each kind of row lives on this bot: the operator's `[retention]` settings, not defaults."""
    jobs, chat, ratings = retention.finished_jobs, retention.chat, retention.ratings
    if jobs == chat == ratings:
        finished = "Requests, conversations and ratings: until `/logout`, " + (
            "with no time limit" if jobs == 0 else f"at most {_days(jobs, '')} after they finish"
        )
    else:
        each = ", ".join(
            f"{what} {_days(days, 'with no time limit')}"
            for what, days in (("requests", jobs), ("conversations", chat), ("ratings", ratings))
        )
        finished = f"Until `/logout`, and after they finish at most: {each}"
    return (
        f"Your key and presets: until `/logout` (or until you delete them). {finished}; "
        f"an img2img source image {_days(retention.img2img_sources, '')} after its last use, for Regenerate; "
        f"safety incidents {_days(retention.safety_incidents, 'with no time limit')}. "
        "Gifts stay in the ledger after `/logout` (ids and amounts; it is the other member's record too, "
        "and the Horde keeps its own), "
        f"{_days(retention.kudos_ledger, 'for good')} on this bot."
    )


def terms_embed(api_url: str, retention: RetentionSettings) -> discord.Embed:
    site = horde_site(api_url)
    embed = discord.Embed(
        title="What this bot stores, and the rules",
        description=(
            "This bot sends your requests to the AI Horde, a free cluster of volunteer GPUs. Here is what "
            "it keeps about you and who can see it. `/logout` deletes your key and what it stored about you."
        ),
        colour=HORDE_COLOUR,
    )
    embed.add_field(
        name="What is stored",
        value=(
            "• Your AI Horde **API key**, encrypted, only if you `/login`.\n"
            "• Your **requests** (prompt, options, an img2img source image) and what came back "
            "(model, seed, kudos; not the images), so buttons keep working after a restart.\n"
            "• Your **image ratings**, **presets**, **/chat conversations** and **shared keys** you made "
            "here.\n"
            "• **Kudos gifts** you send or receive (amount, reason): the ledger of transfers.\n"
            "• **Safety incidents**: prompts the filter refused, for this server's moderators."
        ),
        inline=False,
    )
    embed.add_field(
        name="For how long",
        value=kept_for(retention),
        inline=False,
    )
    embed.add_field(
        name="Who can see it",
        value=(
            "Results posted in a channel: everyone there (use `private` to keep them to yourself). "
            "This server's managers: its settings, presets and safety incidents. "
            "The bot's operator: its database (keys are encrypted). Never shown: your key or the Horde's "
            "request ids. The AI Horde and its volunteer workers receive your prompts and images to "
            "process them; rated images may go to the open aesthetic datasets (LAION)."
        ),
        inline=False,
    )
    embed.add_field(
        name="The AI Horde's rules",
        value=(
            "• No sexual content involving minors, in any form: the Horde bans it and blocks the prompts.\n"
            "• NSFW only in NSFW (age-restricted) channels of servers that allow it.\n"
            "• Be kind with shared resources: kudos give priority; the anonymous key is slowest.\n"
            f"The Horde's own terms: {site}/terms — its privacy policy: {site}/privacy"
        ),
        inline=False,
    )
    return embed
