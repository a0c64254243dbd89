"""The prompt safety filter: stop prompts that sexualise minors before they ever reach the AI Horde.

The Horde rejects such prompts (``CorruptPrompt``) and then times out the *sending IP*; the bot's one IP
serves everyone, so the bot must catch them first. Like the Horde's own filter, a prompt is blocked when it
has an *underage* context and a *lewd* context at the same time:

* underage context: an underage term in the positive prompt (``child``, ``loli``, ``13yo``, ``niña``…), or
  an adult term in the negative prompt (``nsfw girl ### old, mature, adult`` pulls the model towards
  children);
* lewd context: a lewd term in the positive prompt, or a clothing term in the negative prompt
  (``child ### clothes`` pulls the model towards nudity).

Guild admins can add their own blocked words or regexes (``extra_terms``); these block on their own, with
reason ``"custom"``, and can never unblock the built-in rule.

Word lists live in ``bot/safety/data/*.txt`` (see ``data/README.txt`` for the format). They are read with
:mod:`importlib.resources` and compiled into a few large regexes the first time a prompt is checked (or when
:func:`warm_up` is called), never at import.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from typing import Literal

from bot.safety.normalize import LEET_EQUIVALENTS, Form, fold, leet_folds, normalize
from bot.safety.typos import TypoIndex, vocabulary_words

__all__ = [
    "MAX_CUSTOM_TERM_LENGTH",
    "PromptFilter",
    "Reason",
    "SafetyVerdict",
    "split_negative",
    "validate_custom_term",
    "warm_up",
]

MAX_CUSTOM_TERM_LENGTH = 200
#: At most this many unbounded repeats (``*``, ``+``, ``{n,}``) in one custom regex.
_MAX_UNBOUNDED_REPEATS = 3
#: Custom regexes are run on at most this many characters of the raw prompt.
_MAX_CUSTOM_SCAN = 4000

Reason = Literal["csam", "custom"]
Kind = Literal["word", "prefix", "suffix", "infix", "regex", "number"]
_Trie = dict[str, "_Trie"]


@dataclass(frozen=True, slots=True)
class SafetyVerdict:
    """The outcome of :meth:`PromptFilter.check`.

    Hits are the normalised text that matched (``"loli"``, ``"13yo"``); hits found in the negative prompt
    are prefixed ``"negative:"``.
    """

    blocked: bool
    reason: Reason | None = None
    underage_hits: tuple[str, ...] = ()
    lewd_hits: tuple[str, ...] = ()
    custom_hits: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.blocked


# --- Word-list entries ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: Kind
    value: str  # folded term, or raw regex source
    origin: str  # "file:line", for error messages
    not_before: tuple[str, ...] = ()  # folded words that must not follow the term ("!key")
    not_after: tuple[str, ...] = ()  # folded words that must not precede the term ("^chicken")


_BRACES = re.compile(r"\{([^{}]*)\}")


def _expand(text: str) -> list[str]:
    """Expand ``{a|b}`` alternatives: ``{1|2} {yo|years old}`` → four phrases."""
    m = _BRACES.search(text)
    if m is None:
        return [text]
    head, tail = text[: m.start()], text[m.end() :]
    return [out for alt in m.group(1).split("|") for out in _expand(head + alt + tail)]


def _parse_line(line: str, origin: str) -> list[_Entry]:
    line = line.strip()
    if not line or line.startswith("#"):
        return []
    if line.startswith(("re:", "num:")):
        regex_kind: Kind = "regex" if line.startswith("re:") else "number"
        source = line.partition(":")[2].strip()
        try:
            compiled = re.compile(source)
        except re.error as exc:
            raise ValueError(f"{origin}: bad regex {source!r}: {exc}") from exc
        if compiled.groups:
            raise ValueError(f"{origin}: use (?:...) instead of capturing groups in {source!r}")
        return [_Entry(regex_kind, source, origin)]
    term, _, guard_text = line.partition(" | ")
    not_before: list[str] = []
    not_after: list[str] = []
    for guard in guard_text.split():
        word = fold(guard[1:].replace("_", " "))
        if guard[0] not in "!^" or not word:
            raise ValueError(f"{origin}: guard {guard!r} must be !word or ^word")
        (not_before if guard[0] == "!" else not_after).append(word)
    term = term.strip()
    starts, ends = term.startswith("*"), term.endswith("*")
    kind: Kind = "infix" if starts and ends else "suffix" if starts else "prefix" if ends else "word"
    if kind in ("infix", "suffix") and (not_before or not_after):
        raise ValueError(f"{origin}: *term and *term* take no guards")
    entries: list[_Entry] = []
    for variant in _expand(term.strip("*")):
        value = fold(variant)
        if not value:
            raise ValueError(f"{origin}: term {variant!r} has no letters or digits")
        if not_after and " " in value:
            raise ValueError(f"{origin}: ^guards need a single-word term, not {value!r}")
        entries.append(_Entry(kind, value, origin, tuple(not_before), tuple(not_after)))
    return entries


def _data_lines(name: str) -> list[str]:
    """The lines of one data file, without comments (from ``#`` on) and blank lines."""
    text = resources.files("bot.safety").joinpath("data", name).read_text(encoding="utf-8")
    return [kept for line in text.splitlines() if (kept := line.partition("#")[0].strip())]


def _read_entries(prefix: str) -> list[_Entry]:
    data = resources.files("bot.safety").joinpath("data")
    entries: list[_Entry] = []
    names = sorted(p.name for p in data.iterdir() if p.name.startswith(prefix) and p.name.endswith(".txt"))
    if not names:
        raise RuntimeError(f"no word lists named {prefix}*.txt in bot/safety/data")
    for name in names:
        text = data.joinpath(name).read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            entries.extend(_parse_line(line, f"{name}:{number}"))
    return entries


# --- Pattern building ----------------------------------------------------------------------------------
#
# A context's terms become one regex ``" (?:TRIE|RAW|...)"`` run over Form.words: it is tried only where a
# token starts (after a space), and the trie makes each attempt cost a few character tests, not one per term.
# Each term letter matches its leet stand-ins and may repeat: "u" → "[u]u*+", "e" → "[e3€][e€]*+" (the
# repeat is possessive and never includes "1", which stands in for both i and l, so no input can make the
# engine backtrack through the ways of splitting a run). "nuuude" and "n00de" read "nude"; a doubled letter
# needs two ("teen" never matches "ten").

_PLURAL = "(?:[e3€]?[s5$])?"
_HAS_DIGIT = re.compile("[0-9]")


def _char_pattern(ch: str, repeat: bool = True) -> str:
    """A term character as a regex: its leet class, then (``repeat``, letters only) more of the same."""
    if ch == " ":
        return " ?"  # "little girl" also matches "littlegirl"
    alts = LEET_EQUIVALENTS.get(ch)
    atom = re.escape(ch) if alts is None else "[" + "".join(re.escape(c) for c in alts) + "]"
    if not repeat or not ch.isalpha():
        return atom
    more = ch if alts is None else "".join(c for c in alts if c != "1")
    return atom + (re.escape(more) if len(more) == 1 else f"[{re.escape(more)}]") + "*+"


def _literal_pattern(text: str) -> str:
    """A fixed-width pattern for ``text`` (leet-tolerant, no repeats), for guards and lookbehinds."""
    return "".join(" " if ch == " " else _char_pattern(ch, repeat=False) for ch in text)


def _trie_pattern(items: Iterable[tuple[str, str]]) -> str:
    """One regex for ``(term, tail)`` pairs: each term followed by its tail pattern, factored as a trie."""
    root: _Trie = {}
    for term, tail in items:
        node = root
        for ch in term:
            node = node.setdefault(ch, {})
        node.setdefault("", {})[tail] = {}

    def emit(node: _Trie) -> str:
        # A letter repeats only if no term goes on with the same letter ("te" → "tee" needs its second e).
        branches = [
            _char_pattern(ch, repeat=ch not in child) + emit(child)
            for ch, child in sorted(node.items())
            if ch
        ]
        branches.extend(sorted(node.get("", {})))
        if len(branches) == 1:
            return branches[0]
        return "(?:" + "|".join(branches) + ")"

    return emit(root)


def _tail(entry: _Entry) -> str:
    """What follows a term in the trie: plural and word end, or the rest of the word; then its guards."""
    tail = ""
    if entry.not_after:  # lookbehinds need a fixed width: they only see the term spelled without repeats
        term = _literal_pattern(entry.value)
        tail += "".join(f"(?<!{_literal_pattern(w)} {term})" for w in entry.not_after)
    words = "|".join(_literal_pattern(w) for w in entry.not_before)
    if entry.kind == "prefix":
        return tail + (f"(?!{words})" if words else "") + "\\S*"
    return tail + _PLURAL + (f"(?! (?:{words}))" if words else "") + "(?=\\s)"


# A regex that starts with a group of plain words, "(?:young|little) ...", joins the trie: each word with the
# rest of the regex as its tail. (A separate alternative would be tried, slowly, at every token.)
_WORDS_THEN_REST = re.compile(r"\(\?:([a-z |]+)\)(.*)")


def _anchored(entries: Sequence[_Entry]) -> re.Pattern[str] | None:
    trie = [(e.value, _tail(e)) for e in entries if e.kind in ("word", "prefix")]
    raws: list[str] = []
    for entry in entries:
        if entry.kind != "regex":
            continue
        if m := _WORDS_THEN_REST.fullmatch(entry.value):
            rest = _leetify_regex(m.group(2)) + "(?=\\s)"
            trie.extend((word.strip(), rest) for word in m.group(1).split("|"))
        else:
            raws.append(f"(?:{_leetify_regex(entry.value)})(?=\\s)")
    parts = [_trie_pattern(trie)] if trie else []
    if suffixes := [(e.value, _PLURAL + "(?=\\s)") for e in entries if e.kind == "suffix"]:
        parts.append("\\S*?" + _trie_pattern(suffixes))
    parts.extend(raws)
    return re.compile(" (?:" + "|".join(parts) + ")") if parts else None


def _numeric(entries: Sequence[_Entry]) -> re.Pattern[str] | None:
    """The ``num:`` regexes, tried only at tokens that start with a digit."""
    raws = [f"(?:{_leetify_regex(e.value)})(?=\\s)" for e in entries if e.kind == "number"]
    return re.compile(" (?=[0-9])(?:" + "|".join(raws) + ")") if raws else None


def _leetify_regex(source: str) -> str:
    """Make the literal letters of a hand-written regex leet-tolerant (``a`` → ``[a4@]``).

    Escapes, character classes, group syntax and ``{m,n}`` quantifiers are copied unchanged.
    """
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "\\":
            out.append(source[i : i + 2])
            i += 2
        elif ch == "[":
            j = i + 1
            if j < n and source[j] == "^":
                j += 1
            if j < n and source[j] == "]":
                j += 1
            while j < n and source[j] != "]":
                j += 2 if source[j] == "\\" else 1
            out.append(source[i : j + 1])
            i = j + 1
        elif ch == "{":
            j = source.index("}", i)
            out.append(source[i : j + 1])
            i = j + 1
        elif ch == "(" and source.startswith("?", i + 1):
            j = i + 2
            if source.startswith("P<", j):
                j = source.index(">", j) + 1
            elif source.startswith("P=", j):
                j = source.index(")", j) + 1
            elif source.startswith(("<=", "<!"), j):
                j += 2
            elif j < n and source[j] in ":=!#":
                j += 1
            else:  # inline flags: (?i) or (?a-s:...)
                while j < n and source[j] not in ":)":
                    j += 1
                j += 1
            out.append(source[i:j])
            i = j
        else:
            out.append(_char_pattern(ch, repeat=False) if ch in LEET_EQUIVALENTS else ch)
            i += 1
    return "".join(out)


@cache
def _compile(source: str) -> re.Pattern[str]:
    return re.compile(source)


@dataclass(frozen=True, slots=True)
class _Matcher:
    """All the terms of one context, compiled."""

    anchored: re.Pattern[str] | None  # words, prefixes, suffixes, regexes: on Form.words
    numeric: re.Pattern[str] | None  # num: regexes: on Form.words, when it has a digit
    infix_ascii: tuple[str, ...]  # *term*: substrings of the leet-folded Form.words
    infix_other: tuple[str, ...]  # the same for non-ASCII terms (CJK...), checked only on non-ASCII text
    inside: str | None  # every plain term of 3+ characters, anywhere: on Form.spaced runs (compiled lazily)

    @classmethod
    def build(cls, entries: Sequence[_Entry]) -> _Matcher:
        infixes = sorted({e.value for e in entries if e.kind == "infix"})
        inner = sorted(
            {
                e.value.replace(" ", "")
                for e in entries
                if e.kind not in ("regex", "number") and len(e.value) >= 3
            }
        )
        return cls(
            anchored=_anchored([e for e in entries if e.kind not in ("infix", "number")]),
            numeric=_numeric(entries),
            infix_ascii=tuple(t for t in infixes if t.isascii()),
            infix_other=tuple(t for t in infixes if not t.isascii()),
            inside=_trie_pattern((t, "") for t in inner) if inner else None,
        )

    def find(self, forms: Sequence[Form]) -> list[str]:
        hits: list[str] = []
        for form in forms:
            if self.anchored is not None:
                hits.extend(h.strip() for h in self.anchored.findall(form.words))
            if self.numeric is not None and _HAS_DIGIT.search(form.words):
                hits.extend(h.strip() for h in self.numeric.findall(form.words))
            if self.infix_ascii:
                for text in leet_folds(form.words):
                    hits.extend(t for t in self.infix_ascii if t in text)
            if self.infix_other and not form.words.isascii():
                hits.extend(t for t in self.infix_other if t in form.words)
            if self.inside is not None and form.spaced:
                inside = _compile(self.inside)
                for run in form.spaced:
                    hits.extend(inside.findall(run))
        return hits


@dataclass(frozen=True, slots=True)
class _Rules:
    underage: _Matcher
    lewd: _Matcher
    negative_adult: _Matcher
    negative_lewd: _Matcher
    typos: TypoIndex  # misspelled underage words -> the word (data/typo_allow.txt: benign look-alikes)
    emoji: re.Pattern[str]  # emoji that are an underage context (data/minor_emoji.txt)
    sizes: dict[str, int] = field(default_factory=dict)


def _vocabulary(entries: Iterable[_Entry]) -> tuple[set[str], set[str]]:
    """The typo index's vocabulary (every plain word of the underage terms, phrases and word-group regexes)
    and its typo words: the single-word terms and the phrase words of five letters or more ("litle girl" is
    still a little girl, "middle scooler" a middle schooler)."""
    words: set[str] = set()
    single: set[str] = set()
    for entry in entries:
        if entry.kind == "number":
            continue
        if entry.kind == "regex":
            if m := _WORDS_THEN_REST.fullmatch(entry.value):
                words.update(w for w in m.group(1).split("|") if " " not in w)
            continue
        found = vocabulary_words(entry.value)
        words.update(found)
        if found == [entry.value]:
            single.add(entry.value)
    # Short words of phrases ("son", "das") are left out of the typo rules: "soon" is not "son".
    return {w for w in words if len(w) >= 3}, single | {w for w in words if len(w) >= 5}


# Characters inside emoji sequences that only join or restyle them: zero-width joiner, variation selectors.
_EMOJI_JOINERS = re.compile("[\u200d\ufe0e\ufe0f]")


def _emoji_pattern(lines: Sequence[str]) -> re.Pattern[str]:
    """One alternation of the listed emoji (joiners removed; longest first: sequences are reported whole)."""
    emoji = {_EMOJI_JOINERS.sub("", line.split()[0]) for line in lines}
    return re.compile("|".join(re.escape(e) for e in sorted(emoji, key=lambda e: (-len(e), e))))


@cache
def _rules() -> _Rules:
    lists = {name: _read_entries(name) for name in ("underage_", "lewd_", "negative_adult", "negative_lewd")}
    allowed = [fold(line) for line in _data_lines("typo_allow.txt")]
    return _Rules(
        underage=_Matcher.build(lists["underage_"]),
        lewd=_Matcher.build(lists["lewd_"]),
        negative_adult=_Matcher.build(lists["negative_adult"]),
        negative_lewd=_Matcher.build(lists["negative_lewd"]),
        typos=TypoIndex(
            *_vocabulary(lists["underage_"]),
            allowed,
            infixes=[e.value for e in lists["underage_"] if e.kind == "infix" and e.value.isascii()],
            prefixes=[e.value for e in lists["underage_"] if e.kind == "prefix"],
            standalone=[e.value for e in lists["underage_"] if e.kind != "regex" and " " not in e.value],
        ),
        emoji=_emoji_pattern(_data_lines("minor_emoji.txt")),
        sizes={name.rstrip("_"): len(entries) for name, entries in lists.items()},
    )


def _corrected(typos: TypoIndex, forms: Sequence[Form]) -> tuple[Form, ...]:
    """``forms`` with misspelled underage words corrected and benign look-alikes blanked (see typos.py)."""
    out = []
    for form in forms:
        words = typos.rewrite(form.words)
        out.append(form if words is None else Form(words=words, spaced=form.spaced))
    return tuple(out)


def warm_up() -> dict[str, int]:
    """Load and compile the word lists now (e.g. at bot start-up); returns the number of terms per list.

    This also compiles the patterns that :meth:`PromptFilter.check` otherwise compiles only when a prompt
    first needs them (spaced-out letters), so no check pays a compile later.
    """
    rules = _rules()
    for matcher in (rules.underage, rules.lewd, rules.negative_adult, rules.negative_lewd):
        if matcher.inside is not None:
            _compile(matcher.inside)
    return dict(rules.sizes)


# --- Custom (guild) terms ------------------------------------------------------------------------------

_PROBE_TEXT = string.printable + " a photo of a cat, masterpiece"


def _repeat_problem(pattern: str) -> str | None:
    """Reject the shapes that make Python's backtracking regex engine slow on a long prompt.

    Exponential: a repeated group that itself contains a repeat or an alternation (``(a+)+``, ``(a|ab)*``).
    Polynomial: more than a few unbounded repeats in a row (``.*.*.*.*x``).
    """
    # Per open group: [contains a repeat, contains an alternation]
    stack: list[list[bool]] = [[False, False]]
    last_group: list[bool] | None = None  # flags of the group that just closed, if the last atom was a group
    unbounded = 0
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        quantifier: str | None = None
        if ch == "\\":
            if pattern[i + 1 : i + 2].isdigit() and pattern[i + 1] != "0":
                return "back-references are not allowed"
            i += 2
            last_group = None
            continue
        if ch == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            last_group = None
            continue
        if ch == "(":
            if pattern.startswith("(?P=", i):
                return "back-references are not allowed"
            stack.append([False, False])
            last_group = None
            i += 1
            continue
        if ch == ")":
            if len(stack) > 1:
                last_group = stack.pop()
                if last_group[0]:
                    stack[-1][0] = True
            i += 1
            continue
        if ch == "|":
            stack[-1][1] = True
            last_group = None
            i += 1
            continue
        if ch in "*+?":
            quantifier = ch
            i += 1
        elif ch == "{" and (m := re.match(r"\{(\d*)(,?)(\d*)\}", pattern[i:])):
            _low, comma, high = m.groups()
            if not comma:
                quantifier = "{n}"
            elif not high or int(high) > 50:
                quantifier = "{n,}"
            else:
                quantifier = "{n,m}"
            i += m.end()
        else:
            last_group = None
            i += 1
            continue
        if i < n and pattern[i] in "?+":  # lazy or possessive modifier
            i += 1
        is_unbounded = quantifier in ("*", "+", "{n,}")
        repeats = quantifier not in ("?", "{n}")
        if last_group is not None and repeats and (last_group[0] or (is_unbounded and last_group[1])):
            return "a repeated group must not contain another repeat or an alternation"
        if is_unbounded:
            unbounded += 1
            if unbounded > _MAX_UNBOUNDED_REPEATS:
                return f"at most {_MAX_UNBOUNDED_REPEATS} unbounded repeats (*, +, {{n,}}) are allowed"
        if repeats:
            stack[-1][0] = True
        last_group = None
    return None


def validate_custom_term(term: str) -> str | None:
    """Check a guild admin's blocked term; return an error message, or ``None`` when it is fine.

    A plain term is a word or phrase, matched whole-word after normalisation (leet, accents, look-alikes and
    plurals included). A term starting with ``re:`` is a Python regex, matched case-insensitively against the
    prompt as typed and against its normalised form.
    """
    if not term or not term.strip():
        return "The term is empty."
    if len(term) > MAX_CUSTOM_TERM_LENGTH:
        return f"The term is longer than {MAX_CUSTOM_TERM_LENGTH} characters."
    if term.startswith("re:"):
        source = term[3:]
        if not source.strip():
            return "The regex after `re:` is empty."
        try:
            compiled = re.compile(source, re.IGNORECASE)
        except re.error as exc:
            return f"The regex is invalid: {exc}."
        except (RecursionError, OverflowError):
            return "The regex is too complex."
        problem = _repeat_problem(source)
        if problem is not None:
            return f"The regex is unsafe: {problem}."
        if any(m.start() == m.end() for m in compiled.finditer(_PROBE_TEXT)):
            return "The regex can match empty text, so it would block every prompt."
        return None
    folded = fold(term)
    if len(folded.replace(" ", "")) < 2:
        return "The term needs at least two letters or digits."
    return None


@dataclass(frozen=True, slots=True)
class _Custom:
    words: re.Pattern[str] | None
    inside: re.Pattern[str] | None
    regexes: tuple[re.Pattern[str], ...]

    def find(self, raw: str, forms: Sequence[Form]) -> list[str]:
        hits: list[str] = []
        for form in forms:
            if self.words is not None:
                hits.extend(h.strip() for h in self.words.findall(form.words))
            if self.inside is not None:
                for run in form.spaced:
                    hits.extend(self.inside.findall(run))
        raw = raw[:_MAX_CUSTOM_SCAN]
        for regex in self.regexes:
            m = regex.search(raw)
            if m is None:
                for form in forms:
                    if (m := regex.search(form.words)) is not None:
                        break
            if m is not None:
                hits.append(m.group(0).strip() or regex.pattern)
        return hits


@lru_cache(maxsize=256)
def _custom(terms: tuple[str, ...]) -> _Custom | None:
    words: list[str] = []
    regexes: list[re.Pattern[str]] = []
    for term in terms:
        if validate_custom_term(term) is not None:
            continue  # validated on input; anything invalid that slipped through is ignored, never fatal
        if term.startswith("re:"):
            regexes.append(re.compile(term[3:], re.IGNORECASE))
        else:
            words.append(fold(term))
    if not words and not regexes:
        return None
    tail = _PLURAL + "(?=\\s)"
    word_re = re.compile(" " + _trie_pattern((w, tail) for w in words)) if words else None
    inner = sorted({w.replace(" ", "") for w in words if len(w) >= 3})
    inside = re.compile(_trie_pattern((w, "") for w in inner)) if inner else None
    return _Custom(word_re, inside, tuple(regexes))


# --- The filter ----------------------------------------------------------------------------------------

# "(adult:-1.5)" in the positive prompt is a negative prompt in disguise.
_NEGATIVE_WEIGHT = re.compile(r"\(([^()]{1,200}?):\s*-\s*[0-9.]+\s*\)")


def split_negative(prompt: str, negative: str = "") -> tuple[str, str]:
    """Split the Horde's ``"positive ### negative"`` convention; extra ``negative`` text is appended."""
    positive, sep, tail = prompt.partition("###")
    if sep:
        negative = f"{tail}\n{negative}" if negative else tail
    return positive, negative


def _unique(hits: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(h for h in hits if h))


class PromptFilter:
    """Checks prompts. Constructing one loads and compiles the word lists and the typo index (once per
    process: every filter shares them); importing the module does no work."""

    def __init__(self) -> None:
        self._rules = _rules()

    def warm_up(self) -> dict[str, int]:
        return warm_up()

    def check(self, prompt: str, negative: str = "", extra_terms: Sequence[str] = ()) -> SafetyVerdict:
        rules = self._rules
        positive, negative = split_negative(prompt, negative)
        if ":" in positive and (weighted := _NEGATIVE_WEIGHT.findall(positive)):
            negative = negative + "\n" + "\n".join(weighted)

        pos_forms = normalize(positive)
        underage = rules.underage.find(_corrected(rules.typos, pos_forms))
        if not positive.isascii():
            underage += rules.emoji.findall(_EMOJI_JOINERS.sub("", positive))
        lewd = rules.lewd.find(pos_forms)
        if negative and not negative.isspace():
            neg_forms = normalize(negative)
            underage += ["negative:" + h for h in rules.negative_adult.find(neg_forms)]
            lewd += ["negative:" + h for h in rules.negative_lewd.find(neg_forms)]

        custom_hits: list[str] = []
        if extra_terms:
            custom = _custom(tuple(extra_terms))
            if custom is not None:
                custom_hits = custom.find(positive, pos_forms)

        underage_hits, lewd_hits = _unique(underage), _unique(lewd)
        reason: Reason | None = None
        if underage_hits and lewd_hits:
            reason = "csam"
        elif custom_hits:
            reason = "custom"
        return SafetyVerdict(
            blocked=reason is not None,
            reason=reason,
            underage_hits=underage_hits,
            lewd_hits=lewd_hits,
            custom_hits=_unique(custom_hits),
        )
