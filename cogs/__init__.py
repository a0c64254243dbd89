"""Discord extensions, one per feature; `bot.bot.discover_cogs` loads every module here."""
