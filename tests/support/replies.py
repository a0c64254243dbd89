"""Jobs whose command's token ran out (bot.services.jobs.replies): the bot then delivers by DM or in the
channel, as it does with no token at all."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from tests.harness import Harness


async def expire_reply_tokens(h: Harness) -> None:
    """Every stored interaction token past its 15 minutes (without moving time: the jobs stay as they
    are), as after a restart that came too late to use them."""
    past = h.services.clock.now() - timedelta(seconds=1)
    async with h.runtime.db.session() as session:
        for table in ("generation_jobs", "alchemy_text_jobs"):
            await session.execute(
                text(f"UPDATE {table} SET reply_expires_at = :past WHERE reply_token IS NOT NULL"),  # noqa: S608
                {"past": past},
            )
