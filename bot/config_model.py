"""What every `config.toml` section model is built from, and the one place pydantic's errors become one line.

A section is a frozen pydantic dataclass deriving from `Section`: every key a `Field` with its bounds and a
`description` (README's configuration reference and config.example.toml are generated from them by
`python -m bot.config_docs`). Values are taken as TOML writes them: no "30" for 30, no 1 for true.
Unknown keys are refused, so a typo'd key stops start-up naming it.

This module sits below `bot.config` and `bot.horde` (whose HordeSettings and PacerSettings are sections too),
so it imports neither.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self, TypeVar

import annotated_types
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

T = TypeVar("T")

# Strict per value: TOML's 30 is not "30", true is not 1 (an int is still taken where a float is expected).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), annotated_types.Predicate(math.isfinite)]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]

# Every section model: frozen, unknown keys refused.
SECTION_CONFIG = ConfigDict(extra="forbid")
# A key marked so is not read from config.toml (a secret from the environment, or worked out at start-up).
# Other `json_schema_extra` entries bot.config_docs reads: "unset" (what a key without a default means when
# left out), "example" (the value config.example.toml shows), "commented" (show that example commented out).
NOT_IN_FILE: dict[str, Any] = {"in_file": False}


class ConfigError(Exception):
    """A configuration value is missing or invalid: one line, naming the file (or the environment) and key."""

    def __init__(self, key: str, problem: str, source: str = "config.toml") -> None:
        super().__init__(f"{source}: {key} {problem}" if key else f"{source}: {problem}")
        self.key = key
        self.problem = problem
        self.source = source


class KeyProblem(ValueError):
    """Raised by a model validator that checks several keys: names the key to blame (within the section)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


