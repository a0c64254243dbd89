"""Every return code and error shape the real AI Horde sent (tests/data/horde/transcripts/) has a message
for members, rendered by the bot's one error renderer (`bot.ui.errors.render_error`): never the generic
fallback (issue #15, part 6)."""

from __future__ import annotations

import pytest

from bot.horde.errors import HordeError
from bot.ui.errors import GENERIC, render_error
from tests.contract.transcripts import Transcript, load_transcripts

# What render_error says for an rc it doesn't know: the Horde's own message, with no advice of ours.
FALLBACK = "The AI Horde refused the request:"
KEY_SOURCES = (None, "own", "guild", "anon")

# The rcs API_NOTES §2 lists as ones "a Discord bot should map", plus the ones issue #15 names: members can
# meet them even where no transcript recorded them.
NAMED_RCS = [
    "InvalidAPIKey",
    "KudosUpfront",
    "TooManyPrompts",
    "CorruptPrompt",
    "TimeoutIP",
    "MissingPrompt",
    "InvalidPromptSize",
    "TooManyLoras",
    "TooManyTIs",
    "BadLoraVersion",
    "BadCFGDecimals",
    "TooManyUpscalers",
    "SourceImageResolutionExceeded",
    "SourceImageSizeExceeded",
    "SourceImageUrlInvalid",
    "ImageValidationFailed",
    "UnsupportedModel",
    "UnexpectedModelName",
    "ControlNetUnsupported",
    "ControlNetSourceMissing",
    "ControlNetInvalidPayload",
    "ControlNetMismatch",
    "HiResMismatch",
    "SharedKeyEmpty",
    "SharedKeyExpired",
    "SharedKeyInsufficientKudos",
    "KudosTransferNotEnough",
    "KudosTransferToSelf",
    "InvalidTargetUsername",
    "TooFastKudosTransfers",
    "InvalidKudosTransferAmount",
    "RequestNotFound",
    "MaintenanceMode",
    "DeletedUser",
    "RequiresTrust",
    "StylesRequiresCustomizer",
    "InvalidSize",
    "TokenOverflow",
    "NulByteInPayload",
]


def _errors() -> list[Transcript]:
    return [t for t in load_transcripts() if t.status >= 400]


def _from(t: Transcript, key_source: str | None = None) -> HordeError:
    retry_after = t.header("Retry-After")
    error = HordeError.from_response(t.status, t.body, float(retry_after) if retry_after else None)
    error.key_source = key_source
    return error


def test_the_transcripts_hold_the_codes_the_issue_names() -> None:
    recorded = {t.rc for t in _errors() if t.rc}
    assert {"KudosUpfront", "TooFastKudosTransfers", "KudosTransferToSelf", "TooManyLoras"} <= recorded
    assert len(recorded) >= 15


@pytest.mark.parametrize("t", _errors(), ids=lambda t: t.name)
@pytest.mark.parametrize("key_source", KEY_SOURCES)
def test_every_recorded_error_has_a_member_message(t: Transcript, key_source: str | None) -> None:
    text = render_error(_from(t, key_source))
    assert text is not None and text != GENERIC
    assert not text.startswith(FALLBACK), f"{t.rc or t.status} falls back to the Horde's message"
    assert len(text) <= 400
    if t.rc is not None:
        # The Horde's own wording (often cheeky: "ya monkey!") is not what members read.
        assert t.body["message"] not in text or t.rc == "BadRequest"


@pytest.mark.parametrize("rc", NAMED_RCS)
def test_named_codes_have_a_member_message(rc: str) -> None:
    text = render_error(HordeError("whatever the Horde said", status=400, rc=rc))
    assert text is not None and text != GENERIC and not text.startswith(FALLBACK)


def test_validation_errors_name_the_field_the_horde_named() -> None:
    t = next(t for t in _errors() if t.name == "37_val_width_not_64")
    assert (
        render_error(_from(t))
        == "The AI Horde rejected the request: params.width: 500 is not a multiple of 64"
    )


def test_rate_limit_says_when_to_try_again() -> None:
    t = next(t for t in _errors() if t.name == "110_ratelimit_status_10")
    assert render_error(_from(t)) == "The AI Horde is rate-limiting this bot. Please try again in 60 s."


def test_bad_request_rc_shows_the_specific_reason() -> None:
    t = next(t for t in _errors() if t.rc == "BadRequest")
    text = render_error(_from(t)) or ""
    assert "webhooks need to point to an https endpoint." in text and "Change it and try again" in text


def test_the_paying_key_is_named() -> None:
    upfront = next(t for t in _errors() if t.rc == "KudosUpfront")
    assert "more than your AI Horde account has" in (render_error(_from(upfront, "own")) or "")
    assert "this server's shared key" in (render_error(_from(upfront, "guild")) or "")
    assert "the anonymous key has none" in (render_error(_from(upfront, "anon")) or "")
    rejected = next(t for t in _errors() if t.rc == "InvalidAPIKey")
    assert "rejected your API key" in (render_error(_from(rejected, "own")) or "")
    server = render_error(_from(rejected, "guild")) or ""
    assert "this server's shared key" in server and "your API key" not in server
    assert "`/login`" in server and "`/serverkey set`" in server
