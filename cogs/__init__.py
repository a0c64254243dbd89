"""The cogs, one module per feature: `bot.bot.discover_cogs` finds every module here, and
`HordeBot.load_feature` runs its `setup(bot)`."""
