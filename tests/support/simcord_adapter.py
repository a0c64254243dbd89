"""Every use of simcord's private API, in one place.

The harness (`tests/harness.py`) drives the bot through simcord's public API wherever one exists. What it
needs beyond that is here, each with the public API that would replace it, so a simcord upgrade is checked
against one file and a request upstream can be written from the comments. simcord is pinned exactly in
pyproject.toml for this reason.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import simcord
from simcord import _settlement
from simcord import actors as simcord_actors
from simcord import interactions as simcord_interactions
from simcord.backend import errors as backend_errors
from simcord.backend import serializers
from simcord.backend.ops.commands import CommandsMixin
from simcord.enums import ComponentType, InteractionType
from simcord.http import client as simcord_client
from simcord.http import router as simcord_router
from simcord.http._helpers import message_response
from simcord.http.routes import messages as simcord_messages
from simcord.results import InteractionResult

from tests.support.clock import SkippedTime

# Timers further in the future than this are parked by `settle` (they need `advance`); shorter ones settle
# goes through: the pacer's waits between two Horde POSTs (~1.1 s, two in line 2.2 s) and the fast retry
# back-offs of tests, fired at once when nothing else is pending (`_skip_to_next_timer`), else waited for in
# real time. Shorter than every polling interval (alchemy's 3 s is the least).
PARK_HORIZON = 2.5


class HarnessEnv(simcord.Env):
    """simcord's Env whose settling ends when no more work can happen without time moving.

    simcord parks a task sleeping past the settle *deadline* (`settle_timeout`, 30 s here so that real I/O
    on a loaded machine is not cut short) and waits for every shorter sleep in real time: a handler polling
    the Horde every 3 s kept `settle` busy for the whole 30 s. Here a timer is parked when it fires more
    than `PARK_HORIZON` seconds from now, whatever the deadline, so settling ends as soon as only timers
    remain; the deadline still bounds real work (I/O, threads, runnable tasks), as before. A shorter timer
    is fired at once when it is the only thing that can happen (`_skip_to_next_timer`), instead of being
    waited for in real time.

    Public API that would replace it: a `park_after` (horizon) argument of `Env`/`settle` separate from
    `settle_timeout`.
    """

    async def _settle_internal(
        self,
        *,
        timeout: float | None = None,
        idle: float = 0.05,
        dispatch: str | None = None,
        _deadline: float | None = None,
    ) -> None:
        if _deadline is not None:
            # Inside advance_time: simcord's own loop, where future virtual timers are parked anyway.
            await super()._settle_internal(timeout=timeout, idle=idle, dispatch=dispatch, _deadline=_deadline)
            return
        await _settle_until_only_timers_remain(self, timeout=timeout, idle=idle, dispatch=dispatch)


async def _settle_until_only_timers_remain(
    env: HarnessEnv, *, timeout: float | None, idle: float, dispatch: str | None
) -> None:
    """simcord 3.2.1's `Env._settle_internal`, line for line, except that parking is decided against
    `now + PARK_HORIZON` instead of the timeout deadline."""
    effective = env.settle_timeout if timeout is None else env._validate_timeout(timeout, "timeout")
    interval = env._validate_idle(idle)
    loop = env._loop
    assert loop is not None
    env._last_dispatch = dispatch
    deadline = loop.time() + effective
    stable_empty = 0
    while True:
        _settlement._run_due_virtual_callbacks(env._settlement_state(), deadline)
        await asyncio.sleep(0)
        advancing = env._real_advance_task or env._advance_task
        if advancing is not None and advancing is not asyncio.current_task():
            done, _ = await asyncio.wait((advancing,), timeout=max(0.0, deadline - loop.time()))
            if not done:
                raise TimeoutError("bot did not settle while advancing time")
            if env._real_advance_task is advancing:
                env._real_advance_task = None
            advancing.result()
            continue
        state = env._settlement_state()
        horizon = min(deadline, loop.time() + PARK_HORIZON)
        pending = [task for task in _settlement._owned_tasks(state) if not task.done()]
        callbacks = _settlement._active_callbacks(state)
        native_pending = tuple(env._work.executors)
        if not pending and not callbacks and not native_pending:
            stable_empty += 1
            if stable_empty >= 2:
                return
            continue
        stable_empty = 0
        _settlement._virtualize_recognized_waits(state, pending)
        parked = [task for task in pending if _settlement._is_parked(state, task, horizon)]
        active_callbacks = [
            record for record in callbacks if not _settlement._callback_is_parked(state, record, horizon)
        ]
        if not native_pending and not active_callbacks and len(parked) == len(pending):
            # Recheck after another loop turn so a resumed continuation or a callback scheduled by a
            # just-finished task cannot escape.
            await asyncio.sleep(0)
            state = env._settlement_state()
            again = [task for task in _settlement._owned_tasks(state) if not task.done()]
            _settlement._virtualize_recognized_waits(state, again)
            again_callbacks = [
                record
                for record in _settlement._active_callbacks(state)
                if not _settlement._callback_is_parked(state, record, horizon)
            ]
            if (
                not env._work.executors
                and not again_callbacks
                and all(_settlement._is_parked(state, task, horizon) for task in again)
            ):
                return
            continue
        if not native_pending and _skip_to_next_timer(env, state, pending, horizon):
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            stuck = [task for task in pending if task not in parked]
            raise TimeoutError(
                _settlement._settle_timeout_message(state, stuck, pending, effective, active_callbacks)
            )
        wait_for = min(interval, remaining)
        if pending or native_pending:
            await asyncio.wait(
                (*pending, *native_pending), timeout=wait_for, return_when=asyncio.FIRST_COMPLETED
            )
        else:
            await asyncio.sleep(wait_for)


def _skip_to_next_timer(
    env: HarnessEnv, state: Any, pending: list[asyncio.Task[Any]], horizon: float
) -> bool:
    """When only a timer can move anything, fire the next one now instead of waiting for it in real time.

    "Only a timer" means: no executor work, every bot task waits on a timer or on a wait simcord parks
    (a listener, a view, a `tasks.loop` interval), and no callback is due. A task waiting on anything else
    (a socket, the database's thread, a lock another task holds) keeps the real wait, as before. The timer
    fires through simcord's own real-time fallback (`run_real`, which advances virtual time to the timer's
    instant), so the bot sees what it saw when the wait was real; the time skipped is added to the tests'
    real time (`SkippedTime`), so wall clocks and the fake Horde's clock move by it as they did then.

    Public API that would replace it: an `Env` option for settle to advance virtual time to the next timer
    when nothing else is pending."""
    loop = env._loop
    assert loop is not None
    now = loop.time()
    if not all(_settlement._is_parked(state, task, now) for task in pending):
        return False
    callbacks = _settlement._active_callbacks(state)
    if not all(_settlement._callback_is_parked(state, record, now) for record in callbacks):
        return False
    fallbacks: list[tuple[Any, float]] = [
        (record.real_handle, record.when)
        for record in callbacks
        if record.when is not None and record.real_handle is not None and not record.real_handle.cancelled()
    ]
    if not fallbacks:
        return False
    fallback, when = min(fallbacks, key=lambda pair: float(pair[0].when()))
    if fallback.when() > horizon:
        return False  # parked: only `advance` moves time that far
    SkippedTime.add(max(when - env._virtual_time, 0.0))
    run_real, args, context = fallback._callback, fallback._args, fallback._context
    fallback.cancel()  # it must not fire a second time
    context.run(run_real, *args)
    return True


# --- operations the harness builds from simcord's parts -----------------------------------------------


@contextmanager
def operation(env: simcord.Env, label: str) -> Iterator[None]:
    """Mark a harness action as one simcord operation (no overlapping actions, no actions from bot work).

    Public API that would replace it: `Env.operation(label)` as a context manager."""
    env._begin_operation(label)
    try:
        yield
    finally:
        env._end_operation()


async def settle_after(env: simcord.Env, dispatch: str) -> None:
    """Settle inside an `operation`, naming the gateway event just dispatched in a timeout's message.

    Public API that would replace it: `Env.settle(dispatch=...)` usable inside an operation."""
    await env._settle_internal(dispatch=dispatch)


def visible_message(actor: Any, message: Any) -> Any:
    """The stored message, checked to be one the actor can see (as `actor.click` checks).

    Public API that would replace it: `MemberHandle.visible_message(message)`."""
    return simcord_actors._visible_message(actor, message)


def find_button(stored: Any, custom_id: str) -> dict[str, Any]:
    """The button with `custom_id` on a stored message (as `actor.click` finds it).

    Public API that would replace it: `simcord.components.find_component` (today private to actors)."""
    return simcord_actors._find_component(
        stored.components, types=(ComponentType.BUTTON,), custom_id=custom_id, label=None
    )


def emit_button_click(env: simcord.Env, actor: Any, stored: Any, button: dict[str, Any]) -> Any:
    """Deliver one button click's INTERACTION_CREATE without settling; returns its interaction record.

    Public API that would replace it: `actor.click(..., settle=False)` returning a pending result."""
    data: dict[str, Any] = {"custom_id": button["custom_id"], "component_type": ComponentType.BUTTON}
    if button.get("id") is not None:
        data["id"] = button["id"]
    record, payload = simcord_interactions.base_payload(
        env.backend,
        type=InteractionType.MESSAGE_COMPONENT,
        channel_id=stored.channel_id,
        guild_id=actor.guild.id,
        user_id=actor.id,
        data=data,
    )
    payload["message"] = dict(serializers.message_payload(env.backend, stored))
    record.source_message_id = stored.id
    env._notify_dispatch_observers(record)
    env.backend.emit("INTERACTION_CREATE", payload)
    return record


def interaction_result(env: simcord.Env, record: Any) -> InteractionResult:
    """The result object `actor.click` would have returned for an interaction record."""
    return InteractionResult(env, record)


def emit_reactions(env: simcord.Env, guild_id: int, reactions: Iterable[tuple[int, int, int, str]]) -> None:
    """Deliver MESSAGE_REACTION_ADD events `(user id, channel id, message id, emoji)` exactly as given,
    without storing or checking them.

    Public API that would replace it: `Env.dispatch_raw(event, payload)` with payload builders."""
    backend = env.backend
    guild = backend.get_guild(guild_id)
    for user_id, channel_id, message_id, emoji in reactions:
        payload: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(channel_id),
            "message_id": str(message_id),
            "emoji": serializers.emoji_payload(emoji),
            "burst": False,
            "type": 0,
            "guild_id": str(guild_id),
            "member": serializers.member_payload(backend, guild, guild.members[user_id]),
        }
        backend.emit("MESSAGE_REACTION_ADD", payload)


async def finish_bot_work(env: HarnessEnv, task: asyncio.Task[Any]) -> None:
    """Let bot work a test started run to its end. When it waits on a timer settling leaves parked (an inline
    check polling every 3 s), virtual time moves to the next timer, as waiting for it in real time would (the
    timer's fallback advances virtual time to it), without the real wait; the time is added to
    `SkippedTime`, as `settle` does for the timers it fires early.

    Public API that would replace it: the `Env` option `_skip_to_next_timer` asks for, with a task to
    await."""
    while True:
        await env.settle()
        if task.done():
            return
        when = _settlement._next_virtual_timer(env._settlement_state())
        if when is None:
            await asyncio.wait((task,), timeout=0.05)  # waiting on something other than time
            continue
        skipped = max(when - env._virtual_time, 0.0)
        SkippedTime.add(skipped)
        await env.advance_time(skipped)


def start_as_bot_work(env: simcord.Env, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Start `coro` as the bot's own work (its clock, its tracked tasks, settled with it).

    Public API that would replace it: `Env.spawn(coro)` creating a bot-owned task."""
    with env._bot_scope():
        return asyncio.get_running_loop().create_task(coro)


# --- Discord's `enforce_nonce` on message create ---------------------------------------------------------

# Discord: "If true and nonce is present, it will be checked for uniqueness in the past few minutes. If
# another message was created by the same author with the same nonce, that message will be returned and no
# new message will be created." (https://discord.com/developers/docs/resources/message#create-message,
# `enforce_nonce`; discord.py sends it with every nonce, and its `send` documents a NotFound for "a message
# with the same nonce as one that has been explicitly deleted shortly earlier"). simcord ignores both
# fields. "A few minutes" is not given exactly: the fake keeps a nonce two minutes of the simulator's
# clock, the short reading, so a test relying on a longer memory fails here first.
NONCE_WINDOW = timedelta(minutes=2)


def _created_once_per_nonce(send: Any) -> Any:
    def send_message(ctx: Any) -> Any:
        body = ctx.body()
        nonce = body.get("nonce")
        if nonce is None or not body.get("enforce_nonce"):
            return send(ctx)
        backend = ctx.backend
        seen: dict[tuple[int, str], tuple[int, int, datetime]] = backend.__dict__.setdefault(
            "_hordebot_nonces", {}
        )
        key = (backend.bot_user.id, str(nonce))
        now = backend.clock.now()
        earlier = seen.get(key)
        if earlier is not None and now - earlier[2] <= NONCE_WINDOW:
            channel_id, message_id, _ = earlier
            if message_id not in backend.messages.get(channel_id, {}):
                raise backend_errors.unknown_message()
            return message_response(ctx, backend.get_message(channel_id, message_id))
        answer = send(ctx)
        seen[key] = (int(answer["channel_id"]), int(answer["id"]), now)
        return answer

    return send_message


def honour_enforce_nonce() -> None:
    """Make simcord's message create answer a repeated nonce as Discord does (idempotent: once).

    Public API that would replace it: simcord modelling `nonce`/`enforce_nonce` itself."""
    handlers = simcord_router._ROUTES["POST"]
    for index, (template, handler) in enumerate(handlers):
        if template == ["channels", "{channel_id}", "messages"] and handler is simcord_messages.send_message:
            handlers[index] = (template, _created_once_per_nonce(handler))


honour_enforce_nonce()


# --- An interaction token past its 15 minutes ---------------------------------------------------------------

# Discord: "Interaction tokens are valid for 15 minutes"; after that its webhook routes (the original
# response, followups) answer 401 Invalid Webhook Token (50027). simcord answers 404 Unknown Webhook (10015).


def _expired_token_is_invalid(lookup: Any) -> Any:
    def interaction_by_token(backend: Any, token: str) -> Any:
        interaction_id = backend.interaction_tokens.get(token)
        record = backend.interactions.get(interaction_id) if interaction_id is not None else None
        if record is not None and record.expires_at is not None and backend.now_iso() >= record.expires_at:
            raise backend_errors.BackendError(401, 50027, "Invalid Webhook Token")
        return lookup(backend, token)

    interaction_by_token.hordebot_patched = True  # type: ignore[attr-defined]
    return interaction_by_token


def expired_tokens_answer_401() -> None:
    """Make simcord answer an expired interaction token as Discord does (idempotent: once).

    Public API that would replace it: simcord answering 401/50027 itself."""
    lookup = CommandsMixin.interaction_by_token
    if not getattr(lookup, "hordebot_patched", False):
        CommandsMixin.interaction_by_token = _expired_token_is_invalid(lookup)  # type: ignore[method-assign]


expired_tokens_answer_401()


# --- A webhook call that never gets through ---------------------------------------------------------------

# A process killed at an exact point of its work: its call (an interaction's original response, a
# followup) waits, unanswered, until the process is stopped (`Harness.restart`); Discord never gets it. Far
# beyond any test's `advance`, so `settle` parks the wait as a timer.
STALL_SECONDS = 10.0**7


def _stalls(env: simcord.Env) -> list[tuple[str, str]]:
    stalls: list[tuple[str, str]] = env.backend.__dict__.setdefault("_hordebot_stalls", [])
    return stalls


def stall(env: simcord.Env, method: str, path: str) -> None:
    """Make matching webhook calls (fnmatch `path`) wait without an answer while the process lives."""
    _stalls(env).append((method, path))


def clear_stalls(env: simcord.Env) -> None:
    _stalls(env).clear()


def _stalled_when_asked(request: Any) -> Any:
    async def stalled_request(self: Any, route: Any, *args: Any, **kwargs: Any) -> Any:
        path = simcord_client._path_of(route.url)
        stalls = self.backend.__dict__.get("_hordebot_stalls", ())
        if any(route.method == method and fnmatch.fnmatch(path, pattern) for method, pattern in stalls):
            await asyncio.sleep(STALL_SECONDS)
        return await request(self, route, *args, **kwargs)

    stalled_request.hordebot_patched = True  # type: ignore[attr-defined]
    return stalled_request


def webhook_calls_can_stall() -> None:
    """Make simcord's webhook adapter hold the calls a test stalls (idempotent: once).

    Public API that would replace it: a `delay`/`hang` option of `Env.inject_error`."""
    request = simcord_client.FakeWebhookAdapter.request
    if not getattr(request, "hordebot_patched", False):
        simcord_client.FakeWebhookAdapter.request = _stalled_when_asked(request)  # type: ignore[method-assign]


webhook_calls_can_stall()
