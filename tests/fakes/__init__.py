"""Test doubles for the services the bot talks to (see ``tests/fakes/horde`` for the AI Horde)."""
