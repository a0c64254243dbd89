"""Typed shapes of `POST /v2/kudos/transfer` (swagger `KudosTransferred`; API_NOTES §7)."""

from __future__ import annotations

from bot.horde.models import HordeResponse


class KudosTransferred(HordeResponse):
    """The Horde's answer to a successful transfer: `{"transferred": 10.0}`."""

    transferred: float = 0


# rcs the transfer endpoint answers with (HTTP 400 unless noted). Retried later: the gift is not lost.
RETRY_LATER_RCS = frozenset({"TooFastKudosTransfers", "MaintenanceMode"})
