"""Benchmark the prompt safety filter: accuracy on the test corpora and time per check.

Run from the repository root: ``python bench/safety_filter.py [--checks N]``. Prints figures; asserts nothing.
The last line is one JSON object: ``blocked_recall`` and ``false_positive_rate`` over every corpus in
tests/safety (hand-written and generated), ``checks_per_second`` over the timed mix, and ``p99_ms`` for a
1,000-character prompt (distinct prompts, each checked once, as the bot sees them). Both are CPU time of
this thread, so that other processes on a shared machine don't count; wall-clock figures are printed too.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT / "tests" / "safety"

# Longer prompts in the style people actually send to the Horde, for the timing mix.
LONG_PROMPTS = [
    (
        "masterpiece, best quality, ultra-detailed, 8k, photorealistic, a beautiful woman standing in a "
        "field of flowers at sunset, long flowing hair, detailed eyes, soft lighting, bokeh, cinematic, "
        "trending on artstation ### lowres, bad anatomy, bad hands, text, error, missing fingers, "
        "extra digit, fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, "
        "signature, watermark",
        "",
    ),
    (
        "(masterpiece:1.2), (best quality:1.1), 1girl, solo, long hair, looking at viewer, smile, school "
        "uniform, cherry blossoms, outdoors, depth of field, (anime style:1.3), highly detailed background",
        "(worst quality, low quality:1.4), bad hands, extra limbs, blurry, nsfw",
    ),
    (
        "epic fantasy landscape, ancient castle on a cliff above a stormy sea, dramatic clouds, "
        "lightning, volumetric light, matte painting by greg rutkowski and thomas kinkade, unreal engine 5",
        "",
    ),
]


# Tags for the 1,000-character prompts: the vocabulary of ordinary prompts, numbers and a little non-ASCII.
TAGS = [
    "masterpiece",
    "best quality",
    "ultra detailed",
    "8k",
    "photorealistic",
    "cinematic lighting",
    "depth of field",
    "bokeh",
    "a woman",
    "a man",
    "portrait",
    "landscape",
    "castle",
    "dragon",
    "forest",
    "river",
    "mountains",
    "sunset",
    "city at night",
    "neon lights",
    "cyberpunk",
    "steampunk",
    "watercolor",
    "oil painting",
    "by greg rutkowski",
    "artstation",
    "unreal engine 5",
    "octane render",
    "volumetric fog",
    "1girl",
    "solo",
    "long hair",
    "blue eyes",
    "smile",
    "dress",
    "armor",
    "sword",
    "magic",
    "fantasy",
    "sci-fi",
    "spaceship",
    "robot",
    "cat",
    "dog",
    "flowers",
    "cherry blossoms",
    "snow",
    "rain",
    "beach",
    "ocean waves",
    "highly detailed face",
    "sharp focus",
    "intricate",
    "elegant",
    "golden hour",
    "(detailed:1.2)",
    "[blurry]",
    "studio ghibli style",
    "anime",
    "35mm photo",
    "kodak portra 400",
    "year 2012",
    "300 years old dragon",
    "chili",
    "kidney beans",
    "kindle",
    "tennis",
    "model",
    "minor key",
    "nude lipstick",
    "café",
    "über",
    "naïve",
    "東京",
    "桜",
    "ночной город",
    "夜景",
    "4 girls",
    "2 people",
    "3 years later",
    "one of a kind",
]


def long_prompts(count: int, length: int = 1000) -> list[str]:
    """``count`` distinct prompts of ``length`` characters, built from TAGS (seeded: the same every run)."""
    rng = random.Random(1000)
    prompts = []
    for _ in range(count):
        parts: list[str] = []
        while sum(len(p) + 2 for p in parts) < length:
            parts.append(rng.choice(TAGS))
        prompts.append(", ".join(parts)[:length])
    return prompts


def load(name: str) -> list[tuple[str, str]]:
    cases = []
    for line in (CORPORA / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            prompt, _, negative = line.partition(" ||| ")
            cases.append((prompt, negative))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=20_000, help="number of timed checks (default 20000)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from bot.safety import PromptFilter

    checker = PromptFilter()
    start = time.perf_counter()
    sizes = checker.warm_up()
    cold_ms = (time.perf_counter() - start) * 1000
    print(f"word lists: {sizes}; load + compile {cold_ms:.0f} ms (once per process)")

    allowed, blocked = load("corpus_allowed.txt"), load("corpus_blocked.txt")
    false_positives = [p for p, n in allowed if checker.check(p, n).blocked]
    false_negatives = [p for p, n in blocked if not checker.check(p, n).blocked]
    print(f"allowed corpus: {len(allowed)} prompts, false positives {len(false_positives)} "
          f"({len(false_positives) / len(allowed):.1%})")  # fmt: skip
    for prompt in false_positives:
        print(f"  FP: {prompt}")
    print(f"blocked corpus: {len(blocked)} prompts, false negatives {len(false_negatives)} "
          f"({len(false_negatives) / len(blocked):.1%})")  # fmt: skip
    for prompt in false_negatives:
        print(f"  FN: {prompt}")

    # The generated corpora (word lists × evasions, tests/safety/generate_corpus.py).
    gen_allowed, gen_blocked = load("corpus_generated_allowed.txt"), load("corpus_generated_blocked.txt")
    gen_fp = [p for p, n in gen_allowed if checker.check(p, n).blocked]
    gen_fn = [p for p, n in gen_blocked if not checker.check(p, n).blocked]
    print(f"generated allowed corpus: {len(gen_allowed)} prompts, false positives {len(gen_fp)} "
          f"({len(gen_fp) / len(gen_allowed):.1%})")  # fmt: skip
    for prompt in gen_fp:
        print(f"  FP: {prompt}")
    print(f"generated blocked corpus: {len(gen_blocked)} prompts, false negatives {len(gen_fn)} "
          f"({len(gen_fn) / len(gen_blocked):.1%})")  # fmt: skip
    for prompt in gen_fn:
        print(f"  FN: {prompt}")

    mix = allowed + blocked + gen_allowed + gen_blocked + LONG_PROMPTS * 20
    custom = ("clown", "re:\\bgore\\b", "red dragon")
    checks_per_second = 0.0
    for label, extra in (("built-in lists", ()), ("with 3 custom terms", custom)):
        timings = []
        cpu_start = time.thread_time_ns()
        for i in range(args.checks):
            prompt, negative = mix[i % len(mix)]
            t0 = time.perf_counter_ns()
            checker.check(prompt, negative, extra)
            timings.append(time.perf_counter_ns() - t0)
        if not extra:  # CPU time, like p99_ms: on a shared machine the wall clock counts others' turns
            checks_per_second = len(timings) / max((time.thread_time_ns() - cpu_start) / 1e9, 1e-9)
        timings.sort()
        mean = statistics.fmean(timings) / 1000
        p50 = timings[len(timings) // 2] / 1000
        p99 = timings[int(len(timings) * 0.99)] / 1000
        print(f"{label}: {args.checks} checks, mean {mean:.1f} µs, p50 {p50:.1f} µs, p99 {p99:.1f} µs")

    for prompt, negative in LONG_PROMPTS:
        timings = []
        for _ in range(200):
            t0 = time.perf_counter_ns()
            checker.check(prompt, negative)
            timings.append(time.perf_counter_ns() - t0)
        print(f"{len(prompt) + len(negative)}-char prompt: median {statistics.median(timings) / 1000:.1f} µs")

    # 1,000-character prompts, each new to the filter (its per-word cache still warm from the others). Timed
    # in CPU time of this thread: on a shared machine, wall-clock time also counts other processes' turns.
    timings, walls = [], []
    for prompt in long_prompts(max(200, args.checks // 10)):
        t0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        checker.check(prompt)
        timings.append(time.thread_time_ns() - t0)
        walls.append(time.perf_counter_ns() - w0)
    timings.sort()
    walls.sort()
    p99_ms = timings[int(len(timings) * 0.99)] / 1e6
    median_us = statistics.median(timings) / 1000
    wall_p99_us = walls[int(len(walls) * 0.99)] / 1000
    print(f"1000-char prompts: {len(timings)} distinct, CPU median {median_us:.1f} µs, "
          f"p99 {p99_ms * 1000:.1f} µs (wall clock p99 {wall_p99_us:.1f} µs)")  # fmt: skip

    all_blocked = len(blocked) + len(gen_blocked)
    all_allowed = len(allowed) + len(gen_allowed)
    figures = {
        "blocked_recall": round(1 - (len(false_negatives) + len(gen_fn)) / all_blocked, 4),
        "false_positive_rate": round((len(false_positives) + len(gen_fp)) / all_allowed, 4),
        "checks_per_second": round(checks_per_second),
        "p99_ms": round(p99_ms, 3),
        "blocked_prompts": all_blocked,
        "allowed_prompts": all_allowed,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
