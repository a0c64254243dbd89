"""Validate REST requests a bot sends against Discord's OpenAPI 3.1 description.

Building a full openapi-core validator for the 1.2 MB spec takes ~9 s, so this module does the
part we need by hand and lazily: it matches the request path against the spec's path templates,
checks path and query parameters, and validates the JSON body with an OAS 3.1 JSON-schema
validator compiled once per (method, path template). ``$ref``s are resolved on demand through a
``referencing`` registry that holds the whole spec, so only the schemas a test touches are walked.

Usage::

    violations = get_spec_validator().validate("POST", "/channels/1/messages", {"content": "hi"})
    assert violations == []

Deliberate deviations from the raw spec (each one documented Discord behaviour):

* discord.py sends the ``id`` of a newly uploaded attachment as an integer index (``{"id": 0}``);
  the spec says string. Integer attachment ids are normalised to strings before validation.
  (Covered by the next rule too; kept explicit because it is the one quirk every upload hits.)
* Discord accepts snowflakes sent as JSON integers, and discord.py sends several that way
  (``recipient_id``, ``message_reference`` ids, ``allowed_mentions.users``...). ``SnowflakeType``
  therefore also admits non-negative integers in request bodies.
* The spec allows 4000 characters of ``content`` for channel messages (the Nitro *user* limit);
  bots are limited to 2000, as Discord's documentation says, so the validator enforces 2000.
"""

from __future__ import annotations

import copy
import json as jsonlib
import os
import re
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "SPEC_ENV_VAR",
    "DiscordSpecValidator",
    "RouteMatch",
    "Violation",
    "default_spec_path",
    "get_spec_validator",
]

SPEC_ENV_VAR = "HORDEBOT_DISCORD_OPENAPI"
_SPEC_URI = "urn:hordebot:discord-openapi"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_API_PREFIX = re.compile(r"^/api(?:/v\d+)?(?=/)")

# Schemas whose ``content`` the spec caps at 4000 (Nitro users); bots get 2000.
_BOT_CONTENT_LIMIT = 2000
_BOT_CONTENT_SCHEMAS = ("MessageCreateRequest", "BaseCreateMessageCreateRequest", "MessageEditRequestPartial")

_MAX_SHOWN = 120  # characters of an offending value quoted in a violation message
_BODY_CACHE_SIZE = 512  # validated bodies remembered (a test suite repeats a few large ones)
_PARAM_CACHE_SIZE = 4096  # validated path and query values remembered


def default_spec_path() -> Path:
    """``$HORDEBOT_DISCORD_OPENAPI`` if set, else the copy the repository holds,
    ``tests/data/discord/openapi.json`` (Discord's official description, MIT-licensed), so a fresh clone
    runs the suite with nothing beside it."""
    override = os.environ.get(SPEC_ENV_VAR)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "data" / "discord" / "openapi.json"


@dataclass(frozen=True)
class RouteMatch:
    """A request path matched to a spec path template."""

    template: str
    path_params: dict[str, str]
    methods: frozenset[str]  # upper-case methods the spec defines for this template


@dataclass(frozen=True)
class Violation:
    """One way a request breaks the spec. ``part`` is "route", "path", "query" or "body"."""

    part: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class _Template:
    template: str
    regex: re.Pattern[str]
    literal_segments: int
    methods: frozenset[str]


@dataclass(frozen=True)
class _Parameter:
    name: str
    required: bool
    schema: dict[str, Any]
    validator: OAS31Validator | None


@dataclass
class _Operation:
    method: str
    template: str
    operation_id: str
    parameters: dict[tuple[str, str], _Parameter]  # (in, name) -> parameter
    body_required: bool
    body_validator: OAS31Validator | None
    lock: threading.Lock = field(default_factory=threading.Lock)


