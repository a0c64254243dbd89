"""Typo tolerance for the underage vocabulary: one edit away, or with letters doubled, a word still reads.

Most of the misspelled prompts that got past the word lists were one keystroke off a listed word (``chld``,
``cihld``, ``todler``) or had letters doubled (``kidd``, ``kkidd``). A :class:`TypoIndex` maps such tokens
back to the word they imitate, so the filter's ordinary patterns (guards, phrases, ages) then apply to the
corrected text: ``litle girl`` reads ``little girl``, ``minro key`` reads ``minor key`` (spared by its guard).

* **Doubled letters** collapse: a token matches a word when both have the same letters once runs are cut to
  one, and every run in the token is at least as long as in the word (``kkidd`` → ``kid``, ``teeen`` →
  ``teen``, while ``ten`` never reads ``teen``). This applies to words of any length.
* **One edit** (a letter dropped, inserted or substituted, or two adjacent letters swapped) applies to words
  of five letters or more, compared with doubled letters collapsed. Short words (``kid``, ``teen``, ``loli``)
  stay exact (with their leet stand-ins, which the filter's patterns carry).
* **Benign look-alikes** (``kidney``, ``kindle``, ``childe``, ``chile``...) are listed in
  ``data/typo_allow.txt``; such a token is never corrected, and one that holds a term matched inside words
  is hidden from the underage patterns (so ``childe`` does not match ``*child*``).

Lookups never compare a token with the whole vocabulary: the index built here holds, for every word, the word
and each string one deletion away from it (a "symmetric deletion" index). A token is looked up by itself and
its own deletions, a handful of dict probes, and only the few candidates found get the exact one-edit check.
Results are cached per token, since prompts repeat the same words ("masterpiece", "best quality").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["BLANK", "TypoIndex", "collapse", "within_one_edit"]

#: What an allow-listed look-alike is replaced by in the text the underage patterns see (matches nothing).
BLANK = "~"
#: Typo tolerance starts at this many letters (the word as listed, before collapsing doubled letters).
MIN_TYPO_LENGTH = 5

_RUNS = re.compile(r"(.)\1+")
_LETTERS = re.compile("[a-z]+")
_HAS_LETTER = re.compile("[a-z]")
# Leet stand-ins read as letters, for tokens that mix them in ("chl1d"). "1" is read as "i" (and as "l").
_LEET_I = str.maketrans({"4": "a", "@": "a", "8": "b", "3": "e", "€": "e", "9": "g", "1": "i", "!": "i",
                         "0": "o", "5": "s", "$": "s", "7": "t"})  # fmt: skip
_LEET_L = str.maketrans({"1": "l"})


def collapse(word: str) -> str:
    """``word`` with every run of one letter cut to a single letter: ``kkidd`` → ``kid``."""
    return _RUNS.sub(r"\1", word)


def _run_lengths(word: str) -> tuple[int, ...]:
    return tuple(len(m.group(0)) for m in re.finditer(r"(.)\1*", word))


def within_one_edit(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ by at most one insertion, deletion, substitution or adjacent swap."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la > lb:
        a, b, la, lb = b, a, lb, la
    i = 0
    while i < la and a[i] == b[i]:
        i += 1
    if la < lb:  # one letter inserted into b
        return a[i:] == b[i + 1 :]
    if a[i + 1 :] == b[i + 1 :]:  # one letter substituted
        return True
    return i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class TypoIndex:
    """Maps misspelled tokens to the vocabulary word they imitate (see the module docstring).

    ``vocabulary`` holds plain lower-case ASCII words (doubled letters are collapsed back to any of them);
    ``typo_words`` the ones that are underage terms on their own, which also match one edit away when they
    have five letters or more (words that only occur inside phrases, like "little" or "seven", don't: their
    one-edit neighbours are mostly ordinary words); ``allowed`` the benign look-alikes. Built once, when the
    filter's word lists are compiled; :meth:`lookup` is cached.
    """

    def __init__(
        self,
        vocabulary: Iterable[str],
        typo_words: Iterable[str],
        allowed: Iterable[str],
        infixes: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        standalone: Iterable[str] = (),
        cache_size: int = 65536,
    ) -> None:
        words = {w for w in vocabulary if w.isascii() and w.isalpha()}
        typo = {w for w in typo_words if w.isascii() and w.isalpha()}
        self.vocabulary = frozenset(words | typo)
        self.typo_words = frozenset(typo)
        # Words that are terms on their own win a tie over phrase words: "mnor" reads "minor", not "menor".
        self._standalone = frozenset(standalone)
        # Doubled letters collapse back to the terms, and to the longer words of phrases ("littttle");
        # not to short phrase words, where it would mostly turn ordinary words into others ("soon" → "son").
        words = typo | {w for w in words if len(w) >= MIN_TYPO_LENGTH}
        self.allowed = frozenset(w for w in allowed if w not in self.vocabulary)
        # Look-alikes that contain a *term* matched inside words ("childe" holds "child") are hidden from the
        # patterns; the others stay in the text, where guards may need them ("3 years later").
        inside = tuple(infixes)
        self._hidden = frozenset(w for w in self.allowed if any(i in w for i in inside))
        # collapsed word -> [(word, run lengths)] for the doubled-letter rule
        self._collapsed: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
        # a word's spelling (as listed, and collapsed) and its one-deletion strings -> spellings (typo rule)
        self._deletes: dict[str, set[str]] = {}
        # spelling -> the word to report (the shortest listed word with that spelling)
        self._typo_target: dict[str, str] = {}
        for word in sorted(words, key=lambda w: (len(w), w)):
            c = collapse(word)
            self._collapsed.setdefault(c, []).append((word, _run_lengths(word)))
        for word in sorted(typo, key=lambda w: (len(w), w)):
            if len(word) < MIN_TYPO_LENGTH:
                continue
            # Both spellings: "preeen" is one edit from "preteen", "teenger" one from "tenager" (collapsed).
            for spelling in {word, collapse(word)}:
                if len(spelling) >= MIN_TYPO_LENGTH:
                    self._typo_target.setdefault(spelling, word)
                    for key in (spelling, *_deletions(spelling)):
                        self._deletes.setdefault(key, set()).add(spelling)
        # Word starts ("minderjahrig*", "kindergarten*") of 6+ letters: a token that starts one edit away
        # from one ("Minderjähige", "kindergartneer") is rewritten to start with it. Found by the three-letter
        # pieces of their first six letters: one edit leaves at least one of those pieces intact.
        self.prefixes = tuple(sorted({p for p in prefixes if p.isascii() and p.isalpha() and len(p) >= 6}))
        self._prefixes: dict[str, set[str]] = {}
        for stem in self.prefixes:
            for i in range(4):
                self._prefixes.setdefault(stem[i : i + 3], set()).add(stem)
        lengths = [len(s) for s in self._typo_target] or [0]
        self._min_form, self._max_form = min(lengths) - 1, max(lengths) + 1
        self._max_length = max((len(w) for w in self.vocabulary), default=0) + 2
        self.lookup = lru_cache(maxsize=cache_size)(self._lookup)

    def __len__(self) -> int:
        return len(self.vocabulary)

    def _lookup(self, token: str) -> str | None:
        """The vocabulary word ``token`` imitates, :data:`BLANK` for a benign look-alike, or ``None``."""
        if token in self.vocabulary or len(token) < 3 or not token.isascii():
            return None
        if token in self.allowed:
            return BLANK if token in self._hidden else None
        if token.isalpha():
            variants: tuple[str, ...] = (token,)
        else:
            if not _HAS_LETTER.search(token):
                return None
            read = token.translate(_LEET_I)
            variants = (read, token.translate(_LEET_L).translate(_LEET_I)) if "1" in token else (read,)
            variants = tuple(v for v in variants if v.isalpha())
        for variant in variants:
            if variant in self.vocabulary:  # leet for a listed word: the patterns match it as typed
                return None
            found = self._match(variant)
            if found is not None:
                return found
        return None

    def _match(self, word: str) -> str | None:
        found = self._match_word(word) if len(word) <= self._max_length else None
        if found is None and len(word) >= MIN_TYPO_LENGTH + 1:
            found = self._match_prefix(word)
        return found

    def _match_prefix(self, word: str) -> str | None:
        stems: set[str] = set()
        for i in range(5):
            if found := self._prefixes.get(word[i : i + 3]):
                stems |= found
        if any(word.startswith(stem) for stem in stems):
            return None  # the patterns match it as typed
        for stem in sorted(stems):
            n = len(stem)
            for cut in (n, n - 1, n + 1):
                if cut <= len(word) and within_one_edit(word[:cut], stem):
                    return stem + word[cut:]
        return None

    def _match_word(self, word: str) -> str | None:
        stems = [word]
        if word.endswith("s") and len(word) > 3:  # a plural of a misspelled word: "chlids", "kkidss"
            stems.append(word.rstrip("s"))
            if word.endswith("es") and len(word) > 4:
                stems.append(word.rstrip("s")[:-1])
        for stem in stems:
            cs = collapse(stem)
            if cs != stem:  # doubled letters: every run at least as long as the word's own
                runs = _run_lengths(stem)
                for listed, listed_runs in self._collapsed.get(cs, ()):
                    if all(r >= lr for r, lr in zip(runs, listed_runs, strict=True)):
                        return listed
            elif stem != word and stem in self.vocabulary:
                return stem
            candidates: set[str] = set()
            for form in (stem,) if cs == stem else (stem, cs):
                if not self._min_form <= len(form) <= self._max_form:
                    continue
                deletes = self._deletes
                if found := deletes.get(form):
                    candidates |= found
                for i in range(len(form)):
                    if found := deletes.get(form[:i] + form[i + 1 :]):
                        candidates |= found
            if not candidates:
                continue
            # Terms first, then the closest length: "pettie" reads "petite" (a swap), not "petit" (added e).
            ranked = sorted(
                candidates,
                key=lambda c: (self._typo_target[c] not in self._standalone, abs(len(c) - len(stem)), c),
            )
            for candidate in ranked:
                if within_one_edit(stem, candidate) or within_one_edit(cs, candidate):
                    return self._typo_target[candidate]
        return None

    def rewrite(self, words: str) -> str | None:
        """``words`` (space-separated tokens) with misspellings corrected; ``None`` when nothing changes."""
        changes: dict[str, str] = {}
        for token in set(words.split()):
            if (fixed := self.lookup(token)) is not None and fixed != token:
                changes[token] = fixed
        if not changes:
            return None
        return " ".join(changes.get(t, t) for t in words.split(" "))


def vocabulary_words(text: str) -> list[str]:
    """The plain letter words inside a folded term or phrase (``little girl`` → ``little``, ``girl``)."""
    return _LETTERS.findall(text)
