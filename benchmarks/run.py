"""Run every benchmark module in this folder (files named ``bench_*.py``) in turn.

Each module exposes ``main() -> dict[str, float]`` and merges its own results into
``benchmarks/results/latest.json``. Run one alone with ``python -m benchmarks.bench_x``, or
name some: ``python -m benchmarks.run bench_processing bench_m365sim``.

The wall time of the whole run is written as ``bench.total_seconds`` (only when every module
ran), and each module's as ``bench.<module>_seconds``: ``make bench`` (the default profile,
with the classifier parts' cache, ``benchmarks/cache.py``) must stay within 20 minutes on the
2-core reference machine; ``make bench-full`` (``POSTROOM_BENCH_PROFILE=full``) runs the
issues' full sizes. ``bench.cached_parts`` counts the classifier parts that came from the cache
(0: a cold run), so a total is read with the right expectation.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from benchmarks.results_file import merge_results


def main() -> int:
    started = time.monotonic()
    here = Path(__file__).resolve().parent
    only = set(sys.argv[1:])
    failed = 0
    timings: dict[str, float] = {}
    for path in sorted(here.glob("bench_*.py")):
        if only and path.stem not in only:
            continue
        print(f"== {path.stem}", flush=True)
        begin = time.monotonic()
        module = importlib.import_module(f"benchmarks.{path.stem}")
        try:
            results = module.main()
        except Exception as exc:  # report and go on with the next benchmark
            failed += 1
            print(f"!! {path.stem} failed: {exc!r}", flush=True)
            continue
        finally:
            timings[f"bench.{path.stem.removeprefix('bench_')}_seconds"] = time.monotonic() - begin
        for name, value in sorted(results.items()):
            print(f"   {name} = {value}", flush=True)
    from benchmarks.cache import STATS

    if not only:
        timings["bench.total_seconds"] = time.monotonic() - started
        timings["bench.cached_parts"] = float(STATS["part_hits"])
        timings["bench.failed_modules"] = float(failed)
    merge_results(timings)
    for name, value in sorted(timings.items()):
        print(f"   {name} = {value:.1f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
