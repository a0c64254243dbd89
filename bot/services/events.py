"""Events one feature publishes for others, as plain dataclasses (no Discord types)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GenerationCompleted:
    """An image generation delivered to Discord (published by the generation service).

    Kudos parties award on it; `message_id` is the bot's result message (gifts on it go to `user_id`).
    """

    job_id: int
    user_id: int
    guild_id: int | None
    channel_id: int
    message_id: int | None
    style: str | None
    model: str | None
    images: int
    anonymous: bool
    prompt: str = ""  # the member's prompt (before any `###` negative): parties check their words in it
