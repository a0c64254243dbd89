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
        "This request needs kudos upfront, more than your AI Horde account has. Make it smaller "
        "(size, steps), or earn kudos first."
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
    "BadClientAgent": "The AI Horde refused this bot's client agent; tell the bot's operator.",
    # Request options the AI Horde refused (API_NOTES §4, §5; swagger `RequestError.rc`).
    "InvalidSize": "That size isn't allowed: width and height must be multiples of 64, from 64 to 3072.",
    "TooManySteps": "Too many steps for the AI Horde: lower `steps` and try again.",
    "KudosValidationError": "The AI Horde refused this request's kudos cost. Make it smaller and try again.",
    "Profanity": "The AI Horde refused a name with profanity in it. Choose another name.",
    "TooLong": "A text option is too long for the AI Horde. Shorten it and try again.",
    "NameAlreadyExists": "That name is already taken on the AI Horde. Choose another one.",
    "SourceImageUnreadable": "The AI Horde could not read that image. Try a PNG, JPEG or WebP file.",
    "InpaintingMissingMask": "Inpainting needs an image with transparent areas to paint in.",
    "SourceMaskUnnecessary": "This kind of request doesn't take a mask. Leave it out and try again.",
    "UnsupportedSampler": "That sampler doesn't work with this model. Pick another sampler.",
    "ControlNetUnsupported": "That model can't use ControlNet. Use SD 1.5 or leave `control_type` out.",
    "ControlNetSourceMissing": "ControlNet needs a source image: attach one, or leave `control_type` out.",
    "ControlNetInvalidPayload": "The AI Horde refused these ControlNet options. Check them and try again.",
    "ControlNetMismatch": "ControlNet doesn't work with these options. Leave it out and try again.",
    "SourceImageRequiredForModel": "That model needs a source image: attach one, or pick another model.",
    "HiResFixMismatch": "hires_fix doesn't work with that model or size.",
    "BadLoraVersion": "A LoRA version must be a number (its CivitAI version id).",
    "BadCFGNumber": "cfg must be a number between 0 and 100.",
    "Img2ImgMismatch": "That model can't start from an image. Pick another model.",
    "TilingMismatch": "tiling doesn't work with that model. Turn it off or pick another model.",
    "InvalidRemixModel": "Remix needs the Stable Cascade remix model. Pick it, or another mode.",
    "InvalidExtraSourceImages": "The AI Horde could not read the extra images. Try PNG, JPEG or WebP files.",
    "TooManyExtraSourceImages": "Too many extra images: the AI Horde allows at most 5.",
    "InvalidTransparencyModel": "Transparent images only work with SD 1.5 and SDXL models.",
    "InvalidTransparencyImg2Img": "Transparent images can't start from a source image.",
    "InvalidTransparencyCN": "Transparent images can't be combined with ControlNet.",
    "TokenOverflow": "The answer can't be longer than the context: lower `max_length` and try again.",
    "TooManyStopSequences": "Too many stop sequences: the AI Horde allows at most 128.",
    "ExcessiveStopSequence": "The stop sequences are too long together (at most 2000 characters).",
    "MissingFullSamplerOrder": "A sampler order must list all 7 samplers.",
    "NulByteInPayload": "The request contains a NUL character; remove it and try again.",
    "NoValidWorkers": "No AI Horde worker can serve this request right now. Try another model or size.",
    "StyleMismatch": "That style doesn't fit this kind of request. Pick another style.",
    "StyleGetMistmatch": "That style doesn't fit this kind of request. Pick another style.",
    "StylesAnonForbidden": "Styles need a linked AI Horde account: use `/login` first.",
    "AnonForbidden": "The anonymous key can't do that. Link your own AI Horde key with `/login`.",
    "BetaAnonForbidden": "The anonymous key can't use that model. Link your own AI Horde key with `/login`.",
    "NotTrusted": "That option needs a trusted AI Horde account.",
    "UnsafeIP": "The AI Horde doesn't accept requests from this bot's network right now. Try again later.",
    "UntrustedUnsafeIP": "The AI Horde doesn't accept requests from this bot's network right now.",
    "TooManyNewIPs": "The AI Horde is limiting new connections right now. Please try again later.",
    "RequestExpired": "The AI Horde dropped that request (it expired). Please send it again.",
    "WorkerNotFound": "The AI Horde doesn't know that worker.",
    "TeamNotFound": "The AI Horde doesn't know that team.",
    "SharedKeyInvalid": "The AI Horde doesn't know that shared key (deleted?). Check it and try again.",
    "SharedKeyAssignedStyles": "That shared key can only be used with its own styles.",
    # Kudos transfers (API_NOTES §7).
    "EducationCannotSendKudos": "Education accounts can't send kudos on the AI Horde.",
    "SourceAccountFlagged": "The AI Horde has flagged the sending account: it can't send kudos now.",
    "TargetAccountFlagged": "The AI Horde has flagged the receiving account: it can't receive kudos now.",
    "FaultWhenKudosSending": "The AI Horde couldn't take the kudos from the sending account. Try later.",
    "FaultWhenKudosReceiving": "The AI Horde couldn't give the kudos to the receiving account. Try later.",
}

