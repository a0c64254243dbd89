"""The safety benchmark runs and prints false positives and false negatives on the corpora (#4)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_benchmark_prints_false_positives_and_negatives() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "safety_filter.py"), "--checks", "50"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Figures, not timings, are asserted: the corpora must stay clean.
    assert re.search(r"allowed corpus: \d+ prompts, false positives 0 \(0\.0%\)", out), out
    assert re.search(r"blocked corpus: \d+ prompts, false negatives 0 \(0\.0%\)", out), out
    assert re.search(r"built-in lists: 50 checks, mean [\d.]+ µs", out), out