class Section:
    """Base of the section models: `name` is the TOML table, `[name]`."""

    name: ClassVar[str]

    def __init_subclass__(cls, *, section: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if section:
            cls.name = section

    @classmethod
    def from_section(cls, section: Mapping[str, Any], *, source: str = "config.toml") -> Self:
        """The section parsed from its raw TOML table: a bad value raises `ConfigError` naming the key."""
        if not isinstance(section, Mapping):
            raise not_a_table(cls.name, source)
        return validate(cls, dict(section), prefix=cls.name, source=source)


def validate(model: type[T], data: Any, *, prefix: str = "", source: str = "config.toml") -> T:
    try:
        return TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        raise config_error(exc, model, prefix, source) from None


# --- checks a key declares, which also describe themselves for the generated reference ----------------------


@dataclass(frozen=True)
class Check:
    """A named rule on one value: `allowed` is shown in the reference; `problem` when the rule fails."""

    allowed: str
    test: Callable[[Any], bool]
    problem: str = ""

    def __call__(self, value: Any) -> Any:
        if not self.test(value):
            raise ValueError(self.problem or f"must be {self.allowed}")
        return value


def one_of(choices: Sequence[str]) -> AfterValidator:
    return AfterValidator(Check(f"one of {', '.join(choices)}", lambda v: v in choices))


def url(*schemes: str) -> AfterValidator:
    starts = " or ".join(f"{s}://" for s in schemes)

    def test(value: str) -> bool:
        return any(value.startswith(f"{s}://") and len(value) > len(s) + 3 for s in schemes)

    return AfterValidator(Check(f"a URL starting with {starts}", test))


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _strip_slash(value: str) -> str:
    return value.rstrip("/")


Stripped = BeforeValidator(_strip)
NoTrailingSlash = AfterValidator(_strip_slash)


# --- ValidationError -> ConfigError: the one place -------------------------------------------------------

_TYPES = {
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "predicate_failed": "must be a finite number",  # Float's one predicate: not nan or inf
    "bool_type": "must be true or false",
    "string_type": "must be text in quotes",
    "tuple_type": "must be a list, like [1, 2]",
    "list_type": "must be a list, like [1, 2]",
    "dataclass_type": "must be a table",
    "dict_type": "must be a table",
    "missing": "is required",
}
_BOUNDS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def toml(value: Any) -> str:
    """A value as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "a table"
    return repr(value)


def show(value: Any) -> str:
    """A value as TOML writes it, short (a config value, never a secret)."""
    text = toml(value)
    return text if len(text) <= 60 else text[:57] + "..."


def bounds(info: FieldInfo) -> dict[str, Any]:
    """The numeric bounds a field declares: {"ge": 1, "le": 500}..."""
    found: dict[str, Any] = {}
    for item in info.metadata:
        for name in ("ge", "gt", "le", "lt"):
            value = getattr(item, name, None)
            if value is not None and isinstance(item, annotated_types.BaseMetadata):
                found[name] = value
    return found


def number(value: Any) -> str:
    return (
        str(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) >= 1 else str(value)
    )


def bounds_text(found: Mapping[str, Any]) -> str:
    """ "between 1 and 500", "at least 1", "greater than 0"... ("" when unbounded)."""
    low = ("ge", found["ge"]) if "ge" in found else ("gt", found["gt"]) if "gt" in found else None
    high = ("le", found["le"]) if "le" in found else ("lt", found["lt"]) if "lt" in found else None
    if low and high and low[0] == "ge" and high[0] == "le":
        return f"between {number(low[1])} and {number(high[1])}"
    parts = []
    if low:
        parts.append(f"at least {number(low[1])}" if low[0] == "ge" else f"greater than {number(low[1])}")
    if high:
        parts.append(f"at most {number(high[1])}" if high[0] == "le" else f"less than {number(high[1])}")
    return " and ".join(parts)


def in_file(info: FieldInfo) -> bool:
    """Whether a key is read from config.toml (secrets come from the environment)."""
    extra = info.json_schema_extra
    return not (isinstance(extra, dict) and extra.get("in_file") is False)


def fields_of(model: Any) -> dict[str, FieldInfo]:
    found: dict[str, FieldInfo] = getattr(model, "__pydantic_fields__", {})
    return found


def _walk(model: Any, loc: Sequence[str | int]) -> tuple[list[str], FieldInfo | None, Any, list[int]]:
    """Follow an error's location through the models: (key parts, the field, its model, list positions)."""
    parts: list[str] = []
    positions: list[int] = []
    info: FieldInfo | None = None
    owner = model
    current = model
    for step in loc:
        if isinstance(step, int):
            positions.append(step)
            continue
        parts.append(step)
        found = fields_of(current).get(step)
        if found is None:
            info, owner = None, current
            break
        info, owner = found, current
        current = found.annotation
    return parts, info, owner, positions


def not_a_table(name: str, source: str) -> ConfigError:
    return ConfigError(name, f"must be a table ([{name}] and its keys below it)", source)


def unknown_section(name: str, sections: Sequence[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(name, sections, n=1)
    return ConfigError(
        f"[{name}]", "is not a section" + (f" (did you mean [{close[0]}]?)" if close else ""), source
    )


def config_error(
    exc: ValidationError, model: Any, prefix: str = "", source: str = "config.toml"
) -> ConfigError:
    """Pydantic's first error as one line: `config.toml: generation.max_steps must be ... (got 900)`."""
    error = exc.errors(include_url=False)[0]
    kind = error["type"]
    parts, info, owner, positions = _walk(model, error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, KeyProblem):
        parts = [*parts, cause.key]
    key = ".".join(p for p in (prefix, *parts) if p)
    value = error.get("input")
    if kind in {"unexpected_keyword_argument", "extra_forbidden"}:
        known = [name for name, f in fields_of(owner).items() if in_file(f)]
        if owner is model and not prefix:  # a table at the top of the file
            return unknown_section(key, [n for n in known if n != "raw"], source)
        close = difflib.get_close_matches(parts[-1] if parts else "", known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"
        return ConfigError(key, "is not a setting" + hint, source)
    item = f"item {positions[-1] + 1} " if positions else ""
    if isinstance(cause, KeyProblem):
        problem = cause.problem
    elif kind == "value_error" and cause is not None:
        problem = f"{item}{cause}"
    elif kind in _BOUNDS:
        rule = bounds_text(bounds(info)) if info is not None and not positions else ""
        rule = rule or bounds_text(
            {k: v for k, v in (error.get("ctx") or {}).items() if k in {"ge", "gt", "le", "lt"}}
        )
        problem = f"{item}must be {rule}"
    elif kind in {"string_too_short"}:
        problem = "must not be empty"
    elif kind == "too_short":
        least = (error.get("ctx") or {}).get("min_length", 1)
        problem = f"must list at least {least} item{'s' if least != 1 else ''}"
    elif kind in {"string_too_long", "too_long"}:
        limit = (error.get("ctx") or {}).get("max_length")
        problem = f"must be at most {limit} {'characters' if kind == 'string_too_long' else 'items'}"
    elif kind in _TYPES:
        problem = f"{item}{_TYPES[kind]}"
    else:
        message = error["msg"]
        problem = f"{item}{message[:1].lower()}{message[1:]}"
    if kind != "missing" and not isinstance(cause, KeyProblem) and not isinstance(value, Mapping):
        problem += f" (got {show(value)})"
    return ConfigError(key, problem, source)
