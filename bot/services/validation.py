"""Checks of what a member typed, shared by every service: numbers, text, choices.

Discord's client enforces the limits a command declares, but a client can send anything: a number where
text belongs, NaN, a string with NUL bytes, a choice that was never offered. Services check every value
with these before their first Horde call or database write, and refuse with a message that names the
option and says what is allowed. An unknown value is never echoed back raw (it could be anything); text
that is quoted goes through `quoted`.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable

from bot.errors import InvalidInputError

# Line breaks and tabs are ordinary in prompts; every other control character (NUL above all: the Horde
# answers 400 "may not contain NUL") and lone surrogates (not encodable as UTF-8) are refused.
_ALLOWED_CONTROLS = frozenset("\n\r\t")


def _bad_character(text: str) -> str | None:
    for ch in text:
        if ch in _ALLOWED_CONTROLS:
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs"):
            return "a NUL byte" if ch == "\0" else f"an invisible control character (U+{ord(ch):04X})"
    return None


def _format(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def quoted(value: str, limit: int = 60) -> str:
    """A member's text, shortened and made safe to show inside inline code in a message."""
    cleaned = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in value.replace("`", "'")
    ).strip()
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return f"`{cleaned}`" if cleaned else "(empty)"


def text(
    value: object,
    option: str,
    *,
    max_chars: int,
    min_chars: int = 1,
    required: bool = False,
    single_line: bool = False,
) -> str | None:
    """The text without surrounding spaces; None when left out (or blank and not `required`)."""
    if value is None:
        if required:
            raise InvalidInputError(f"`{option}` is required.")
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"`{option}` must be text.")
    stripped = value.strip()
    if not stripped:
        if required:
            raise InvalidInputError(f"`{option}` is empty (only spaces): type some text.")
        return None
    bad = _bad_character(stripped)
    if bad is None and single_line and any(ch in _ALLOWED_CONTROLS for ch in stripped):
        bad = "a line break"
    if bad is not None:
        raise InvalidInputError(f"`{option}` contains {bad}; remove it and try again.")
    if len(stripped) < min_chars:
        raise InvalidInputError(
            f"`{option}` must be at least {min_chars} characters (without spaces around)."
        )
    if len(stripped) > max_chars:
        raise InvalidInputError(
            f"`{option}` can be at most {max_chars:,} characters (got {len(stripped):,})."
        )
    return stripped


def integer(value: object, option: str, low: int, high: int | None = None) -> int:
    """A whole number within [low, high] (`high` None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidInputError(_range_text(option, "a whole number", low, high) + ".")
    if value < low or (high is not None and value > high):
        raise InvalidInputError(_range_text(option, "a whole number", low, high) + f" (got {value:,}).")
    return value


def number(value: object, option: str, low: float, high: float) -> float:
    """A finite number within [low, high]: NaN, infinities and text are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(_range_text(option, "a number", low, high) + ".")
    if not low <= value <= high:
        raise InvalidInputError(_range_text(option, "a number", low, high) + f" (got {_format(value)}).")
    return float(value)


def _range_text(option: str, kind: str, low: float, high: float | None) -> str:
    if high is None:
        return f"`{option}` must be {kind} of at least {_format(low)}"
    return f"`{option}` must be {kind} from {_format(low)} to {_format(high)}"


def choice(value: object, option: str, allowed: Iterable[str]) -> str:
    """One of `allowed` (matched ignoring case and surrounding spaces), as spelled in `allowed`. An unknown
    value is not repeated: the member is shown what they may pick."""
    names = list(allowed)
    if isinstance(value, str):
        wanted = value.strip().casefold()
        for name in names:
            if name.casefold() == wanted:
                return name
    listed = ", ".join(names)
    raise InvalidInputError(f"`{option}` must be one of: {listed}. Pick one from the list.")
