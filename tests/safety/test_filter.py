"""The prompt safety filter: corpora of real-looking prompts, normalisation, custom terms."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.safety import (
    MAX_CUSTOM_TERM_LENGTH,
    PromptFilter,
    SafetyVerdict,
    split_negative,
    validate_custom_term,
)
from bot.safety import filter as safety_filter
from bot.safety.normalize import fold, normalize, tokens

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def load_corpus(name: str) -> list[tuple[str, str, str]]:
    """(id, prompt, negative) per line; the negative prompt follows " ||| "."""
    cases = []
    for number, line in enumerate((HERE / name).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        prompt, _, negative = line.partition(" ||| ")
        cases.append((f"{name}:{number}", prompt, negative))
    return cases


ALLOWED = load_corpus("corpus_allowed.txt")
BLOCKED = load_corpus("corpus_blocked.txt")


@pytest.fixture(scope="module")
def checker() -> PromptFilter:
    f = PromptFilter()
    f.warm_up()
    return f


# --- Corpora -------------------------------------------------------------------------------------------


def test_corpora_are_substantial() -> None:
    assert len(ALLOWED) >= 70
    assert len(BLOCKED) >= 60


@pytest.mark.parametrize(("case", "prompt", "negative"), ALLOWED, ids=[c[0] for c in ALLOWED])
def test_allowed_prompt_passes(checker: PromptFilter, case: str, prompt: str, negative: str) -> None:
    verdict = checker.check(prompt, negative)
    assert not verdict.blocked, f"{case}: {prompt!r} blocked: {verdict}"
    assert verdict.reason is None


@pytest.mark.parametrize(("case", "prompt", "negative"), BLOCKED, ids=[c[0] for c in BLOCKED])
def test_blocked_prompt_is_blocked(checker: PromptFilter, case: str, prompt: str, negative: str) -> None:
    verdict = checker.check(prompt, negative)
    assert verdict.blocked, f"{case}: {prompt!r} allowed: {verdict}"
    assert verdict.reason == "csam"
    assert verdict.underage_hits
    assert verdict.lewd_hits


# --- Verdicts ------------------------------------------------------------------------------------------


def test_verdict_reports_hits(checker: PromptFilter) -> None:
    verdict = checker.check("a l0l1, nude, on a beach")
    assert verdict == SafetyVerdict(
        blocked=True, reason="csam", underage_hits=("l0l1",), lewd_hits=("nude",), custom_hits=()
    )
    assert not verdict.allowed


def test_one_context_alone_is_not_blocked(checker: PromptFilter) -> None:
    underage_only = checker.check("a child flying a kite")
    assert not underage_only.blocked
    assert underage_only.underage_hits == ("child",)
    assert underage_only.lewd_hits == ()
    lewd_only = checker.check("nude woman, oil painting")
    assert not lewd_only.blocked
    assert lewd_only.lewd_hits == ("nude",)


def test_empty_prompt(checker: PromptFilter) -> None:
    assert checker.check("") == SafetyVerdict(blocked=False)
    assert checker.check("   ", "  ") == SafetyVerdict(blocked=False)


def test_horde_negative_separator_is_split(checker: PromptFilter) -> None:
    # The negative part of "positive ### negative" is a negative prompt: underage words there are fine...
    assert not checker.check("nude woman ### child, loli, teen").blocked
    # ...adult words there pull towards children.
    verdict = checker.check("nsfw girl ### old, mature, adult")
    assert verdict.blocked
    assert verdict.underage_hits == ("negative:old", "negative:mature", "negative:adult")
    # Only the first ### splits (the rest is all negative); the explicit negative argument is added to it.
    assert checker.check("nsfw girl ### blurry ### adult").blocked
    assert checker.check("nsfw girl ### blurry", "adult").blocked


def test_split_negative() -> None:
    assert split_negative("a ### b ### c") == ("a ", " b ### c")
    assert split_negative("a ### b", "c") == ("a ", " b\nc")
    assert split_negative("a", "c") == ("a", "c")


def test_clothing_in_negative_is_a_lewd_context(checker: PromptFilter) -> None:
    verdict = checker.check("a kid at the beach", "clothes, swimsuit")
    assert verdict.blocked
    assert verdict.lewd_hits == ("negative:clothes",)
    assert not checker.check("a woman at the beach", "clothes").blocked


def test_negative_weight_in_positive_counts_as_negative(checker: PromptFilter) -> None:
    assert checker.check("(adult:-1.5), nsfw girl").blocked
    assert not checker.check("(adult:1.5), nsfw girl").blocked


def test_ages(checker: PromptFilter) -> None:
    for age in ("9yo", "9 yo", "12 y/o", "12-year-old", "17 years old", "aged 12", "twelve year old", "12歳"):
        assert checker.check(f"nude, {age}").blocked, age
    for age in ("18yo", "19 years old", "25-year-old", "100 years old", "twenty years old"):
        assert not checker.check(f"nude, {age}").blocked, age


def test_guards_keep_innocent_phrases(checker: PromptFilter) -> None:
    assert not checker.check("nude woman, minor imperfections").blocked
    assert not checker.check("nude woman, baby oil").blocked
    assert not checker.check("a kid eating chicken breast").blocked
    assert not checker.check("a sexy pin-up woman with a lollipop, lolipop").blocked
    assert checker.check("a kid, bare breast").blocked
    assert checker.check("minor, nude").blocked


def test_check_is_deterministic_and_cached_compile(checker: PromptFilter) -> None:
    first = checker.check("l o l i, n u d e")
    assert PromptFilter().check("l o l i, n u d e") == first


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "prompt",
    [
        "1" * 5000,
        "l1" * 2500,
        "a b " * 1250,
        "ab cd " * 800,
        "t" + "e" * 5000 + "n",
        "lil " * 1200,
        "l.o." * 1200,
        "12 " * 1600,
        "сhild " * 800,
        "裸の子供" * 1200,
    ],
    ids=lambda p: repr(p[:12]),
)
def test_pathological_prompts_stay_fast(checker: PromptFilter, prompt: str) -> None:
    # Possessive repeats and capped fragment gluing keep every check roughly linear; a backtracking blow-up
    # would hang here until the timeout.
    for _ in range(3):
        checker.check(prompt, prompt, extra_terms=["clown", r"re:\bgore\b"])


# --- Custom terms --------------------------------------------------------------------------------------


def test_custom_plain_term_blocks_on_its_own(checker: PromptFilter) -> None:
    verdict = checker.check("a photo of a clown", extra_terms=["clown"])
    assert verdict == SafetyVerdict(blocked=True, reason="custom", custom_hits=("clown",))
    # Normalised like the built-in lists: case, leet, plurals, accents, spacing.
    assert checker.check("CL0WNS at the circus", extra_terms=["clown"]).blocked
    assert checker.check("c l o w n", extra_terms=["clown"]).blocked
    assert checker.check("a clówn", extra_terms=["clown"]).blocked
    # Whole words only.
    assert not checker.check("clownfish in a reef", extra_terms=["clown"]).blocked


def test_custom_phrase_and_regex(checker: PromptFilter) -> None:
    assert checker.check("a red   dragon", extra_terms=["red dragon"]).blocked
    assert not checker.check("a red and black dragon", extra_terms=["red dragon"]).blocked
    verdict = checker.check("Trump as a clown", extra_terms=[r"re:\btrump\b"])
    assert verdict.reason == "custom"
    assert verdict.custom_hits == ("Trump",)
    assert not checker.check("a trumpet", extra_terms=[r"re:\btrump\b"]).blocked


def test_custom_terms_apply_to_the_positive_prompt_only(checker: PromptFilter) -> None:
    assert not checker.check("a landscape", "gore", extra_terms=["gore"]).blocked
    assert not checker.check("a landscape ### gore", extra_terms=["gore"]).blocked


def test_custom_terms_never_unblock(checker: PromptFilter) -> None:
    verdict = checker.check("loli, nude", extra_terms=["nude"])
    assert verdict.blocked
    assert verdict.reason == "csam"
    assert verdict.custom_hits == ("nude",)


def test_invalid_custom_terms_are_ignored(checker: PromptFilter) -> None:
    prompt = "a" * 40 + "!"
    assert not checker.check(prompt, extra_terms=["re:(a+)+$", "re:(", ""]).blocked


@pytest.mark.parametrize(
    "term",
    ["clown", "red dragon", "Ölgemälde", "re:\\btrump\\b", "re:gore|guts", "re:(?:blood)+", "re:\\w+ing\\b"],
)
def test_validate_accepts(term: str) -> None:
    assert validate_custom_term(term) is None


@pytest.mark.parametrize(
    ("term", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * (MAX_CUSTOM_TERM_LENGTH + 1), "longer than"),
        ("a", "two letters"),
        ("!!", "two letters"),
        ("re:", "empty"),
        ("re:(", "invalid"),
        ("re:(a+)+", "repeated group"),
        ("re:(a|ab)*c", "repeated group"),
        ("re:(?:\\w+\\s?)*$", "repeated group"),
        ("re:(a*)*", "repeated group"),
        ("re:.*a.*b.*c.*d", "unbounded"),
        ("re:(a)\\1", "back-references"),
        ("re:(?P<x>a)(?P=x)", "back-references"),
        ("re:a*", "empty text"),
        ("re:\\b", "empty text"),
        ("re:cat|", "empty text"),
    ],
)
def test_validate_rejects(term: str, message: str) -> None:
    error = validate_custom_term(term)
    assert error is not None
    assert message in error


# --- Normalisation -------------------------------------------------------------------------------------


def test_fold_is_the_canonical_spelling() -> None:
    assert fold("Little  GIRL") == "little girl"
    assert fold("pre-teen") == "pre teen"
    assert fold("Mädchen") == "madchen"
    assert fold("niña") == "nina"
    assert fold("голая") == "golaya"
    assert fold("ребёнок") == "rebenok"
    assert fold("xxxx") == "xx"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ｌｏｌｉ　ｎｕｄｅ", ["loli", "nude"]),  # fullwidth
        ("𝐥𝐨𝐥𝐢 𝖓𝖚𝖉𝖊", ["loli", "nude"]),  # mathematical alphanumerics
        ("ⓛⓞⓛⓘ", ["loli"]),  # circled
        ("🇱🇴🇱🇮", ["loli"]),  # regional indicators
        ("ɴᴜᴅᴇ", ["nude"]),  # small capitals
        ("lo\u200bli ch\u00adild", ["loli", "child"]),  # zero-width space, soft hyphen
        ("n̶u̶d̶e̶ c\u0301hild", ["nude", "child"]),  # combining marks
        ("Nüde Chïld Ça", ["nude", "child", "ca"]),  # accents
        ("κid", ["kid"]),  # Greek kappa
        ("👧 🔞", ["child", "nsfw"]),  # emoji
        ("$exy l!ttle 13yo wow!", ["$exy", "l!ttle", "13yo", "wow"]),  # leet left to the matcher
        ("(nude:1.2), class ic", ["nude", "1", "2", "class", "ic"]),  # ordinary spaces stay
    ],
)
def test_tokens(text: str, expected: list[str]) -> None:
    assert tokens(text) == expected


def test_cyrillic_gives_look_alike_and_transliterated_readings() -> None:
    mixed = normalize("lоli")  # Cyrillic о
    assert [f.tokens for f in mixed] == [["loli"], ["loli"]]
    russian = normalize("голая девочка")
    assert russian[1].tokens == ["golaya", "devochka"]
    homoglyphs = normalize("сhild")  # Cyrillic с reads "c" as a look-alike, "s" when transliterated
    assert [f.tokens for f in homoglyphs] == [["child"], ["shild"]]


def test_evasion_tokens_are_rebuilt() -> None:
    (form,) = normalize("l.o.l.i, n u d e, lo-li, lo li, 12-year-old, (x:1.25)")
    base, _, extra = form.words.partition("\n")
    assert base.split() == [*"lolinude", "lo", "li", "lo", "li", "12", "year", "old", "x", "1", "25"]
    assert {"loli", "nude", "12yearold"} <= set(extra.split())
    assert "125" not in extra.split()  # a weight is not glued into a number
    assert form.spaced == ("lolinude",)
    (plain,) = normalize("a cat, on a mat")
    assert "\n" not in plain.words


def test_underscores_split_words() -> None:
    assert tokens("nude_child") == ["nude", "child"]


# --- Word lists and loading ----------------------------------------------------------------------------


def test_word_lists_load(checker: PromptFilter) -> None:
    sizes = checker.warm_up()
    assert set(sizes) == {"underage", "lewd", "negative_adult", "negative_lewd"}
    assert sizes["underage"] > 300
    assert sizes["lewd"] > 300
    data = ROOT / "bot" / "safety" / "data"
    for lang in ("en", "es", "pt", "fr", "de", "it", "ru", "ja"):
        assert (data / f"underage_{lang}.txt").is_file()
        assert (data / f"lewd_{lang}.txt").is_file()


def test_import_does_no_io() -> None:
    code = (
        "import bot.safety, bot.safety.filter as f, bot.safety.normalize as n; "
        "print(f._rules.cache_info().currsize, n.fold.cache_info().currsize)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["0", "0"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("re:(a)", "capturing"),
        ("re:(", "bad regex"),
        ("little girl | ^big", "single-word"),
        ("{a|b} c | ^d", "single-word"),
        ("*porn* | !x", "no guards"),
        ("kid | ?x", "guard"),
        ("!!!", "no letters"),
    ],
)
def test_bad_word_list_lines_are_reported(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        safety_filter._parse_line(line, "test.txt:1")


def test_word_list_line_syntax() -> None:
    entries = safety_filter._parse_line("{a|b}c{d|e}* | !x ^y_z", "t:1")
    assert [(e.kind, e.value) for e in entries] == [("prefix", v) for v in ("acd", "ace", "bcd", "bce")]
    assert entries[0].not_before == ("x",)
    assert entries[0].not_after == ("y z",)
    assert safety_filter._parse_line("# comment", "t:2") == []


def test_leetify_regex_leaves_syntax_alone() -> None:
    leet = safety_filter._leetify_regex
    assert leet("a") == "[a4@]"
    assert leet(r"\s[a-z]{1,2}(?:b)(?!c)(?<=d)(?P<name>e)(?P=name)(?i:x)") == (
        r"\s[a-z]{1,2}(?:[b8])(?!c)(?<=d)(?P<name>[e3€])(?P=name)(?i:x)"
    )
