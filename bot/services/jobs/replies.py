"""The interaction token of a job's command, kept with the job while it lives (issue #17).

The process that got the command keeps its interaction in memory (`bot.ui.delivery.PendingReplies`) and
also stores its token with the job, encrypted like the API keys (`KeyCipher.seal`): whichever process
delivers the job (after a restart or a takeover) can then read the command's reply and edit the result into
it, and a result a stopped process already showed there is found instead of being sent again by DM or in
the channel. Discord's tokens work for 15 minutes; a token is stored with when it stops working, cleared
when its job ends (`bot.db.held_jobs.NO_REPLY`) and by retention once expired. Never logged: `Reply`'s
repr leaves it out.

Once, also late in the token's life: a result shown in the reply is found there only while the token can
still be read, so it is shown there only while a process taking the job over (should this one die right
after showing it) still comes in time to read it (`showable`: the lease keeper's `takeover` before the
reading's own end). Later, it is delivered by the job's nonce from the start, as that process would deliver
it, and Discord makes the two one message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.clock import Clock
from bot.crypto import KeyCipher, KeyDecryptionError

log = logging.getLogger(__name__)

# Discord's: an interaction's token works this long after the interaction was created.
LIFETIME = timedelta(minutes=15)
# A token this close to its end is not used: the read and the edit of the reply must both land in time.
MARGIN = timedelta(seconds=60)


def showable(expires_at: datetime, now: datetime, takeover: timedelta) -> bool:
    """Whether a result may be shown now through a token that stops working at `expires_at`: should this
    process die right after, the one taking the job over (`takeover` later at most,
    `bot.services.leases.LeaseKeeper.takeover`) must still find it usable (`ReplyTokens.usable`) to read
    the reply and find the result there. Else the result goes by the job's nonce."""
    return now < expires_at - MARGIN - takeover


@dataclass(frozen=True)
class Reply:
    """A usable interaction token of a job's command, and when it stops working."""

    token: str = field(repr=False)
    expires_at: datetime


class StoredReply(Protocol):
    """A job row's stored token (`bot.db.held_jobs.ReplyColumns`)."""

    @property
    def id(self) -> int: ...
    @property
    def reply_token(self) -> str | None: ...
    @property
    def reply_expires_at(self) -> datetime | None: ...


class ReplyTokens:
    """Seals a command's token for its job's row, and opens it again while it is usable."""

    def __init__(self, cipher: KeyCipher, clock: Clock) -> None:
        self._cipher = cipher
        self._clock = clock

    def seal(self, token: str) -> tuple[str, datetime]:
        """A token just received (the interaction was created a moment ago), encrypted, and when it stops
        working by this process's clock (Discord's own dates in the token's interaction id may disagree
        with it by the clocks' skew)."""
        return self._cipher.seal(token), self._clock.now() + LIFETIME

    def usable(self, expires_at: datetime) -> bool:
        return self._clock.now() < expires_at - MARGIN

    def open(self, job: StoredReply) -> Reply | None:
        """The job's token if one is stored and still usable (None: deliver without the reply)."""
        if job.reply_token is None or job.reply_expires_at is None or not self.usable(job.reply_expires_at):
            return None
        try:
            return Reply(self._cipher.unseal(job.reply_token), job.reply_expires_at)
        except KeyDecryptionError:
            # Sealed under a secret key no longer configured (rotated out): delivered without the reply.
            log.info("job %s: its reply's token could not be decrypted; delivering without it", job.id)
            return None
