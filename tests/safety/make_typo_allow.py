"""Propose benign look-alikes for bot/safety/data/typo_allow.txt (a maintainer's tool, not run by the tests).

The filter reads a token one edit away from an underage word of five letters or more (or with letters
doubled) as that word. Real words of the languages people prompt in fall in that neighbourhood too:
``kidney``, ``tonnage`` (teenage), ``even`` (seven), ``merino`` (menino). This script lists every common
word of those languages that the typo index would correct, so that a maintainer can review the list and
paste the benign ones into ``typo_allow.txt``. Words that really mean a child in some language are *not*
allow-listed: they belong in the ``underage_*.txt`` lists instead.

Needs ``wordfreq`` (word frequency lists; a development tool only, not a dependency of the bot):

    python -m venv /tmp/wf && /tmp/wf/bin/pip install wordfreq==3.1.1
    PYTHONPATH=. /tmp/wf/bin/python tests/safety/make_typo_allow.py > /tmp/proposed.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
LANGUAGES = ("en", "de", "fr", "es", "pt", "it", "nl", "pl", "ru", "uk", "tr")
WORDS_PER_LANGUAGE = 80_000
# Neighbours that are themselves words for a child (never allow-listed): French "l'enfant" glued, ...
NOT_BENIGN = frozenset(
    [
        "lenfant", "lenfance", "denfant", "denfants", "lesenfants", "achtjarig", "vierjarig", "adolecente",
        "adolescentie", "babby", "bambins", "chsld", "dziecku", "dziecmi", "dziecinne", "dziewczynce",
        "chlopcu", "devochke", "detki", "ditinka", "ditinki", "ditinku", "ditino", "dityakh", "infantin",
        "infantas", "infantis", "infantiele", "jongentje", "lolli", "meiske", "malchishek", "malish",
        "malych",
        "neonates", "paedophiles", "pedophiles", "pedofiel", "pidlitok", "podstawowa", "podstawowke",
        "podstawowki", "puberta", "puberte", "pubertad", "pubertat", "puberaal", "rebenke", "scolare",
        "secondaria", "toddlers", "uczennicy", "colegiais", "colegiales", "collegiales", "gamines", "enfans",
        "booy", "alittle", "liddle", "litl", "litle", "ragazzone", "ragazzoni", "yong", "yung", "detochka",
        "scholier", "petiot", "ptit", "ptite", "ptits", "ptites", "dziecinna", "dziecinny", "dziecinnych",
        "dziecinnie", "dzieciach", "dzieciatka", "dzieciatko", "dzieciatkiem", "dzieciaczki", "dziecinstwa",
        "dziecinstwie", "dziecinstwo", "dzieckiem", "dzieciom", "achtjarige", "elfjarige", "vierjarige",
        "basisscholen", "kindergartnerin", "kindergartners", "khlopchina", "khlopchaki", "khlopchakiv",
        "khlopchisko", "malishka", "malyutka", "malolitni", "malolitnii", "malolitnikh", "malolitnogo",
        "malolitnoi", "nastoletni", "nastoletnia", "nastoletnich", "nastoletnie", "nastoletniego",
        "nastoletniej", "nastoletnim", "niemowlak", "niemowlaka", "niemowlat", "divchintsi", "divchinoyu",
        "gimnazjalisci", "podrastayushchego", "shkolnykh", "shkilnikh", "infanti", "infantili", "gamine",
        "nacktem", "nackter", "pubere",
    ]
)  # fmt: skip


def inflection(token: str, target: str) -> bool:
    """``token`` looks like a form of ``target`` (``minors``, ``minore``) or a clipped one (``juvenil``)."""
    return (token.startswith(target) and len(token) - len(target) <= 3) or target.startswith(token)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import wordfreq  # type: ignore[import-not-found,unused-ignore]

    from bot.safety import filter as safety_filter
    from bot.safety.normalize import fold, normalize
    from bot.safety.typos import BLANK, TypoIndex

    rules = safety_filter._rules()
    bare = TypoIndex(rules.typos.vocabulary, rules.typos.typo_words, (), prefixes=rules.typos.prefixes)
    seen: dict[str, tuple[str, str]] = {}
    for lang in LANGUAGES:
        for word in wordfreq.top_n_list(lang, WORDS_PER_LANGUAGE):
            for token in fold(word).split():
                if token in seen or not token.isalpha():
                    continue
                target = bare.lookup(token)
                if target is None or target == BLANK or token in NOT_BENIGN or inflection(token, target):
                    continue
                if rules.underage.find(normalize(token)):
                    continue  # already an underage word as it is ("ninas"): never allow-listed
                seen[token] = (target, lang)
    for token, (target, lang) in sorted(seen.items(), key=lambda kv: (kv[1][0], kv[0])):
        print(f"{token:<24} # {lang}, reads {target}")


if __name__ == "__main__":
    main()
