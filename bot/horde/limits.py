"""The AI Horde's own limits on what a request may carry: the one place they are written down.

From the API schema (`/work/shared/horde/swagger.json`) and API_NOTES §4-§9. The request models, the
services' checks and the slash commands' declared option limits (`app_commands.Range`, which Discord's
client enforces) all read them from here, so the three never disagree.
"""

from __future__ import annotations

from typing import Final

# --- image generation (`GenerationInputStable`, API_NOTES §4) ----------------------------------------------
MIN_SIDE: Final = 64
MAX_SIDE: Final = 3072  # also the largest source image side (SourceImageResolutionExceeded)
SIDE_STEP: Final = 64
MIN_STEPS: Final = 1
MAX_STEPS: Final = 500
MIN_N: Final = 1
MAX_N: Final = 20
MIN_CFG: Final = 0.0
MAX_CFG: Final = 100.0
MIN_STRENGTH: Final = 0.01
MAX_STRENGTH: Final = 1.0
MAX_SEED_CHARS: Final = 256
# With the replacement filter on (always, here) the Horde refuses prompts of 7000 characters or more that
# trip its filter ("Prompt has to be below 7000 chars when replacement filter is on"); the 7500-word limit
# (`InvalidPromptSize`) can never be reached below that.
MAX_PROMPT_CHARS: Final = 7000
MIN_PIXELS: Final = MIN_SIDE * MIN_SIDE
MAX_PIXELS: Final = MAX_SIDE * MAX_SIDE

# --- text generation (`ModelGenerationInputKobold`, API_NOTES §5) ------------------------------------------
MIN_TEXT_LENGTH: Final = 16  # max_length, in tokens
MAX_TEXT_LENGTH: Final = 4096
MIN_TEXT_CONTEXT: Final = 80
MAX_TEXT_CONTEXT: Final = 1048576
MIN_TEMPERATURE: Final = 0.0
MAX_TEMPERATURE: Final = 5.0
MIN_TOP_P: Final = 0.001
MAX_TOP_P: Final = 1.0
MIN_TOP_K: Final = 0
MAX_TOP_K: Final = 200
MIN_REP_PEN: Final = 1.0
MAX_REP_PEN: Final = 3.0

# --- shared keys (`SharedKeyInput`, API_NOTES §9); -1 means "no limit" -------------------------------------
MIN_SHARED_KEY_NAME: Final = 3
MAX_SHARED_KEY_NAME: Final = 255
MAX_SHARED_KEY_KUDOS: Final = 50_000_000
MAX_SHARED_KEY_PIXELS: Final = 4_194_304
MAX_SHARED_KEY_STEPS: Final = 500
MAX_SHARED_KEY_TOKENS: Final = 500

# --- Discord's own limits on what a member can type ---------------------------------------------------------
MAX_NAME_CHARS: Final = 200  # this bot's bound on a model, style, worker or team name typed by a member
MAX_OPTION_CHARS: Final = 6000  # a slash-command string option

__all__ = [
    "MAX_CFG",
    "MAX_N",
    "MAX_NAME_CHARS",
    "MAX_OPTION_CHARS",
    "MAX_PIXELS",
    "MAX_PROMPT_CHARS",
    "MAX_REP_PEN",
    "MAX_SEED_CHARS",
    "MAX_SHARED_KEY_KUDOS",
    "MAX_SHARED_KEY_NAME",
    "MAX_SHARED_KEY_PIXELS",
    "MAX_SHARED_KEY_STEPS",
    "MAX_SHARED_KEY_TOKENS",
    "MAX_SIDE",
    "MAX_STEPS",
    "MAX_STRENGTH",
    "MAX_TEMPERATURE",
    "MAX_TEXT_CONTEXT",
    "MAX_TEXT_LENGTH",
    "MAX_TOP_K",
    "MAX_TOP_P",
    "MIN_CFG",
    "MIN_N",
    "MIN_PIXELS",
    "MIN_REP_PEN",
    "MIN_SHARED_KEY_NAME",
    "MIN_SIDE",
    "MIN_STEPS",
    "MIN_STRENGTH",
    "MIN_TEMPERATURE",
    "MIN_TEXT_CONTEXT",
    "MIN_TEXT_LENGTH",
    "MIN_TOP_K",
    "MIN_TOP_P",
    "SIDE_STEP",
]
