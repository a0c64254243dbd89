"""Benchmark the prompt safety filter: accuracy on the test corpora and time per check.

Run from the repository root: ``python bench/safety_filter.py [--checks N]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
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

    mix = allowed + blocked + LONG_PROMPTS * 20
    custom = ("clown", "re:\\bgore\\b", "red dragon")
    for label, extra in (("built-in lists", ()), ("with 3 custom terms", custom)):
        timings = []
        for i in range(args.checks):
            prompt, negative = mix[i % len(mix)]
            t0 = time.perf_counter_ns()
            checker.check(prompt, negative, extra)
            timings.append(time.perf_counter_ns() - t0)
        timings.sort()
        mean = statistics.fmean(timings) / 1000
        p50 = timings[len(timings) // 2] / 1000
        p99 = timings[int(len(timings) * 0.99)] / 1000
        print(f"{label}: {args.checks} checks, mean {mean:.1f} µs, p50 {p50:.1f} µs, p99 {p99:.1f} µs")

    for prompt, negative in LONG_PROMPTS:
        timings = []
        for _ in range(2000):
            t0 = time.perf_counter_ns()
            checker.check(prompt, negative)
            timings.append(time.perf_counter_ns() - t0)
        print(f"{len(prompt) + len(negative)}-char prompt: median {statistics.median(timings) / 1000:.1f} µs")


if __name__ == "__main__":
    main()