# When the request was paid by this server's shared key (/serverkey) or the anonymous key, the member is
# told about *that* key and what they can do, never about "your key" (issue #15, part 4).
SERVER_KEY_MESSAGES: dict[str, str] = {
    "InvalidAPIKey": (
        "The AI Horde rejected this server's shared key (deleted or revoked?), which pays for members "
        "without a linked account. Link your own key with `/login`, or ask an admin to set a new one "
        "with `/serverkey set`."
    ),
    "KudosUpfront": (
        "This request needs kudos upfront, and this server's shared key doesn't have enough for it. "
        "Make it smaller (size, steps), link your own key with `/login`, or ask an admin to top the key up."
    ),
    "TooManyPrompts": (
        "This server's shared key (used by every member without a linked account) has too many requests "
        "waiting on the AI Horde. Wait for some to finish, or link your own key with `/login`."
    ),
    "NotTrusted": (
        "That option needs a trusted AI Horde account, and this server's shared key isn't one. "
        "Link your own trusted key with `/login`, or leave the option out."
    ),
    "RequiresTrust": (
        "That option needs a trusted AI Horde account, and this server's shared key isn't one. "
        "Link your own trusted key with `/login`, or leave the option out."
    ),
}
SERVER_KEY_MESSAGES["SharedKeyInvalid"] = SERVER_KEY_MESSAGES["InvalidAPIKey"]
# A party's shared key (its host pays the thread's generations) that can't pay any more: the next request
# in the thread is paid by the member's own key (or the server's), as anywhere else.
PARTY_KEY_MESSAGE = (
    "The party's shared key can't pay any more (its kudos are spent, or its host deleted it). Send your "
    "request again: your own key pays from now on."
)
PARTY_KEY_RCS = (
    "SharedKeyEmpty",
    "SharedKeyExpired",
    "SharedKeyInsufficientKudos",
    "SharedKeyInvalid",
    "InvalidAPIKey",
)
ANON_KEY_MESSAGES: dict[str, str] = {
    "KudosUpfront": (
        "This request needs kudos upfront, and the anonymous key has none. Make it smaller (size, steps), "
        "or link your own AI Horde key with `/login`."
    ),
    "TooManyPrompts": (
        "The anonymous key, shared by everyone, has too many requests waiting on the AI Horde. Try again "
        "in a moment, or link your own AI Horde key with `/login`."
    ),
}


def _horde_message(error: HordeError) -> str | None:
    """The mapped text for a Horde refusal, naming the key that paid for the request."""
    rc = error.rc or ("InvalidAPIKey" if error.status == 401 else None)
    if rc is None:
        return None
    if error.key_source == "guild" and rc in SERVER_KEY_MESSAGES:
        return SERVER_KEY_MESSAGES[rc]
    if error.key_source == "anon" and rc in ANON_KEY_MESSAGES:
        return ANON_KEY_MESSAGES[rc]
    if error.key_source == "party" and rc in PARTY_KEY_RCS:
        return PARTY_KEY_MESSAGE
    if rc == "BadRequest":
        # The Horde's generic rc: its message is the specific part ("webhooks need to point to an https
        # endpoint.").
        return (
            f"The AI Horde refused an option of this request: {error.message[:300]} Change it and try again."
        )
    return HORDE_MESSAGES.get(rc)


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
        mapped = _horde_message(error)
        if mapped is not None:
            return mapped
        if error.is_rate_limit:
            wait = f" in {int(error.retry_after) + 1} s" if error.retry_after else " in a moment"
            return f"The AI Horde is rate-limiting this bot. Please try again{wait}."
        if error.status == 400 and error.errors:
            field, problem = next(iter(error.errors.items()))
            if len(problem) > 200:  # e.g. "'x' is not one of [every form name]"
                problem = problem[:200].rstrip() + "…"
            return f"The AI Horde rejected the request: {field[:100]}: {problem}"
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
