"""The one place where exceptions become what the member sees.

`tree.on_error`, `BaseView.on_error` and `BaseModal.on_error` all call `handle_interaction_error`.
Known errors become a short ephemeral message; anything else is logged with its traceback and the member
gets a generic apology (never the exception text, which could carry internals).
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.crypto import KeyDecryptionError
from bot.errors import UserFacingError
from bot.horde.errors import HordeError, HordeUnavailable, HordeUnexpectedResponse

log = logging.getLogger(__name__)

GENERIC = "Something went wrong on our side. It has been logged; please try again later."
UNEXPECTED_ANSWER = (
    "The AI Horde sent an answer this bot doesn't understand. It has been logged for the bot's operator; "
    "please try again later."
)

# What the member should read for each Horde return code (API_NOTES §2). Phrased as what to do next.
HORDE_MESSAGES: dict[str, str] = {
    "InvalidAPIKey": (
        "The AI Horde rejected your API key (revoked or mistyped?). Link a valid key with `/login`."
    ),
    "UserNotFound": "The AI Horde doesn't know that account or key. Check it and try again.",
    "KudosUpfront": (
        "This request is too large for your kudos: reduce size or steps, or earn kudos first "
        "(the anonymous key has none)."
    ),
    "TooManyPrompts": "You have too many requests waiting on the AI Horde. Wait for one to finish.",
    "CorruptPrompt": "The AI Horde refused this prompt. Change it and try again.",
    "TimeoutIP": "The AI Horde has paused requests from this bot for a while. Please try again later.",
    "MissingPrompt": "The prompt is empty: write what you want and try again.",
    "InvalidPromptSize": "The prompt is too long (the AI Horde allows at most 7500 words).",
    "TooManyLoras": "Too many LoRAs: the AI Horde allows at most 5.",
    "TooManyTIs": "Too many textual inversions: the AI Horde allows at most 20.",
    "BadCFGDecimals": "cfg must have at most 2 decimals.",
    "TooManyUpscalers": "Choose at most one upscaler.",
    "SourceImageResolutionExceeded": (
        "The image is too large: at most 3072×3072 pixels. Resize it and try again."
    ),
    "SourceImageSizeExceeded": "The image file is too large. Use a smaller file (at most 5 MB).",
    "SourceImageUrlInvalid": "The AI Horde could not fetch that image. Upload it again as an attachment.",
    "ImageValidationFailed": "The AI Horde could not read that image. Try a PNG, JPEG or WebP file.",
    "UnsupportedModel": "That model can't do this kind of request. Pick another model.",
    "UnexpectedModelName": "Unknown model name. Pick one from the suggestions (`/models` lists them).",
    "HiResMismatch": "hires_fix doesn't work with that model or size.",
    "SharedKeyEmpty": (
        "The shared key has no kudos left. Ask its owner to top it up, or link your own key with `/login`."
    ),
    "SharedKeyExpired": (
        "The shared key has expired. Ask its owner for a new one, or link your own key with `/login`."
    ),
    "SharedKeyInsufficientKudos": (
        "The shared key doesn't have enough kudos for this request. Make it smaller, or ask the key's "
        "owner to top it up."
    ),
    "KudosTransferNotEnough": "You don't have enough kudos for that transfer.",
    "KudosTransferToSelf": "You can't send kudos to yourself.",
    "KudosTransferFromAnon": "The anonymous key can't send kudos. Link your own key with `/login`.",
    "KudosTransferToAnon": "Kudos can't be sent to the anonymous account.",
    "InvalidTargetUsername": "The AI Horde doesn't know the receiving account.",
    "TooFastKudosTransfers": "Kudos went back and forth too fast between these accounts; try again in 1 min.",
    "InvalidKudosTransferAmount": "The amount must be a positive whole number.",
    "NegativeKudosTransfer": "The amount must be a positive whole number.",
    "RequestNotFound": (
        "The AI Horde no longer has that request (it expired or was cancelled). Please send it again."
    ),
    "MaintenanceMode": "The AI Horde is in maintenance mode. Please try again later.",
    "DeletedUser": "That AI Horde account has been deleted.",
    "RequiresTrust": "That option needs a trusted AI Horde account.",
    "StylesRequiresCustomizer": "Creating styles needs the customizer role on the AI Horde.",
    "BannedClientAgent": "The AI Horde refused this bot's client agent; tell the bot's operator.",
}


def render_error(error: BaseException) -> str | None:
    """The member-facing text for a known error, or None for a bug."""
    if (
        isinstance(error, (app_commands.CommandInvokeError, app_commands.TransformerError))
        and error.__cause__
    ):
        return render_error(error.__cause__)
    if isinstance(error, app_commands.TransformerError):
        # A value discord.py could not turn into the option's type, e.g. a choice that was never offered.
        return "That value isn't one this option accepts: pick one from the list Discord offers."
    if isinstance(error, UserFacingError):
        return error.message
    if isinstance(error, KeyDecryptionError):
        return "Your stored API key can't be read any more. Please link it again with `/login`."
    if isinstance(error, HordeUnexpectedResponse):
        # Not an outage: the Horde answered. The client logged the endpoint and the field.
        return UNEXPECTED_ANSWER
    if isinstance(error, HordeUnavailable):
        return (
            "The AI Horde is not reachable right now (down or too slow). Please try again in a few minutes."
        )
    if isinstance(error, HordeError):
        if error.rc and error.rc in HORDE_MESSAGES:
            return HORDE_MESSAGES[error.rc]
        if error.is_rate_limit:
            wait = f" in {int(error.retry_after) + 1} s" if error.retry_after else " in a moment"
            return f"The AI Horde is rate-limiting this bot. Please try again{wait}."
        if error.status == 400 and error.errors:
            field, problem = next(iter(error.errors.items()))
            return f"The AI Horde rejected the request: {field}: {problem}"
        return f"The AI Horde refused the request: {error.message[:300]} Check your options and try again."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.MissingPermissions):
        return (
            "You need the "
            + ", ".join(p.replace("_", " ") for p in error.missing_permissions)
            + " permission."
        )
    if isinstance(error, app_commands.BotMissingPermissions):
        perms = ", ".join(p.replace("_", " ") for p in error.missing_permissions)
        return f"I'm missing the {perms} permission here."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    if isinstance(error, discord.HTTPException) and error.status == 429:
        return "Discord is rate-limiting this bot right now. Please try again in a minute."
    if isinstance(error, discord.Forbidden):
        return "Discord didn't let me do that here (missing permissions)."
    return None


async def send_ephemeral(interaction: discord.Interaction, text: str) -> None:
    """Reply ephemerally whether or not the interaction was already answered."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        # The interaction token may have expired (15 min) or Discord is down: nothing more we can say.
        log.warning("could not deliver an error message for interaction %s", interaction.id)


async def handle_interaction_error(interaction: discord.Interaction, error: BaseException) -> None:
    text = render_error(error)
    if text is None:
        command = interaction.command.qualified_name if interaction.command else interaction.data
        log.error("unhandled error in interaction (%s)", command, exc_info=error)
        text = GENERIC
    else:
        log.info("interaction %s ended with a user-facing error: %s", interaction.id, type(error).__name__)
    await send_ephemeral(interaction, text)
