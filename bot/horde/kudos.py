"""Typed shapes of `POST /v2/kudos/transfer` (swagger `KudosTransferred`; API_NOTES §7)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class KudosTransferred(BaseModel):
    """The Horde's answer to a successful transfer: `{"transferred": 10.0}`."""

    model_config = ConfigDict(extra="ignore")
    transferred: float = 0


# rcs the transfer endpoint answers with (HTTP 400 unless noted). Retried later: the gift is not lost.
RETRY_LATER_RCS = frozenset({"TooFastKudosTransfers", "MaintenanceMode"})
