"""Generation parties: /party start and /party end as members use them, awards through `on_generation`
(the generation feature publishes `GenerationCompleted`; here the test builds the events)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import discord
import pytest
from sqlalchemy import text

from bot.config import Settings
from bot.db.kudos import FAILED, SENT, Gift
from bot.services.generation import GenerationCompleted
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member, run_as_bot, virtual_seconds
from tests.test_kudos import KUDOS, dms, elapse, gifts, link, paid

_jobs = itertools.count(1)


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde) -> Settings:
    return make_settings(tmp_path, horde.base_url, kudos={**KUDOS, "party_max_hours": 24})


@pytest.fixture(autouse=True)
async def _kudos_world(harness: Harness, horde: FakeHorde) -> None:
    horde.clock = lambda: virtual_seconds(harness)
    horde.add_style("Neon Dreams")


def generated(
    member: Member,
    thread: Any,
    *,
    style: str | None = "Neon Dreams",
    guild_id: int | None = None,
    images: int = 1,
) -> GenerationCompleted:
    return GenerationCompleted(
        job_id=next(_jobs),
        user_id=member.id,
        guild_id=guild_id if guild_id is not None else thread.guild.id,
        channel_id=thread.id,
        message_id=None,
        style=style,
        model="AlbedoBase XL",
        images=images,
        anonymous=False,
    )


async def award(h: Harness, event: GenerationCompleted) -> Gift | None:
    """Publish a generation to the party service as the generation feature does (from the bot's own work)."""
    result: Gift | None = await run_as_bot(h, h.services.parties.on_generation(event))
    return result


async def start_party(h: Harness, host: Member, **options: Any) -> Any:
    options = {"name": "Neon night", "style": "Neon Dreams", "award": 10, "duration": 60, **options}
    reply = await host.slash("party start", **options)
    assert reply.private and "is on" in reply.text, reply.text
    [thread] = h.channel.threads
    return thread


def thread_texts(thread: Any) -> list[str]:
    """What members posted or the bot wrote in the thread (not Discord's "pinned a message" notices)."""
    return [m.content for m in thread.history() if m.type is discord.MessageType.default]


async def test_start_opens_a_thread_with_pinned_rules_and_end_time(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    host = h.member("host")
    await link(host, horde.add_user("host", kudos=500))
    thread = await start_party(h, host, name="Neon @everyone night")
    [pinned] = thread.pinned_messages()
    assert "Neon Dreams" in pinned.content and "**10** kudos" in pinned.content
    assert "your first generation" in pinned.content and "Ends <t:" in pinned.content
    assert h.pings(pinned) == ([], [], False)
    assert thread_texts(thread) == [pinned.content]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"award": 0}, "from 1 to 1,000"),
        ({"award": 5000}, "from 1 to 1,000"),
        ({"duration": 0}, "from 1 to 1,440 minutes"),
        ({"duration": 2000}, "from 1 to 1,440 minutes"),
    ],
)
async def test_bad_party_options_are_refused(
    harness: Harness, horde: FakeHorde, options: dict[str, Any], expected: str
) -> None:
    h = harness
    host = h.member("host")
    await link(host, horde.add_user("host"))
    # Sent raw: the options declare these limits (from the settings), so only a hostile client sends them.
    reply = await host.slash_raw(
        "party start", {"name": "p", "style": "Neon Dreams", "award": 10, "duration": 60, **options}
    )
    assert reply.private and expected in reply.text
    assert h.channel.threads == []


