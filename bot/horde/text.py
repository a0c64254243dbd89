"""Typed shapes of text generation (API_NOTES §5)."""

from __future__ import annotations

from pydantic import Field

from bot.horde.models import HordeRequest, HordeResponse, RequestProgress


class TextParams(HordeRequest):
    max_length: int = 80
    max_context_length: int = 2048
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    rep_pen: float | None = None
    stop_sequence: list[str] | None = None
    singleline: bool | None = None
    frmttriminc: bool | None = None


class TextRequest(HordeRequest):
    """`POST /generate/text/async` body; send with `model_dump(exclude_none=True)`."""

    prompt: str
    params: TextParams = Field(default_factory=TextParams)
    models: list[str] = Field(default_factory=list)
    trusted_workers: bool | None = None
    slow_workers: bool | None = None
    allow_downgrade: bool | None = None


class GenMetadata(HordeResponse):
    type: str = ""
    value: str = ""


class TextGeneration(HordeResponse):
    text: str = ""
    seed: int = 0
    worker_id: str | None = None
    worker_name: str | None = None
    model: str | None = None
    state: str = "ok"
    gen_metadata: list[GenMetadata] = Field(default_factory=list)

    @property
    def censored(self) -> bool:
        return self.state in ("censored", "csam") or any(m.type == "censorship" for m in self.gen_metadata)


class TextStatus(RequestProgress):
    """`GET /generate/text/status/{id}` (at most 60 a minute per request id; there is no text /check)."""

    generations: list[TextGeneration] = Field(default_factory=list)