class DiscordSpecValidator:
    """Checks (method, path, JSON body, query params) against Discord's OpenAPI description."""

    def __init__(self, spec: dict[str, Any], *, source: str = "<memory>") -> None:
        self.source = source
        self._spec = spec
        _apply_bot_limits(spec)
        self._registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
        )
        self._templates = self._compile_templates(spec.get("paths", {}))
        # A template matches only paths of its own number of segments: each path is tried against those.
        self._by_length: dict[int, list[_Template]] = defaultdict(list)
        for tpl in self._templates:
            self._by_length[tpl.template.strip("/").count("/")].append(tpl)
        self._param_results: OrderedDict[tuple[Any, ...], tuple[str, ...]] = OrderedDict()
        self._operations: dict[tuple[str, str], _Operation] = {}
        self._body_results: OrderedDict[tuple[str, str], tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> DiscordSpecValidator:
        spec_path = Path(path)
        try:
            spec = jsonlib.loads(spec_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Discord OpenAPI spec not found at {spec_path} (set ${SPEC_ENV_VAR} to override)"
            ) from None
        return cls(spec, source=str(spec_path))

    # ------------------------------------------------------------------ path matching

    @staticmethod
    def _compile_templates(paths: Mapping[str, Any]) -> list[_Template]:
        templates = []
        for template, item in paths.items():
            parts = []
            literals = 0
            for segment in template.strip("/").split("/"):
                name = re.fullmatch(r"\{([A-Za-z0-9_]+)\}", segment)
                if name:
                    parts.append(f"(?P<{name.group(1)}>[^/]+)")
                else:
                    parts.append(re.escape(segment))
                    literals += 1
            regex = re.compile("^/" + "/".join(parts) + "$")
            methods = frozenset(m.upper() for m in item if m in _METHODS)
            templates.append(_Template(template, regex, literals, methods))
        # Most literal segments first: /messages/@original beats /messages/{message_id}.
        templates.sort(key=lambda t: (-t.literal_segments, t.template))
        return templates

    @staticmethod
    def _split(path: str) -> tuple[str, dict[str, str]]:
        """Strip an ``/api/v10`` prefix and a query string; decode each segment on its own."""
        query: dict[str, str] = {}
        if "?" in path:
            path, _, qs = path.partition("?")
            query = dict(parse_qsl(qs, keep_blank_values=True))
        path = _API_PREFIX.sub("", path)
        if not path.startswith("/"):
            path = "/" + path
        if len(path) > 1:
            path = path.rstrip("/")
        # Segments are decoded individually so an encoded "/" in a token cannot split a segment.
        segments = [unquote(s).replace("/", "%2F") for s in path.split("/")]
        return "/".join(segments), query

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The spec template for ``path`` (preferring one that defines ``method``), or None."""
        clean, _ = self._split(path)
        return self._match_clean(method.upper(), clean)

    def _match_clean(self, method: str, clean: str) -> RouteMatch | None:
        first: RouteMatch | None = None
        # Templates in order (most literal segments first); `clean` never ends with "/" but the root.
        for tpl in self._by_length.get(clean.strip("/").count("/"), ()):
            m = tpl.regex.match(clean)
            if m:
                params = {k: v.replace("%2F", "/") for k, v in m.groupdict().items()}
                candidate = RouteMatch(tpl.template, params, tpl.methods)
                if method in tpl.methods:
                    return candidate
                first = first or candidate
        return first

    # ------------------------------------------------------------------ operations

    def _operation(self, method: str, template: str) -> _Operation:
        key = (method, template)
        op = self._operations.get(key)
        if op is not None:
            return op
        with self._lock:
            op = self._operations.get(key)
            if op is None:
                op = self._build_operation(method, template)
                self._operations[key] = op
        return op

    def _build_operation(self, method: str, template: str) -> _Operation:
        item = self._spec["paths"][template]
        raw = item[method.lower()]
        parameters: dict[tuple[str, str], _Parameter] = {}
        located: list[tuple[tuple[str, ...], Any]] = [
            (("paths", template, "parameters"), p) for p in item.get("parameters", [])
        ]
        located += [(("paths", template, method.lower(), "parameters"), p) for p in raw.get("parameters", [])]
        counters: dict[tuple[str, ...], int] = defaultdict(int)
        for base, param in located:
            index = counters[base]
            counters[base] += 1
            where: tuple[str, ...] = (*base, str(index))
            if "$ref" in param:
                where = tuple(_unescape(p) for p in param["$ref"][2:].split("/"))
                param = self._deref(param)
            validator = None
            if "schema" in param:
                validator = self._compile({"$ref": _ref_to((*where, "schema"))})
            parameters[(param["in"], param["name"])] = _Parameter(
                name=param["name"],
                required=bool(param.get("required", False)),
                schema=param.get("schema", {}),
                validator=validator,
            )
        body = raw.get("requestBody")
        body_validator = None
        body_required = False
        if body is not None:
            body = self._deref(body)
            body_required = bool(body.get("required", False))
            content = body.get("content", {})
            media = "application/json" if "application/json" in content else next(iter(content), None)
            if media is not None and "schema" in content[media]:
                body_validator = self._compile(
                    {
                        "$ref": _ref_to(
                            ("paths", template, method.lower(), "requestBody", "content", media, "schema")
                        )
                    }
                )
        return _Operation(
            method=method,
            template=template,
            operation_id=raw.get("operationId", f"{method} {template}"),
            parameters=parameters,
            body_required=body_required,
            body_validator=body_validator,
        )

    def _compile(self, schema: dict[str, Any]) -> OAS31Validator:
        return OAS31Validator(schema, registry=self._registry, format_checker=oas31_format_checker)

    def _deref(self, obj: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in obj and seen < 20:
            ref = obj["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"unsupported external $ref {ref!r}")
            target: Any = self._spec
            for part in ref[2:].split("/"):
                target = target[_unescape(part)]
            obj = target
            seen += 1
        return obj

    def operation_id(self, method: str, path: str) -> str | None:
        match = self.match(method, path)
        if match is None or method.upper() not in match.methods:
            return None
        return self._operation(method.upper(), match.template).operation_id

    # ------------------------------------------------------------------ validation

    def validate(
        self,
        method: str,
        path: str,
        json: Any | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Human-readable spec violations of one request; an empty list means it conforms.

        ``path`` is relative to the API base (``/channels/1/messages``); a leading ``/api/v10``
        and a query string are tolerated. ``json`` is the parsed JSON body (for multipart
        requests, the parsed ``payload_json`` part); ``None`` means no body.
        """
        return [v.message for v in self.check(method, path, json, params)]

    def check(
        self,
        method: str,
        path: str,
        json: Any | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[Violation]:
        """Like :meth:`validate`, but each violation says which part of the request it is about."""
        method = method.upper()
        clean, query_from_path = self._split(path)
        query: dict[str, Any] = {**query_from_path, **dict(params or {})}
        match = self._match_clean(method, clean)
        if match is None:
            return [Violation("route", f"{method} {clean}: path matches no path template in Discord's spec")]
        where = f"{method} {match.template}"
        if method not in match.methods:
            allowed = ", ".join(sorted(match.methods))
            return [Violation("route", f"{where}: method not defined by the spec (allowed: {allowed})")]
        op = self._operation(method, match.template)
        found = [
            *(Violation("path", m) for m in self._check_params(where, op, "path", match.path_params, True)),
            *(Violation("query", m) for m in self._check_params(where, op, "query", query, False)),
            *(Violation("body", m) for m in self._check_body(where, op, json)),
        ]
        return list(dict.fromkeys(found))

    def _check_params(
        self, where: str, op: _Operation, location: str, values: Mapping[str, Any], require_all: bool
    ) -> list[str]:
        problems: list[str] = []
        declared = {name: p for (loc, name), p in op.parameters.items() if loc == location}
        for name, param in declared.items():
            if name not in values:
                if param.required or require_all:
                    problems.append(f"{where}: missing required {location} parameter {name!r}")
                continue
            if param.validator is None:
                continue
            raw_values = values[name] if isinstance(values[name], list | tuple) else [values[name]]
            for raw in raw_values:
                problems += self._param_problems(where, location, name, param, raw)
        if location == "query":
            for name in values:
                if name not in declared:
                    problems.append(f"{where}: query parameter {name!r} is not defined by the spec")
        return problems

    def _param_problems(self, where: str, location: str, name: str, param: _Parameter, raw: Any) -> list[str]:
        """One parameter value's violations, remembered per (operation, parameter, value) as bodies are: a
        test's requests name the same few channels and messages again and again."""
        try:
            key = (where, location, name, type(raw), raw)
            hash(key)
        except TypeError:
            return self._validate_param(where, location, name, param, raw)
        with self._lock:
            if key in self._param_results:
                self._param_results.move_to_end(key)
                return list(self._param_results[key])
        problems = self._validate_param(where, location, name, param, raw)
        with self._lock:
            self._param_results[key] = tuple(problems)
            while len(self._param_results) > _PARAM_CACHE_SIZE:
                self._param_results.popitem(last=False)
        return problems

    def _validate_param(self, where: str, location: str, name: str, param: _Parameter, raw: Any) -> list[str]:
        assert param.validator is not None
        value = self._coerce(raw, param.schema)
        return [
            f"{where}: {location} parameter {name!r}: {_describe(leaf)}"
            for err in param.validator.iter_errors(value)
            for leaf in _leaf_errors(err)
        ]

    def _coerce(self, value: Any, schema: dict[str, Any]) -> Any:
        """Turn a query/path string into the type its schema asks for (as a server would)."""
        # On the wire every query value is a string: discord.py passes `wait=1` as an int, aiohttp sends "1".
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            return value
        types = _schema_types(self._deref(schema))
        if "boolean" in types and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if "integer" in types and re.fullmatch(r"-?\d+", value):
            return int(value)
        if "number" in types:
            try:
                return float(value)
            except ValueError:
                return value
        return value

    def _check_body(self, where: str, op: _Operation, body: Any) -> list[str]:
        """The body's violations, remembered per (operation, body): validation is a pure function of the
        two, and the bodies that cost most repeat in every test (the command sync, ~1.5 s to validate)."""
        if body is None:
            return self._validate_body(where, op, body)
        try:
            key = (where, jsonlib.dumps(body, sort_keys=True, separators=(",", ":")))
        except (TypeError, ValueError):
            return self._validate_body(where, op, body)
        with self._lock:
            if key in self._body_results:
                self._body_results.move_to_end(key)
                return list(self._body_results[key])
        problems = self._validate_body(where, op, body)
        with self._lock:
            self._body_results[key] = tuple(problems)
            while len(self._body_results) > _BODY_CACHE_SIZE:
                self._body_results.popitem(last=False)
        return problems

    def _validate_body(self, where: str, op: _Operation, body: Any) -> list[str]:
        if body is None:
            if op.body_required:
                return [f"{where}: request body is required but none was sent"]
            return []
        if op.body_validator is None:
            return [f"{where}: the spec defines no request body for this operation, but one was sent"]
        body = normalise_discord_py_quirks(body)
        problems = []
        errors = sorted(op.body_validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
        for err in errors:
            for leaf in _leaf_errors(err):
                problems.append(f"{where}: {_location(leaf)}: {_describe(leaf)}")
        return problems


# ---------------------------------------------------------------------- helpers


def normalise_discord_py_quirks(body: Any) -> Any:
    """Copy of ``body`` with discord.py's integer attachment ids turned into strings."""
    if not _has_int_attachment_id(body):
        return body
    body = copy.deepcopy(body)
    _fix_attachment_ids(body)
    return body


def _has_int_attachment_id(node: Any) -> bool:
    if isinstance(node, dict):
        atts = node.get("attachments")
        if isinstance(atts, list) and any(
            isinstance(a, dict) and isinstance(a.get("id"), int) and not isinstance(a.get("id"), bool)
            for a in atts
        ):
            return True
        return any(_has_int_attachment_id(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_int_attachment_id(v) for v in node)
    return False


def _fix_attachment_ids(node: Any) -> None:
    if isinstance(node, dict):
        atts = node.get("attachments")
        if isinstance(atts, list):
            for att in atts:
                if (
                    isinstance(att, dict)
                    and isinstance(att.get("id"), int)
                    and not isinstance(att["id"], bool)
                ):
                    att["id"] = str(att["id"])
        for v in node.values():
            _fix_attachment_ids(v)
    elif isinstance(node, list):
        for v in node:
            _fix_attachment_ids(v)


def _apply_bot_limits(spec: dict[str, Any]) -> None:
    schemas = spec.get("components", {}).get("schemas", {})
    snowflake = schemas.get("SnowflakeType")
    if isinstance(snowflake, dict) and snowflake.get("type") == "string":
        # "pattern" only constrains strings and "minimum" only numbers, so both forms stay checked.
        snowflake["type"] = ["string", "integer"]
        snowflake["minimum"] = 0
    for name in _BOT_CONTENT_SCHEMAS:
        content = schemas.get(name, {}).get("properties", {}).get("content")
        if isinstance(content, dict) and content.get("maxLength", 0) > _BOT_CONTENT_LIMIT:
            content["maxLength"] = _BOT_CONTENT_LIMIT


def _ref_to(parts: Iterable[str]) -> str:
    """An absolute ``$ref`` to the spec node at the (unescaped) JSON-pointer ``parts``."""
    escaped = (quote(p.replace("~", "~0").replace("/", "~1"), safe="~@!$&'()*+,;=:") for p in parts)
    return f"{_SPEC_URI}#/" + "/".join(escaped)


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def _schema_types(schema: Mapping[str, Any]) -> set[str]:
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return set(t)
    return set()


def _discriminated_out(errors: Iterable[ValidationError]) -> bool:
    """True if a union branch was rejected on its discriminator (``type``) or on the JSON type."""
    for e in errors:
        rel = list(e.relative_path)
        if not rel and e.validator == "type":
            return True
        if rel == ["type"] and e.validator in ("enum", "const", "type"):
            return True
    return False


def _leaf_errors(err: ValidationError) -> list[ValidationError]:
    """Descend through oneOf/anyOf to the errors of the branch the instance was meant for."""
    if err.validator not in ("oneOf", "anyOf") or not err.context:
        return [err]
    branches: dict[Any, list[ValidationError]] = defaultdict(list)
    for sub in err.context:
        branches[sub.relative_schema_path[0]].append(sub)
    candidates = [errs for errs in branches.values() if not _discriminated_out(errs)]
    if not candidates:
        return [err]
    if len(candidates) == 1:
        return [leaf for sub in candidates[0] for leaf in _leaf_errors(sub)]
    # Several branches could have been meant. Errors every branch agrees on are real regardless.
    per_branch = [[leaf for sub in errs for leaf in _leaf_errors(sub)] for errs in candidates]
    keyed = [{_error_key(leaf): leaf for leaf in leaves} for leaves in per_branch]
    common = set(keyed[0]).intersection(*keyed[1:])
    if common:
        return [keyed[0][k] for k in keyed[0] if k in common]
    # Otherwise prefer the branch that got furthest into the instance, then the fewest errors.
    ranked = sorted(per_branch, key=_rank)
    first, second = ranked[0], ranked[1]
    if _rank(first) == _rank(second):
        return [err]
    return first


def _rank(leaves: list[ValidationError]) -> tuple[int, int]:
    return (-max(len(e.absolute_path) for e in leaves), len(leaves))


def _error_key(err: ValidationError) -> tuple[str, str, str]:
    return (_location(err), str(err.validator), _describe(err))


def _location(err: ValidationError) -> str:
    out = "body"
    for part in err.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _describe(err: ValidationError) -> str:
    inst = err.instance
    v = err.validator
    if v == "maxLength" and isinstance(inst, str):
        return f"string of {len(inst)} characters is longer than the maximum {err.validator_value}"
    if v == "minLength" and isinstance(inst, str):
        return f"string of {len(inst)} characters is shorter than the minimum {err.validator_value}"
    if v == "maxItems" and isinstance(inst, list):
        return f"{len(inst)} items, more than the maximum {err.validator_value}"
    if v == "minItems" and isinstance(inst, list):
        return f"{len(inst)} items, fewer than the minimum {err.validator_value}"
    if v in ("oneOf", "anyOf"):
        return f"{_shorten(inst)} matches none of the allowed shapes ({v})"
    message = str(err.message)
    return message if len(message) <= 300 else message[:297] + "..."


_cached: DiscordSpecValidator | None = None
_cached_path: Path | None = None
_cache_lock = threading.Lock()


def get_spec_validator() -> DiscordSpecValidator:
    """The process-wide validator for :func:`default_spec_path` (loaded once, ~0.1 s)."""
    global _cached, _cached_path
    path = default_spec_path()
    with _cache_lock:
        if _cached is None or _cached_path != path:
            _cached = DiscordSpecValidator.from_file(path)
            _cached_path = path
        return _cached
