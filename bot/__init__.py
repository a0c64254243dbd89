"""hordebot: a Discord bot for the AI Horde."""

__version__ = "0.1.0"
