"""Benchmark 3: migration verification on a long history, ours against pytest-alembic.

Ours is ``migration_tools.verify.verify`` (what ``scripts/verify_migrations.sh`` runs),
without the comparison with the models: for every revision, upgrade, downgrade (the schema
must be the one before the upgrade) and upgrade again (the schema must be the one after the
first upgrade), on one connection, one catalog query per snapshot. Plain is pytest-alembic's
own checks with the same coverage: ``test_downgrade_leaves_no_trace`` (each downgrade undoes
its upgrade, by autogenerate) and ``test_up_down_consistency`` (every upgrade and downgrade
runs), each on its own fresh database through our ``env.py`` and the Flask app, as the
migration tests wire them (``testkit.harness``).

Both run in this process, so neither pays for an interpreter start. The histories are
``bench.history``'s (one small table per revision), with a column added on every third
revision and an index on every fourth, so a downgrade has more than one thing to undo.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from bench.common import (
    BenchError,
    BenchResult,
    Context,
    Row,
    Summary,
    copy_repo,
    log,
    ratios,
    summarize,
)
from bench.history import generate_history

# Seconds per revision for ours at N = 100; and the whole verification of a 300-revision
# history, projected from the measured slope.
TARGET_PER_REVISION = 0.05
TARGET_300 = 20.0
PROJECT_AT = 300

_UPGRADE_END = "\n\n\ndef downgrade():"


def generate(dest: Path, count: int) -> Path:
    """``bench.history``'s history of ``count`` revisions, where every third revision also
    adds a column and every fourth an index (their downgrades drop the table, and with it
    both); return the ``versions`` folder."""
    generate_history(dest, count)
    for path in sorted(dest.glob("*.py")):
        index = int(path.name[:4])
        table = f"bench_t{index:04d}"
        extra = ""
        if index % 3 == 0:
            extra += (f"\n    op.add_column({table!r}, "
                      "sa.Column('extra', sa.Integer(), nullable=True))")
        if index % 4 == 0:
            extra += f"\n    op.create_index('ix_{table}_name', {table!r}, ['name'])"
        if extra:
            text = path.read_text()
            if _UPGRADE_END not in text:
                raise BenchError(f"{path.name}: no downgrade() after upgrade() to extend")
            path.write_text(text.replace(_UPGRADE_END, extra + _UPGRADE_END, 1))
    return dest


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No log lines while measuring: env.py logs every revision, Alembic every step, and the
    other benchmarks send their children's output to files. Restored afterwards."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@contextlib.contextmanager
def _fresh_database(ctx: Context, prefix: str) -> Iterator[URL]:
    url = ctx.pg.create_database(prefix=prefix)
    try:
        yield url
    finally:
        ctx.pg.drop_database(url.database)


def ours(ctx: Context, migrations: Path) -> dict[str, float]:
    """One verification on a fresh empty database: seconds of the whole call and of the walk."""
    from migration_tools.verify import verify

    with _fresh_database(ctx, "verify_ours") as url:
        started = time.perf_counter()
        report = verify(url, migrations, models=False)
        seconds = time.perf_counter() - started
    if not report.ok:
        raise BenchError("our verifier found problems in the generated history: "
                         + "; ".join(report.all_problems()[:3]))
    return {"seconds": seconds, "walk_seconds": report.walk_seconds}


def _pytest_alembic_check(ctx: Context, migrations: Path,
                          test: Callable[[Any], None]) -> float:
    """One of pytest-alembic's checks on a fresh database, in-process: the app built for it
    and its context pushed (as the migration tests' fixtures do), then the check timed from
    making pytest-alembic's runner to the end of the check."""
    import pytest_alembic

    from testkit import harness

    with _fresh_database(ctx, "verify_pa") as url, harness.migration_session(url) as session:
        config = session.alembic_config(migrations)
        started = time.perf_counter()
        with pytest_alembic.runner(config=config, engine=session.engine) as runner:
            test(runner)
        return time.perf_counter() - started


def theirs(ctx: Context, migrations: Path) -> dict[str, float]:
    """pytest-alembic's two checks, each on its own fresh database; seconds of each and both."""
    from pytest_alembic.tests import default, experimental

    no_trace = _pytest_alembic_check(ctx, migrations, experimental.test_downgrade_leaves_no_trace)
    up_down = _pytest_alembic_check(ctx, migrations, default.test_up_down_consistency)
    return {"seconds": no_trace + up_down, "downgrade_leaves_no_trace": no_trace,
            "up_down_consistency": up_down}


def run(ctx: Context) -> BenchResult:
    sizes = [10, 30] if ctx.quick else [10, 100]
    rounds = 2 if ctx.quick else 3
    # pytest-alembic at the largest N is the long part (about 25 s a run at N = 100):
    # fewer rounds there, paired with ours' first rounds.
    their_rounds = {sizes[0]: rounds, sizes[-1]: 1 if ctx.quick else 2}
    lo, hi = sizes[0], sizes[-1]
    result = BenchResult(
        key="verify",
        title="3. Migration verification: every downgrade undoes its upgrade",
        what=(f"Generated histories of N revisions (one small table each, a column added on "
              f"every 3rd and an index on every 4th), verified from an empty database, fresh "
              f"per run, in-process. Ours: {rounds} rounds; pytest-alembic: "
              + ", ".join(f"{their_rounds[n]} at N = {n}" for n in sizes)
              + ", the two sides alternating which goes first. Median (min-max)."),
        ours_label="`verify(models=False)` (scripts/verify_migrations.sh)",
        plain_label="pytest-alembic `test_downgrade_leaves_no_trace` + "
                    "`test_up_down_consistency`",
    )
    migrations: dict[int, Path] = {}
    for n in sizes:
        versions = generate(ctx.workdir / f"gen-{n}", n)
        migrations[n] = copy_repo(ctx.workdir / f"repo-{n}", versions=versions) / "migrations"

    data: dict[int, dict[str, list[dict[str, float] | None]]] = {
        n: {"ours": [], "theirs": []} for n in sizes}
    with _quiet():
        # Warm-up, not counted: imports, bytecode of every copy's revisions, the first app.
        for n in sizes:
            ours(ctx, migrations[n])
        theirs(ctx, migrations[lo])
        for rnd in range(rounds):
            for n in sizes:
                sides = ["ours", "theirs"] if (rnd + n) % 2 == 0 else ["theirs", "ours"]
                for side in sides:
                    if side == "ours":
                        data[n]["ours"].append(ours(ctx, migrations[n]))
                    elif rnd < their_rounds[n]:
                        data[n]["theirs"].append(theirs(ctx, migrations[n]))
                    else:
                        data[n]["theirs"].append(None)
                last = data[n]["theirs"][-1]
                log(f"verify: round {rnd + 1}/{rounds}, N={n}: ours "
                    f"{data[n]['ours'][-1]['seconds']:.2f}s, pytest-alembic "
                    + (f"{last['seconds']:.2f}s" if last else "(not this round)"))

    def series(n: int, side: str, key: str = "seconds") -> list[float]:
        return [run[key] for run in data[n][side] if run is not None]

    def paired(n: int) -> tuple[list[float], list[float]]:
        """Ours and theirs of the rounds where both ran: each ratio is of one round."""
        pairs = [(o["seconds"], t["seconds"]) for o, t in zip(data[n]["ours"],
                                                              data[n]["theirs"], strict=True)
                 if o is not None and t is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    for n in sizes:
        result.rows.append(Row(f"N = {n}: verify the whole history",
                               summarize(series(n, "ours")), summarize(series(n, "theirs")),
                               ratios(*paired(n))))
    target_note = "" if hi == 100 else " (quick run: N = 30)"
    for n in sizes:
        per_ours, per_theirs = ([s / n for s in side] for side in paired(n))
        row = Row(f"N = {n}: seconds per revision (seconds / N)",
                  summarize([s / n for s in series(n, "ours")]),
                  summarize([s / n for s in series(n, "theirs")]),
                  ratios(per_ours, per_theirs), digits=4)
        if n == hi:  # the target: ours per revision at the largest N
            row.target = f"ours <= {TARGET_PER_REVISION:.2f} s at N = 100{target_note}"
            row.passed = isinstance(row.ours, Summary) and row.ours.median <= TARGET_PER_REVISION
        result.rows.append(row)

    def slopes(side: str) -> list[float]:
        lows, highs = series(lo, side), series(hi, side)
        return [(b - a) / (hi - lo) for a, b in zip(lows, highs, strict=False)]

    slope_ours, slope_theirs = slopes("ours"), slopes("theirs")
    result.rows.append(Row(f"marginal seconds per revision (slope N = {lo} → {hi})",
                           summarize(slope_ours), summarize(slope_theirs),
                           ratios(slope_ours[:len(slope_theirs)], slope_theirs), digits=4))

    at_hi_ours = summarize(series(hi, "ours")).median
    at_hi_theirs = summarize(series(hi, "theirs")).median
    projected_ours = at_hi_ours + summarize(slope_ours).median * (PROJECT_AT - hi)
    projected_theirs = at_hi_theirs + summarize(slope_theirs).median * (PROJECT_AT - hi)
    walk = summarize([w / hi for w in series(hi, "ours", "walk_seconds")]).median
    split = {name: summarize(series(hi, "theirs", name)).median
             for name in ("downgrade_leaves_no_trace", "up_down_consistency")}
    result.notes = [
        f"A {PROJECT_AT}-revision project at the measured slope (N = {lo} → {hi}) would verify "
        f"in {projected_ours:.1f} s with ours (target < {TARGET_300:.0f} s: "
        f"{'met' if projected_ours < TARGET_300 else '**not met**'}) and "
        f"{projected_theirs:.0f} s with pytest-alembic. A straight line is a lower bound: "
        "both sides' cost per revision grows with the schema already in place (ours: the "
        "catalog query covers more objects; pytest-alembic: it reflects more tables), so a "
        "real 300-revision history takes longer, pytest-alembic's the more so.",
        f"pytest-alembic at N = {hi}: test_downgrade_leaves_no_trace "
        f"{split['downgrade_leaves_no_trace']:.2f} s, test_up_down_consistency "
        f"{split['up_down_consistency']:.2f} s (medians). Ours at N = {hi}: the walk itself "
        f"is {walk:.4f} s per revision, the rest is connecting and loading the history.",
        "Same coverage on both sides: per revision, its downgrade must restore the schema "
        "before its upgrade, and every upgrade and downgrade must run. Ours also runs each "
        "upgrade a second time and compares the schema with the first. Neither side compares "
        "the schema at head with the models here.",
        "pytest-alembic's time leaves out building the Flask app for its database (the "
        "tests' fixtures do that once per test); ours' includes connecting and the "
        "empty-database check. Every run gets a fresh database, created and dropped outside "
        "the timing.",
    ]
    result.raw = {"sizes": sizes, "rounds": rounds, "pytest_alembic_rounds": their_rounds,
                  "runs": data, "projected_300": {"ours": projected_ours,
                                                  "pytest_alembic": projected_theirs}}
    return result
