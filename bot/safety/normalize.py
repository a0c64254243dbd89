"""Text normalisation for the prompt safety filter.

Everything here is pure and fast: a handful of ``str.translate`` calls and C-level regex passes, no
per-character Python loops. Word lists are matched against the output of :func:`normalize`, and every
data-file term goes through :func:`fold` (the same pipeline), so both sides always agree on spelling.

The pipeline, for text that is not plain ASCII:

1. NFKC (fullwidth ``ｌｏｌｉ``, mathematical ``𝐥𝐨𝐥𝐢``, circled ``ⓛⓞⓛⓘ``, superscripts, ligatures);
2. delete invisible format characters (zero-width spaces and joiners, soft hyphens, bidi controls, tags…);
3. map enclosed/regional-indicator letters to ASCII and a few emoji to words (``👧`` → ``child``);
4. casefold, then strip Latin/Cyrillic/Greek diacritics (``nüde`` → ``nude``, ``niña`` → ``nina``);
5. map look-alike letters (Cyrillic, Greek, small capitals, ``ł``, ``ø``…) to ASCII. When the text contains
   Cyrillic it yields *two* variants: one reading Cyrillic as look-alikes (``сhild`` with a Cyrillic ``с`` →
   ``child``) and one transliterating it (``голая`` → ``golaya``); both are scanned.

Then the text is tokenised. Leetspeak is *not* rewritten here (``13yo`` must keep its digits); instead the
filter compiles each letter of a term as a class of its stand-ins (:data:`LEET_EQUIVALENTS`), so ``l0l1``
matches ``loli`` while ``12 year old`` is still a number.

A :class:`Form` holds:

* ``words``: the tokens joined by single spaces, framed by spaces (`` loli nude ``). After a ``\\n`` come
  extra tokens rebuilt from evasions: words split by inner punctuation glued back (``l.o.l.i``, ``lo-li``,
  ``12-year-old`` → ``loli``, ``loli``, ``12yearold``), runs of three or more single characters joined
  (``l o l i`` → ``loli``) and runs of one- or two-character fragments joined (``lo li`` → ``loli``).
  Repeated letters are left alone: the filter lets each letter of a term repeat, so ``nuuude`` reads
  ``nude`` while ``ten`` never reads ``teen``.
* ``spaced``: just the joined single-character runs, which the filter also scans for terms *inside* them
  (``n u d e c h i l d`` → ``nudechild``).

Word boundaries stay meaningful: ordinary spaces are never removed, so ``class ic`` stays two words; only
runs of single characters (``l o l i``) are joined.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["LEET_EQUIVALENTS", "Form", "fold", "leet_folds", "normalize", "tokens"]

#: For each letter, the characters that may stand in for it in leetspeak (the letter itself first).
#: The filter compiles a term's letter ``a`` as ``[a4@]``; the text keeps its digits.
LEET_EQUIVALENTS: dict[str, str] = {
    "a": "a4@",
    "b": "b8",
    "e": "e3€",
    "g": "g9",
    "i": "i1!",
    "l": "l1",
    "o": "o0",
    "s": "s5$",
    "t": "t7",
}

# The same stand-ins as translation tables, for substring checks: "1" reads "i" in one, "l" in the other.
_LEET_READINGS = {c: k for k, v in LEET_EQUIVALENTS.items() for c in v[1:] if k != "l"}
_LEET_TO_I = str.maketrans(_LEET_READINGS)
_LEET_TO_L = str.maketrans({**_LEET_READINGS, "1": "l"})

# Invisible "format" characters used to split words without showing it: soft hyphen, combining grapheme
# joiner, Arabic letter mark, Hangul fillers, Mongolian/Khmer invisibles, zero-width space/joiners, LRM/RLM,
# bidi embeddings and isolates, word joiner and invisible operators, variation selectors, BOM, tag characters.
_FORMAT_CHARS = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e0fff]"
)
# Combining diacritics (Latin, Cyrillic, Greek, symbols). Kana voicing marks (U+3099/309A) are kept.
_COMBINING = re.compile("[\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_CYRILLIC = re.compile("[\u0400-\u052f]")
# Between CJK/kana/hangul and Latin letters or digits, insert a space so "12歳の" tokenises as "12 歳の".
_CJK_BOUNDARY = re.compile(
    "(?<=[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af])(?=[0-9a-z])"
    "|(?<=[0-9a-z])(?=[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af])"
)

# Token characters: letters, digits and $@€. The underscore is turned into "-" first (it is inside \\w).
_WORD_CHAR = r"[\w$@€]"
# A token: letters/digits/$@€, with "!" allowed *inside* (l!ttle) but not at the edges (wow!).
_TOKEN = re.compile(rf"{_WORD_CHAR}+(?:!+{_WORD_CHAR}+)*")
# Punctuation that glues pieces of one word together in evasions: l.o.l.i, lo-li, l_o_l_i, l*o*l*i, lo/li.
_INNER_SEP_SRC = r"[-.'’*~^/\\|·•]"
# Possessive repeats and a word-start lookbehind keep this linear.
_COMPOUND = re.compile(rf"(?<!{_WORD_CHAR}){_WORD_CHAR}++(?:{_INNER_SEP_SRC}+{_WORD_CHAR}++)+")
_HAS_INNER_SEP = re.compile(rf"{_WORD_CHAR}{_INNER_SEP_SRC}+{_WORD_CHAR}")
_NUMERIC = re.compile(r"[\d.,:/\-]+")
# Three or more single-character tokens in a row (in the space-joined token string).
_SPACED_RUN = re.compile(r"(?<= )[^ \n](?: [^ \n]){2,}(?= )")
# Two or more tokens of one or two characters making four or more ("lo li", "nu de").
_SHORT_RUN = re.compile(r"(?<= )[^ \n]{1,2}(?: [^ \n]{1,2})+(?= )")
_MAX_GLUED_RUN = 16
# Three or more of the same letter (cut to two in word-list terms).
_LETTER_RUN3 = re.compile(r"([^\W\d_])\1\1+")


def _table(mapping: dict[str, str]) -> dict[int, str]:
    return {ord(k): v for k, v in mapping.items()}


# --- Step 3: enclosed letters and emoji ---------------------------------------------------------------
_PRE: dict[str, str] = {}
for _i in range(26):
    _letter = chr(ord("a") + _i)
    _PRE[chr(0x1F1E6 + _i)] = _letter  # regional indicators 🇦..🇿 (rendered as flags in pairs)
    _PRE[chr(0x1F150 + _i)] = _letter  # negative circled 🅐..🅩
    _PRE[chr(0x1F170 + _i)] = _letter  # negative squared 🅰..🆉
    _PRE[chr(0x1F110 + _i)] = _letter  # parenthesised 🄐..🄩 (NFKC already covers most)
# A few emoji read as words, so that they also take part in phrases and show in tokens. (The filter matches
# every emoji the AI Horde treats as a child context, with skin tones and family sequences, from
# data/minor_emoji.txt.) The "no one under 18" sign reads as explicit content.
for _emoji in ("👧", "👦", "🧒", "🚸"):
    _PRE[_emoji] = " child "
for _emoji in ("👶", "🍼", "🚼"):
    _PRE[_emoji] = " baby "
_PRE["🔞"] = " nsfw "
# Other scripts' digits → ASCII, so ages written with them still read as numbers.
for _base in (0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50):
    for _d in range(10):
        _PRE[chr(_base + _d)] = str(_d)
_PRE_TABLE = _table(_PRE)

# --- Step 5: look-alikes -----------------------------------------------------------------------------
# Applied after casefold, so only lower-case forms are needed.
_LATINISH: dict[str, str] = {
    # Latin letters without a decomposition
    "ı": "i", "ȷ": "j", "ł": "l", "ŀ": "l", "ƚ": "l", "ø": "o", "đ": "d", "ð": "d", "ħ": "h", "ŧ": "t",
    "þ": "th", "æ": "ae", "œ": "oe", "ĳ": "ij", "ſ": "s", "ß": "ss", "ɑ": "a", "ɡ": "g", "ɩ": "i",
    "ƅ": "b", "ɓ": "b", "ƈ": "c", "ɗ": "d", "ƒ": "f", "ɠ": "g", "ɦ": "h", "ɨ": "i", "ʝ": "j", "ƙ": "k",
    "ɱ": "m", "ɲ": "n", "ƞ": "n", "ɵ": "o", "ƥ": "p", "ʠ": "q", "ɽ": "r", "ʂ": "s", "ƭ": "t", "ʋ": "v",
    "ⱳ": "w", "ƴ": "y", "ȥ": "z", "ʐ": "z",
    # small capitals
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
    "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u",
    "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
    # Greek look-alikes (the filter has no Greek word lists: Greek letters only ever disguise Latin ones)
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "ζ": "z", "η": "n", "θ": "o", "ι": "i", "κ": "k",
    "λ": "l", "μ": "u", "ν": "v", "ο": "o", "π": "n", "ρ": "p", "σ": "o", "ς": "c", "τ": "t", "υ": "u",
    "φ": "o", "χ": "x", "ψ": "w", "ω": "w", "ϲ": "c", "ϳ": "j", "ϐ": "b", "ϵ": "e", "ϱ": "p",
    # Armenian, Cherokee and other common homoglyphs
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g", "ք": "p", "զ": "q", "ա": "w", "ᏼ": "b", "ꮪ": "s",
    "ꭰ": "a", "ꮃ": "w",
}  # fmt: skip
# Cyrillic read as the Latin letters it imitates (for mixed-script disguises like "lоli").
_CYR_CONFUSABLE: dict[str, str] = {
    "а": "a", "б": "b", "в": "b", "г": "r", "д": "d", "е": "e", "ё": "e", "ж": "x", "з": "3", "и": "u",
    "й": "u", "к": "k", "л": "n", "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t",
    "у": "y", "ф": "o", "х": "x", "ц": "u", "ч": "4", "ш": "w", "щ": "w", "ъ": "b", "ы": "bi", "ь": "b",
    "э": "e", "ю": "io", "я": "r", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "һ": "h", "ү": "y", "ӏ": "l", "є": "e", "ґ": "r", "ѵ": "v", "ѡ": "w", "ҫ": "c", "ӽ": "x",
}  # fmt: skip
# Cyrillic transliterated (roughly BGN/PCGN, as Russian speakers type it).
_CYR_TRANSLIT: dict[str, str] = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i",
    "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y",
    "ь": "", "э": "e", "ю": "yu", "я": "ya", "і": "i", "ї": "i", "є": "e", "ґ": "g", "ѕ": "s", "ј": "j",
    "ў": "u", "ђ": "dj", "ћ": "c", "љ": "lj", "њ": "nj", "џ": "dz",
}  # fmt: skip
_CONFUSABLE_TABLE = _table({**_CYR_CONFUSABLE, **_LATINISH})
_TRANSLIT_TABLE = _table({**_CYR_TRANSLIT, **_LATINISH})


@dataclass(frozen=True, slots=True)
class Form:
    """One normalised reading of a text (see the module docstring)."""

    words: str
    spaced: tuple[str, ...]

    @property
    def tokens(self) -> list[str]:
        """The tokens of ``words``, evasion-rebuilt tokens included."""
        return self.words.split()


def _unicode_variants(text: str) -> list[str]:
    """Steps 1-5 for non-ASCII text: one or two lower-case strings, mostly ASCII."""
    s = unicodedata.normalize("NFKC", text)
    s = _FORMAT_CHARS.sub("", s)
    s = s.translate(_PRE_TABLE).casefold()
    s = _COMBINING.sub("", unicodedata.normalize("NFD", s))
    s = unicodedata.normalize("NFC", s)
    if _CYRILLIC.search(s):
        variants = [s.translate(_CONFUSABLE_TABLE), s.translate(_TRANSLIT_TABLE)]
    else:
        variants = [s.translate(_CONFUSABLE_TABLE)]
    return [_CJK_BOUNDARY.sub(" ", v) for v in variants]


def _glued_fragments(parts: list[str], skip: tuple[str, ...]) -> list[str]:
    """Every glued sub-run of 2 to 6 short fragments, 4+ characters long: "a lo li" → "aloli", "loli"."""
    glued: list[str] = []
    for i in range(len(parts) - 1):
        for j in range(i + 2, min(i + 6, len(parts)) + 1):
            g = "".join(parts[i:j])
            if len(g) >= 4 and g not in skip:
                glued.append(g)
    return glued


def _form(s: str) -> Form:
    if "_" in s:
        s = s.replace("_", "-")
    base = " " + " ".join(_TOKEN.findall(s)) + " "
    extra: list[str] = []
    if _HAS_INNER_SEP.search(s):
        # Glue the pieces back; skip pure numbers ("1.2" in "(nude:1.2)" is a weight, not "12").
        extra.extend(
            "".join(_TOKEN.findall(chunk)) for chunk in _COMPOUND.findall(s) if not _NUMERIC.fullmatch(chunk)
        )
    spaced = tuple(run.replace(" ", "") for run in _SPACED_RUN.findall(base))
    extra.extend(spaced)
    for run in _SHORT_RUN.findall(base):
        parts = run.split(" ")
        if len(parts) <= _MAX_GLUED_RUN:  # longer runs are noise; runs of single letters are in ``spaced``
            extra.extend(_glued_fragments(parts, spaced))
    words = base + "\n " + " ".join(extra) + " " if extra else base
    return Form(words=words, spaced=spaced)


def normalize(text: str) -> tuple[Form, ...]:
    """Normalise ``text`` into one form, or two when it contains Cyrillic (look-alike and transliterated)."""
    if text.isascii():
        return (_form(text.lower()),)
    return tuple(_form(v) for v in _unicode_variants(text))


@lru_cache(maxsize=4096)
def fold(text: str) -> str:
    """The canonical spelling of a word-list term: its tokens joined by single spaces.

    Cyrillic is transliterated (``голая`` → ``golaya``); no leet mapping is applied (the filter's patterns
    carry the leet classes). Inner punctuation splits words (``pre-teen`` → ``pre teen``).
    """
    s = text.lower() if text.isascii() else _unicode_variants(text)[-1]
    return _LETTER_RUN3.sub(r"\1\1", " ".join(_TOKEN.findall(s)))


def leet_folds(text: str) -> tuple[str, ...]:
    """``text`` with leet stand-ins read as letters: one string, or two when a ``1`` may be ``i`` or ``l``."""
    if "1" in text:
        return text.translate(_LEET_TO_I), text.translate(_LEET_TO_L)
    return (text.translate(_LEET_TO_I),)


def tokens(text: str) -> list[str]:
    """The plain tokens of ``text`` (first variant, without evasion-rebuilt tokens); handy for debugging."""
    return normalize(text)[0].words.split("\n", 1)[0].split()
