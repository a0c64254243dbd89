"""/chat: a conversation with a text model in a Discord thread.

The bot has no message content intent, so it cannot read plain messages in the thread. Members speak with
`/chat say` or the "Reply" button under each answer (a modal); both end up in `say()`. The conversation is
stored (`chat_turns`), and each turn's prompt is rebuilt from the persona plus as many of the latest turns
as fit the model's context (estimated at `chars_per_token` characters per token), leaving room for the
answer. One turn at a time per conversation.
"""

from __future__ import annotations

import logging

from bot.clock import Clock
from bot.db.chat import ChatRepository, ChatSessionRecord, ChatTurnRecord
from bot.errors import InvalidInputError, PermissionDeniedError, UserFacingError
from bot.horde.limits import MAX_NAME_CHARS
from bot.services import validation
from bot.services.info import InfoService
from bot.services.text import TextOptions, TextOutcome, TextService, TextSettings

log = logging.getLogger(__name__)

DEFAULT_PERSONA = (
    "The following is a friendly conversation in a Discord thread between members and {bot}, "
    "a helpful and honest AI assistant."
)
MAX_PERSONA_CHARS = 1000
MAX_MESSAGE_CHARS = 2000


class ChatService:
    def __init__(
        self,
        repo: ChatRepository,
        text: TextService,
        info: InfoService,
        clock: Clock,
        settings: TextSettings,
    ) -> None:
        self._repo = repo
        self._text = text
        self._info = info
        self._clock = clock
        self._settings = settings

    @property
    def bot_name(self) -> str:
        return self._settings.chat_bot_name

    @staticmethod
    def check_start(model: str, persona: str | None) -> tuple[str, str | None]:
        """The model's name and the persona as typed, checked on their own (no Horde call): run before
        anything else of `/chat start`; `prepare` runs it again."""
        checked = validation.text(model, "model", max_chars=MAX_NAME_CHARS, single_line=True)
        if checked is None:
            raise InvalidInputError("`model` is empty: pick a text model from the list.")
        return checked, validation.text(persona, "persona", max_chars=MAX_PERSONA_CHARS)

    async def prepare(self, model: str, persona: str | None) -> tuple[int, int, str]:
        """Check a model for a new conversation: (context length, answer length, persona)."""
        model, persona = self.check_start(model, persona)
        await self._text.check_model(model)
        limits = await self._info.text_model_limits(model)
        context = self._settings.default_max_context_length
        answer = self._settings.default_max_length
        if limits is not None:
            context, answer = limits.max_context_length, min(answer, limits.max_length)
        text = (persona or "").strip() or DEFAULT_PERSONA.format(bot=self.bot_name)
        if len(text) > MAX_PERSONA_CHARS:
            raise InvalidInputError(f"The persona may have at most {MAX_PERSONA_CHARS} characters.")
        if self._chars(context - answer) < len(text) + 200:
            raise InvalidInputError(
                "That persona leaves no room for the conversation in this model's context."
            )
        return context, answer, text

    async def open(
        self,
        *,
        guild_id: int | None,
        thread_id: int,
        owner_id: int,
        model: str,
        max_context_length: int,
        max_length: int,
        persona: str,
    ) -> ChatSessionRecord:
        return await self._repo.create(
            guild_id=guild_id,
            thread_id=thread_id,
            owner_id=owner_id,
            model=model,
            max_context_length=max_context_length,
            max_length=max_length,
            persona=persona,
            now=self._clock.now(),
        )

    async def session_for_thread(self, thread_id: int | None) -> ChatSessionRecord:
        session = await self._repo.by_thread(thread_id) if thread_id is not None else None
        if session is None:
            raise UserFacingError("This isn't a chat thread. Start one with `/chat start`.")
        return session

    async def get(self, session_id: int) -> ChatSessionRecord | None:
        return await self._repo.get(session_id)

    async def say(
        self, session: ChatSessionRecord, *, author_id: int, author_name: str, message: str, channel_id: int
    ) -> int:
        """Store the member's line and ask the model for the next one. Returns the text job id."""
        if not session.active:
            raise UserFacingError("This conversation has ended. Start a new one with `/chat start`.")
        checked = validation.text(message, "message", max_chars=len(message))
        if checked is None:
            raise InvalidInputError("Say something first.")
        message = checked
        if len(message) > MAX_MESSAGE_CHARS:
            raise InvalidInputError(f"A message may have at most {MAX_MESSAGE_CHARS} characters.")
        if await self._text.active_chat_job(session.id) is not None:
            raise UserFacingError(f"{self.bot_name} is still answering. Wait for the answer, then reply.")
        name = _speaker(author_name)
        turns = await self._repo.turns(session.id, self._settings.chat_history_turns)
        prompt, speakers = self.build_prompt(session, turns, name, message)
        job_id = await self._text.submit(
            user_id=author_id,
            guild_id=session.guild_id,
            channel_id=channel_id,
            prompt=prompt,
            options=TextOptions(model=session.model, max_length=None),
            chat_session_id=session.id,
            stop_names=sorted(speakers | {self.bot_name}),
            max_context_length=session.max_context_length,
        )
        # Stored only once the Horde accepted it, so a refused request leaves no orphan line.
        await self._repo.add_turn(session.id, "user", author_id, name, message, self._clock.now())
        return job_id

    def build_prompt(
        self, session: ChatSessionRecord, turns: list[ChatTurnRecord], name: str, message: str
    ) -> tuple[str, set[str]]:
        """The persona, then the newest turns that fit, then the new line and the bot's cue."""
        budget = self._chars(session.max_context_length - session.max_length)
        head = session.persona.strip() + "\n\n"
        tail = f"{name}: {message}\n{self.bot_name}:"
        room = budget - len(head) - len(tail)
        if room < 0:
            raise InvalidInputError(
                "That message is too long for this model's context. Say it in fewer words."
            )
        lines: list[str] = []
        speakers = {name}
        for turn in reversed(turns):
            line = f"{turn.author_name}: {turn.text}\n"
            if len(line) > room:
                break
            room -= len(line)
            lines.append(line)
            if turn.role == "user":
                speakers.add(turn.author_name)
        return head + "".join(reversed(lines)) + tail, speakers

    def _chars(self, tokens: int) -> int:
        return int(max(0, tokens) * self._settings.chars_per_token)

    async def record_answer(self, outcome: TextOutcome) -> None:
        """`TextService.before_deliver` listener: the model's reply joins the conversation before it shows."""
        if outcome.chat_session_id is None or not outcome.ok or not outcome.text:
            return
        await self._repo.add_turn(
            outcome.chat_session_id, "model", None, self.bot_name, outcome.text, self._clock.now()
        )

    async def end(self, session: ChatSessionRecord, user_id: int, *, can_manage: bool) -> None:
        if user_id != session.owner_id and not can_manage:
            raise PermissionDeniedError("Only whoever started this conversation (or a moderator) can end it.")
        await self._repo.set_active(session.id, False)

    async def forget_member(self, user_id: int) -> None:
        await self._repo.forget_member(user_id)


def _speaker(name: str) -> str:
    """A display name usable as a speaker label (no newlines or colons, short)."""
    cleaned = " ".join(name.replace(":", " ").split())[:32]
    return cleaned or "Member"
