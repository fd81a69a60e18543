"""Run every benchmark module in this folder (files named ``bench_*.py``) in turn.

Each module exposes ``main() -> dict[str, float]`` and merges its own results into
``benchmarks/results/latest.json``. Run one alone with ``python -m benchmarks.bench_x``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    only = set(sys.argv[1:])
    failed = 0
    for path in sorted(here.glob("bench_*.py")):
        if only and path.stem not in only:
            continue
        print(f"== {path.stem}", flush=True)
        module = importlib.import_module(f"benchmarks.{path.stem}")
        try:
            results = module.main()
        except Exception as exc:  # report and go on with the next benchmark
            failed += 1
            print(f"!! {path.stem} failed: {exc!r}", flush=True)
            continue
        for name, value in sorted(results.items()):
            print(f"   {name} = {value}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