async def test_host_must_be_linked_and_hosts_one_party_at_a_time(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    host = h.member("host")
    reply = await host.slash("party start", name="p", style="Neon Dreams", award=10, duration=60)
    assert reply.private and "/login" in reply.text
    await link(host, horde.add_user("host"))
    await start_party(h, host)
    again = await host.slash("party start", name="q", style="Neon Dreams", award=10, duration=60)
    assert again.private and "already hosting" in again.text


async def test_first_generation_with_the_style_is_awarded_once(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    hu, gu = horde.add_user("host", kudos=500), horde.add_user("guest", kudos=0)
    await link(host, hu)
    await link(guest, gu)
    thread = await start_party(h, host)
    first = generated(guest, thread)
    await award(h, first)
    await award(h, first)  # the same event twice
    await award(h, generated(guest, thread))  # a second generation: first-only party
    await award(h, generated(guest, thread, style="neon dreams"))
    await elapse(h, 3)
    assert horde.user(gu.id).kudos == 10 and horde.user(hu.id).kudos == 490
    assert len(paid(horde)) == 1
    [gift] = await gifts(h)
    assert (gift.source, gift.state) == ("party", SENT)


async def test_recurring_party_awards_every_generation(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    hu, gu = horde.add_user("host", kudos=500), horde.add_user("guest", kudos=0)
    await link(host, hu)
    await link(guest, gu)
    thread = await start_party(h, host, recurring=True, award=5)
    for _ in range(3):
        await award(h, generated(guest, thread))
    await elapse(h, 5)
    assert horde.user(gu.id).kudos == 15 and len(paid(horde)) == 3


async def test_other_styles_channels_the_host_and_imageless_results_get_nothing(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    await link(host, horde.add_user("host", kudos=500))
    await link(guest, horde.add_user("guest", kudos=0))
    thread = await start_party(h, host)
    assert await award(h, generated(guest, thread, style="Other style")) is None
    assert await award(h, generated(guest, thread, style=None)) is None
    assert await award(h, generated(guest, h.channel)) is None
    assert await award(h, generated(host, thread)) is None
    assert await award(h, generated(guest, thread, images=0)) is None
    await elapse(h, 2)
    assert paid(horde) == [] and await gifts(h) == []


async def test_unlinked_guest_award_waits_for_login(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    await link(host, horde.add_user("host", kudos=500))
    thread = await start_party(h, host)
    await award(h, generated(guest, thread))
    assert len(dms(guest)) == 1
    gu = horde.add_user("guest", kudos=0)
    await link(guest, gu)
    await elapse(h, 3)
    assert horde.user(gu.id).kudos == 10


async def test_host_out_of_kudos_ends_the_party_with_a_notice(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    host, g1, g2 = h.member("host"), h.member("g1"), h.member("g2")
    await link(host, horde.add_user("host", kudos=15))
    await link(g1, horde.add_user("g1", kudos=0))
    await link(g2, horde.add_user("g2", kudos=0))
    thread = await start_party(h, host)
    await award(h, generated(g1, thread))
    await elapse(h, 2)
    await award(h, generated(g2, thread))
    await elapse(h, 3)
    states = sorted(g.state for g in await gifts(h))
    assert states == [FAILED, SENT]
    assert any("ran out of kudos" in t for t in thread_texts(thread))
    # Later generations earn nothing.
    g3 = h.member("g3")
    await link(g3, horde.add_user("g3"))
    assert await award(h, generated(g3, thread)) is None


async def test_party_ends_at_its_end_time(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    await link(host, horde.add_user("host", kudos=500))
    await link(guest, horde.add_user("guest", kudos=0))
    thread = await start_party(h, host, duration=30)
    await elapse(h, 30 * 60 + 5)
    assert any("time is up" in t for t in thread_texts(thread))
    assert await award(h, generated(guest, thread)) is None
    assert len([t for t in thread_texts(thread) if "time is up" in t]) == 1


async def test_while_no_party_runs_the_end_check_reads_nothing_and_a_new_party_still_ends_on_time(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    host = h.member("host")
    await link(host, horde.add_user("host", kudos=500))
    await elapse(h, 6)  # the first end check finds no party
    with h.statements() as quiet:
        await elapse(h, 60)
    assert [s for s in quiet if "kudos_parties" in s] == [], "twelve end checks, no party: nothing read"
    thread = await start_party(h, host, duration=1)
    await elapse(h, 60 + 6)
    assert len([t for t in thread_texts(thread) if "time is up" in t]) == 1


async def test_end_by_host_or_moderator_only(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    await link(host, horde.add_user("host", kudos=500))
    thread = await start_party(h, host)
    refused = await guest.slash("party end", channel=thread)
    assert refused.private and "Only the host or a moderator" in refused.text
    mods = h.guild.create_role("mods", permissions=discord.Permissions(manage_threads=True))
    mod = h.member("mod", roles=[mods])
    done = await mod.slash("party end", channel=thread)
    assert done.private and "has ended" in done.text
    assert any("A moderator ended the party" in t for t in thread_texts(thread))
    nothing = await host.slash("party end", channel=thread)
    assert nothing.private and "no running party" in nothing.text


async def test_host_ends_their_party(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    host = h.member("host")
    await link(host, horde.add_user("host", kudos=500))
    thread = await start_party(h, host)
    done = await host.slash("party end", channel=thread)
    assert "has ended" in done.text
    assert any("The host ended the party" in t for t in thread_texts(thread))


async def test_unknown_style_is_refused_and_the_suggested_id_becomes_the_name(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    host = h.member("host")
    await link(host, horde.add_user("host"))
    reply = await host.slash("party start", name="p", style="No Such Style", award=10, duration=60)
    assert reply.private and "Unknown AI Horde style `No Such Style`" in reply.text
    assert h.channel.threads == []
    # The autocomplete offers styles by id; the party (and its pinned rules) know it by name.
    choices = await host.autocomplete("party start", "style", "neon")
    [choice] = [c for c in choices if c["name"].startswith("Neon")]
    thread = await start_party(h, host, style=choice["value"])
    [pinned] = thread.pinned_messages()
    assert "Neon Dreams" in pinned.content and choice["value"] not in pinned.content


# --- audit of #5 ----------


async def test_a_channel_where_the_bot_may_not_open_threads_is_refused_with_what_to_do(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    host = h.member("host")
    await link(host, horde.add_user("host", kudos=500))
    await h.set_channel_overwrite(
        h.channel, h.bot_role(), discord.PermissionOverwrite(create_public_threads=False)
    )
    refused = await host.slash("party start", name="p", style="Neon Dreams", award=10, duration=60)
    assert refused.private and "couldn't open a thread" in refused.text and "another channel" in refused.text
    assert h.channel.threads == []
    h.take_errors()
    # Nothing is left half-open: the host can start the party in another channel.
    other = h.text_channel("parties")
    again = await host.slash(
        "party start", channel=other, name="p", style="Neon Dreams", award=10, duration=60
    )
    assert again.private and "is on" in again.text
    assert len(other.threads) == 1


async def test_a_party_survives_a_restart_awards_and_then_ends_on_time(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    hu, gu = horde.add_user("host", kudos=500), horde.add_user("guest", kudos=0)
    await link(host, hu)
    await link(guest, gu)
    thread = await start_party(h, host, duration=30)
    first = generated(guest, thread)
    await award(h, first)
    await h.restart()
    await award(h, first)  # the same generation reported again after the restart: still one award
    await elapse(h, 3)
    assert horde.user(gu.id).kudos == 10 and len(paid(horde)) == 1
    await elapse(h, 30 * 60 + 5)
    assert len([t for t in thread_texts(thread) if "time is up" in t]) == 1
    assert await award(h, generated(guest, thread)) is None


# --- issue #16: the host pays the thread's generations; the words prompts must contain -------------------


async def party_row(h: Harness) -> dict[str, Any]:
    async with h.runtime.db.session() as session:
        result = await session.execute(text("SELECT * FROM kudos_parties ORDER BY id DESC LIMIT 1"))
        return dict(result.one()._mapping)


async def generate_in(h: Harness, horde: FakeHorde, member: Member, thread: Any, prompt: str) -> Any:
    """/generate in the party's thread, delivered: the fake Horde's request record."""
    horde.enforce_rate_limits = False
    reply = await member.slash("generate", channel=thread, prompt=prompt, style="Neon Dreams")
    assert not reply.private, reply.text
    request = horde.last_request("image")
    horde.finish(request.id)
    await elapse(h, 35)
    return request


async def test_host_pays_the_threads_generations_with_a_key_made_for_the_party(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    hu, gu = horde.add_user("host", kudos=5000), horde.add_user("guest", kudos=100)
    await link(host, hu)
    await link(guest, gu)
    thread = await start_party(h, host, pay=300)
    [pinned] = thread.pinned_messages()
    assert "The host pays for the generations made here (up to **300** kudos in all)." in pinned.content
    [key] = [k for k in horde.shared_keys.values() if k.owner_id == hu.id]
    assert (key.kudos, key.name) == (300, "Party: Neon night")
    row = await party_row(h)
    # A secret: stored encrypted, never as the key itself, and never shown to anyone.
    assert row["key_encrypted"] and key.id not in row["key_encrypted"] and row["key_kudos"] == 300
    assert not any(key.id in text for text in thread_texts(thread))

    request = await generate_in(h, horde, guest, thread, "neon city at night")
    assert request.sharedkey_id == key.id  # the party's key paid, not the guest's own
    spent = horde.shared_keys[key.id].utilized
    assert spent > 0 and horde.user(gu.id).kudos == 100 + 10  # the guest kept theirs (and got the award)
    # Outside the thread the guest's own key pays as ever.
    horde.enforce_rate_limits = False
    await guest.slash("generate", prompt="a quiet lake")
    assert horde.last_request("image").sharedkey_id is None

    done = await host.slash("party end", channel=thread)
    assert done.private and "has ended" in done.text
    assert key.id not in horde.shared_keys  # deleted on the AI Horde with the party
    assert f"The host paid **{spent:,}** kudos for the generations made here." in thread_texts(thread)[-1]
    row = await party_row(h)
    assert (row["key_encrypted"], row["kudos_spent"]) == (None, spent)


async def test_a_spent_party_key_hands_over_to_the_members_own(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    hu, gu = horde.add_user("host", kudos=5000), horde.add_user("guest", kudos=100)
    await link(host, hu)
    await link(guest, gu)
    thread = await start_party(h, host, pay=1)
    [key] = [k for k in horde.shared_keys.values() if k.owner_id == hu.id]
    key.utilized = 1  # spent on the Horde (e.g. by an earlier generation)
    await elapse(h, 120)  # the key's cached details expire
    horde.enforce_rate_limits = False
    reply = await guest.slash("generate", channel=thread, prompt="neon rain", style="Neon Dreams")
    assert not reply.private, reply.text
    assert horde.last_request("image").sharedkey_id is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"pay": 0}, "`pay` is the most kudos the party's generations may cost you: from 1 to 50,000,000."),
        ({"words": " , ,"}, "`words` is empty: give the words prompts must contain, comma-separated."),
        (
            {"words": ",".join(f"w{i}" for i in range(11))},
            "A party can ask for at most 10 words (got 11).",
        ),
        ({"words": "x" * 41}, "Each of the party's words can be at most 40 characters (got 41)."),
    ],
)
async def test_bad_pay_and_words_are_refused_and_no_key_is_made(
    harness: Harness, horde: FakeHorde, options: dict[str, Any], expected: str
) -> None:
    h = harness
    host = h.member("host")
    hu = horde.add_user("host", kudos=5000)
    await link(host, hu)
    reply = await host.slash_raw(
        "party start", {"name": "p", "style": "Neon Dreams", "award": 10, "duration": 60, **options}
    )
    assert reply.private and reply.text == expected
    assert h.channel.threads == [] and not horde.shared_keys


async def test_prompts_without_the_words_are_generated_but_not_awarded(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    hu, gu = horde.add_user("host", kudos=500), horde.add_user("guest", kudos=0)
    await link(host, hu)
    await link(guest, gu)
    thread = await start_party(h, host, words="Dragon, neon sign", recurring=True)
    [pinned] = thread.pinned_messages()
    assert "Awarded prompts must contain: **dragon**, **neon sign**." in pinned.content
    assert (await party_row(h))["words"] == "dragon\nneon sign"

    horde.enforce_rate_limits = False
    reply = await guest.slash(
        "generate", channel=thread, prompt="a dragon over the city", style="Neon Dreams"
    )
    assert not reply.private  # generated all the same
    [note] = [m for m in reply.followups if m.ephemeral]
    assert note.content == (
        "Your image is on its way, but it won't be awarded: this party's prompts must contain `neon sign`. "
        "Add it to your next prompt."
    )
    horde.finish(horde.last_request("image").id)
    await elapse(h, 35)
    assert await gifts(h) == []  # not awarded

    # Whole words, any case, in the prompt (not the negative): awarded, and no note.
    ok = await guest.slash(
        "generate", channel=thread, prompt="A DRAGON under a Neon Sign###blurry", style="Neon Dreams"
    )
    assert not [m for m in ok.followups if m.ephemeral]
    horde.finish(horde.last_request("image").id)
    await elapse(h, 35)
    [gift] = await gifts(h)
    assert (gift.source, gift.amount, gift.state) == ("party", 10, SENT)
    assert len(paid(horde)) == 1
    # A negative prompt doesn't count, nor does a word inside another ("dragonfly").
    await award(h, dataclasses.replace(generated(guest, thread), prompt="a dragonfly###neon sign"))
    assert len(await gifts(h)) == 1


async def test_a_host_logging_out_ends_the_party_and_its_key_expires_on_its_own(
    harness: Harness, horde: FakeHorde
) -> None:
    """Deleting a shared key needs its owner's key, which /logout deletes first: the party's key can't be
    deleted then, so it was made to expire on its own (a day after the party's end time)."""
    h = harness
    host = h.member("host")
    hu = horde.add_user("host", kudos=5000)
    await link(host, hu)
    thread = await start_party(h, host, pay=200, duration=90)
    [key] = [k for k in horde.shared_keys.values() if k.owner_id == hu.id]
    assert key.expiry_at is not None and 2 * 86400 - 60 <= key.expiry_at - horde.wall() <= 2 * 86400
    reply = await host.slash("logout")
    assert reply.private and "Could not be removed" not in reply.text
    assert "the host unlinked their AI Horde account" in thread_texts(thread)[-1]
    assert "The host paid **0** kudos for the generations made here." in thread_texts(thread)[-1]
    async with h.runtime.db.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM kudos_parties"))).scalar() == 0


async def test_a_party_key_spent_since_it_was_last_read_is_refused_then_the_members_key_pays(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    host, guest = h.member("host"), h.member("guest")
    hu, gu = horde.add_user("host", kudos=5000), horde.add_user("guest", kudos=100)
    await link(host, hu)
    await link(guest, gu)
    thread = await start_party(h, host, pay=300)
    [key] = [k for k in horde.shared_keys.values() if k.owner_id == hu.id]
    await generate_in(h, horde, guest, thread, "neon city")  # the bot has read the key: it can pay
    key.utilized = key.kudos  # spent elsewhere meanwhile (the bot's copy is a minute old at most)
    refused = await guest.slash("generate", channel=thread, prompt="neon rain", style="Neon Dreams")
    assert refused.private and refused.text == (
        "The party's shared key can't pay any more (its kudos are spent, or its host deleted it). Send your "
        "request again: your own key pays from now on."
    )
    await elapse(h, 11)  # the member's cooldown between generations
    again = await guest.slash("generate", channel=thread, prompt="neon rain", style="Neon Dreams")
    assert not again.private, again.text
    assert horde.last_request("image").sharedkey_id is None
