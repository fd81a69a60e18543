"""Machine-readable benchmark results.

Every benchmark writes flat ``"name": number`` pairs into ``benchmarks/results/latest.json``.
Results are merged: a benchmark replaces only its own keys, so several benchmarks (run
together by ``make bench`` or alone) accumulate into one file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "latest.json"


def merge_results(results: dict[str, float], path: Path = RESULTS_PATH) -> dict[str, float]:
    """Merge ``results`` into the results file and return the merged content."""
    for name, value in results.items():
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ValueError(f"benchmark result {name!r} must be a finite number, got {value!r}")
    merged: dict[str, float] = {}
    if path.exists():
        merged = json.loads(path.read_text(encoding="utf-8"))
    merged.update(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(merged.items())), indent=2) + "\n", encoding="utf-8")
    return merged
