"""``make bench``: run every registered benchmark, write ``bench/RESULTS.md`` and
``bench/results.json``.

    python -m bench.run                 # the full run (under 10 minutes on 2 cores)
    QUICK=1 python -m bench.run         # a short pass: fewer rounds, smaller N and tables
    python -m bench.run --quick --only startup,readyz

One PostgreSQL serves the whole run: an embedded server in a temporary directory (deleted
at the end), or ``BENCH_DATABASE_URL`` when set (the role must be allowed to create
databases; every database the run creates is dropped again).

Adding a benchmark is one function: write ``run(ctx: Context) -> BenchResult`` in a module
of this package and add one ``Benchmark(...)`` line to ``BENCHMARKS`` below.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import (
    api,
    backfill,
    containers,
    deploy,
    history,
    live,
    readyz,
    request_path,
    startup,
    verify,
)
from bench.common import BenchResult, Context, log, machine_info, postgres

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Benchmark:
    number: int
    key: str
    run: Callable[[Context], BenchResult]
    # Runs only when named with --only (it needs something `make bench` must not: Docker).
    on_request: bool = False


# The registry, in report order.
BENCHMARKS: list[Benchmark] = [
    Benchmark(1, "startup", startup.run),
    Benchmark(2, "history", history.run),
    Benchmark(3, "verify", verify.run),
    Benchmark(4, "live", live.run),
    Benchmark(5, "readyz", readyz.run),
    Benchmark(6, "api", api.run),
    Benchmark(7, "containers", containers.run, on_request=True),
    Benchmark(8, "deploy", deploy.run),
    Benchmark(9, "backfill", backfill.run),
    Benchmark(10, "request-path", request_path.run),
]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def run_all(quick: bool, only: list[str] | None) -> tuple[dict[str, str], list[BenchResult]]:
    chosen = [b for b in BENCHMARKS if b.key in only] if only else \
        [b for b in BENCHMARKS if not b.on_request]
    results: list[BenchResult] = []
    workroot = Path(tempfile.mkdtemp(prefix="bench-work-"))
    try:
        with postgres() as pg:
            machine = machine_info(pg)
            for bench in chosen:
                log(f"== benchmark {bench.number}: {bench.key} ({'quick' if quick else 'full'})")
                workdir = workroot / bench.key
                workdir.mkdir()
                started = time.perf_counter()
                try:
                    result = bench.run(Context(quick=quick, pg=pg, workdir=workdir))
                except Exception as exc:  # one broken benchmark must not lose the others
                    traceback.print_exc()
                    result = BenchResult(key=bench.key, title=f"{bench.number}. {bench.key}",
                                         what="", ours_label="", plain_label="",
                                         error=f"{type(exc).__name__}: {exc}")
                result.seconds = time.perf_counter() - started
                log(f"== {bench.key} done in {result.seconds:.0f}s")
                results.append(result)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    return machine, results


def render(machine: dict[str, str], results: list[BenchResult], quick: bool,
           total: float) -> str:
    verdicts = [row.passed for r in results for row in r.rows if row.passed is not None]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench`{' with QUICK=1' if quick else ''} "
        f"({'quick' if quick else 'full'} run, {total:.0f} s). Each benchmark runs the "
        "project beside its plain counterpart in the same run, on one throwaway "
        "PostgreSQL, and reports the median of several rounds with the min-max in "
        "brackets. Ratios are ours / plain and are the figures to compare across "
        "machines; the absolute seconds are for scale. The machine may have been busy "
        "with other work: see the load average.",
        "",
        f"Targets met: {sum(verdicts)} of {len(verdicts)}.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in machine.items()],
        "",
    ]
    lines += [result.markdown() for result in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short pass (also QUICK=1 in the environment)")
    parser.add_argument("--only", default="",
                        help="comma-separated benchmark keys: " +
                        ", ".join(b.key for b in BENCHMARKS))
    parser.add_argument("--output", type=Path, default=HERE,
                        help="where RESULTS.md and results.json go (default: bench/)")
    args = parser.parse_args(argv)
    quick = args.quick or _truthy(os.environ.get("QUICK"))
    only = [key.strip() for key in args.only.split(",") if key.strip()] or None
    unknown = set(only or ()) - {b.key for b in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    machine, results = run_all(quick, only)
    total = time.perf_counter() - started
    args.output.mkdir(parents=True, exist_ok=True)
    markdown = render(machine, results, quick, total)
    (args.output / "RESULTS.md").write_text(markdown)
    (args.output / "results.json").write_text(json.dumps(
        {"mode": "quick" if quick else "full", "seconds": round(total, 1), "machine": machine,
         "benchmarks": {r.key: r.as_dict() for r in results}}, indent=2) + "\n")
    print(markdown)
    log(f"wrote {args.output / 'RESULTS.md'} and results.json in {total:.0f}s")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
