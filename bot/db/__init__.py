"""The only code that touches SQL: engine, ORM models, repositories, migrations."""

from bot.db.database import Database, DatabaseStartupError

__all__ = ["Database", "DatabaseStartupError"]
