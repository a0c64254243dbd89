"""The AI Horde: the only code that speaks HTTP to it (client, typed models, errors)."""
