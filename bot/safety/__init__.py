"""Prompt safety: stop prompts that sexualise minors before they reach the AI Horde.

Usage::

    from bot.safety import PromptFilter, validate_custom_term

    verdict = PromptFilter().check(prompt, negative, extra_terms=guild_blocked_terms)
    if verdict.blocked:
        ...  # verdict.reason is "csam" or "custom"

Pure Python; the word lists (``bot/safety/data/*.txt``) are read and compiled on first use, or at start-up
with :func:`warm_up`. The normaliser lives in :mod:`bot.safety.normalize`.
"""

from bot.safety.filter import (
    MAX_CUSTOM_TERM_LENGTH,
    PromptFilter,
    Reason,
    SafetyVerdict,
    split_negative,
    validate_custom_term,
    warm_up,
)

__all__ = [
    "MAX_CUSTOM_TERM_LENGTH",
    "PromptFilter",
    "Reason",
    "SafetyVerdict",
    "split_negative",
    "validate_custom_term",
    "warm_up",
]
