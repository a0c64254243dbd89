"""The fake Horde's kudos transfer rules, as the real server applies them (transcripts 55 and 59)."""

from __future__ import annotations

import httpx

from tests.fakes.horde import FakeHorde, FakeUser


def test_fake_horde_refuses_a_gift_back_within_a_minute_as_the_real_one_does() -> None:
    """Transcript 59: a transfer to someone who transferred to you less than a minute ago is refused with 400
    TooFastKudosTransfers; after the minute it goes through."""
    now = [1000.0]
    with FakeHorde(clock=lambda: now[0]) as fake:
        a, b = fake.add_user("alice", kudos=100), fake.add_user("bob", kudos=100)

        def transfer(sender: FakeUser, to: FakeUser) -> httpx.Response:
            return httpx.post(
                f"{fake.base_url}/v2/kudos/transfer",
                headers={"apikey": sender.apikey or "", "Client-Agent": "tests:1:tests"},
                json={"username": to.username, "amount": 1},
            )

        assert transfer(a, b).status_code == 200
        now[0] += 2
        refused = transfer(b, a)
        assert refused.status_code == 400
        assert refused.json() == {
            "message": "This user transferred kudos to you very recently. Please wait at least 1 minute.",
            "rc": "TooFastKudosTransfers",
        }
        now[0] += 2
        assert transfer(a, b).status_code == 200, "the same direction again is not this rule"
        now[0] += 61
        assert transfer(b, a).status_code == 200
