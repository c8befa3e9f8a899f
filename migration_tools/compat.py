"""``scripts/check_compat.sh [--against REF] [--tests PATH]...``: does the previous release
still work on the schema this checkout's revisions make?

Expand/contract only works if each step leaves the running (older) code working: in a
rolling deploy and after a code rollback, release N serves on N+1's schema. This runs
release N's own tests against a database migrated with *this* checkout's revisions: a copy
of REF (``git archive``) whose ``migrations/versions/`` is replaced by ours, then REF's
tests (``--tests``, else ``COMPAT_TESTS``, else ``tests/api``). A revision that drops or
renames a column N reads, or adds a NOT NULL column N does not write, fails those tests, and
the report names them with the revisions N does not have.

The schema is the one a rolling deploy gives REF (backend/migrate/phases.py has the two
phases): this checkout's pre-deploy revisions, which every replica's start applies while REF
still serves, plus the post-deploy revisions REF itself had (its own contracts, run by
``flask migrations post-deploy`` while it served), but not this checkout's new post-deploy
revisions: those run once REF is no longer serving, so dropping what REF reads is their job
and no fault. In REF's tree the revisions are laid on one line (REF's pre-deploy revisions,
then its post-deploy ones, then this checkout's new pre-deploy ones: the order a deploy
takes), so however REF's tests migrate their database (``flask db upgrade``, which applies
only the main line of a history with two phases, or ``upgrade heads``), they get exactly
that schema. Only the copies in REF's scratch tree are touched: a few lines appended to
their files set ``down_revision`` and ``branch_labels`` anew.

A verdict is only given when tests ran. When REF's tests do not collect or import, none are
found, all are skipped, or REF is unknown, the answer is "could not check" (exit 2), never
"breaks on the schema": a false verdict sends a team to rewrite a revision that is fine.
For the same reason a test that fails on the new schema is run once more on REF's *own*
revisions: if it fails there too, the schema is not the cause (a missing service, a test
that never passed), and that is "could not check" as well.

Exit 0: compatible; 1: REF's tests fail on the new schema; 2: could not check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from alembic.script import ScriptDirectory

from backend.migrate.phases import Phases, read_phases
from migration_tools import compat_report

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = Path("migrations") / "versions"
TESTS_ENV = "COMPAT_TESTS"
DEFAULT_TESTS = ("tests/api",)
SAFE_MIGRATION_DOCS = "docs/safe-migrations.md"
_PLUGIN = "compat_report_plugin"


class CompatError(RuntimeError):
    """The check could not run; the message is one line."""


@dataclass
class Run:
    """How one pytest run of REF's tests went (from the compat_report plugin)."""

    exit_code: int
    collect_errors: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    output: str = ""


@dataclass(frozen=True)
class Verdict:
    """REF's tests ran on the new schema: those that failed, the revisions REF lacks that
    the schema holds (pre-deploy), and those left out (post-deploy)."""

    ref: str
    tests: tuple[str, ...]
    failures: tuple[dict, ...]
    new_revisions: tuple[str, ...]
    ran: int
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class History:
    """A versions folder, read: its scripts and its phases."""

    scripts: ScriptDirectory
    phases: Phases

    @property
    def revisions(self) -> set[str]:
        return {rev.revision for rev in self.scripts.walk_revisions()}


@dataclass(frozen=True)
class Plan:
    """What goes into REF's tree: which of this checkout's revision files, and which of them
    get a new ``down_revision`` (and no branch label) to lie on one line."""

    new: tuple[str, ...]          # this checkout's new pre-deploy revisions, applied
    left_out: tuple[str, ...]     # this checkout's new post-deploy revisions, not applied
    relink: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _git(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise CompatError(f"git {' '.join(args)}: {said[0] if said else 'failed'}")
    return proc.stdout.strip()


def default_ref() -> str:
    """The newest tag when the repository has one, else the previous commit."""
    tags = _git("tag", "--sort=-creatordate").splitlines()
    return tags[0] if tags else "HEAD~1"


def tests_to_run(flags: list[str] | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The tests to run, as paths inside REF's tree: ``--tests`` (repeatable), else the
    space-separated ``COMPAT_TESTS``, else ``tests/api``. Checked before anything runs."""
    chosen = flags or environ.get(TESTS_ENV, "").split() or list(DEFAULT_TESTS)
    paths = []
    for raw in chosen:
        path_part, sep, node = raw.partition("::")
        path = Path(path_part)
        if path.is_absolute():
            try:
                path = path.resolve().relative_to(ROOT)
            except ValueError:
                raise CompatError(f"test path {raw!r} is outside the repository; give a path "
                                  "inside it, as REF's tree has it") from None
        posix = PurePosixPath(path.as_posix())
        if not path_part or ".." in posix.parts:
            raise CompatError(f"test path {raw!r} must name a file or folder inside the "
                              "repository")
        paths.append(f"{posix}{sep}{node}")
    return tuple(paths)


def read_history(versions: Path, where: str) -> History:
    """A versions folder's revisions and phases; an unreadable history cannot be checked."""
    if not versions.is_dir():
        raise CompatError(f"{where} has no {VERSIONS}/")
    try:
        scripts = ScriptDirectory(str(versions.parent), version_locations=[str(versions)])
        return History(scripts, read_phases(scripts))
    except Exception as exc:  # any error in a revision file means no history to compare
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CompatError(f"cannot read {where}'s revisions: {first}") from None


def plan(ours: History, theirs: History, ref: str) -> Plan:
    """The revisions REF's tests get, in the order of a rolling deploy: REF's pre-deploy
    line, REF's own post-deploy revisions after it (they ran while REF served), then this
    checkout's new pre-deploy revisions; this checkout's new post-deploy revisions are left
    out (they run once REF is gone).

    On one line, so that REF's way of migrating applies all of it: the root of REF's
    post-deploy branch goes on REF's pre-deploy head(s), and a new pre-deploy revision
    that sat on those heads goes on REF's post-deploy head instead.
    """
    problem = ours.phases.problem()
    if problem:
        raise CompatError(f"this checkout's history: {problem}")
    known = theirs.revisions
    walk = [script.revision for script in reversed(list(ours.scripts.walk_revisions()))]
    left_out = [rev for rev in walk if rev in ours.phases.post and rev not in known]
    new = [rev for rev in walk if rev not in ours.phases.post and rev not in known]
    for rev in new:
        needed = [dep for dep in _parents(ours.scripts, rev, dependencies=True)
                  if dep in left_out]
        if needed:
            raise CompatError(
                f"pre-deploy revision {rev} needs post-deploy revision(s) "
                f"{', '.join(needed)}, which {ref} does not have: no start of this release "
                f"could apply it while {ref} serves (post-deploy revisions run once the "
                "release is out); make it a post-deploy revision, or ship it a release later")
    kept_post = [rev for rev in walk if rev in ours.phases.post and rev in known]
    relink: dict[str, tuple[str, ...]] = {}
    if kept_post:
        pre_heads = tuple(head for head in theirs.phases.pre_heads if head in set(walk))
        post_heads = tuple(head for head in theirs.phases.post_heads if head in kept_post)
        for rev in kept_post:
            if not _parents(ours.scripts, rev):
                relink[rev] = pre_heads
        for rev in new:
            parents = _parents(ours.scripts, rev)
            if any(parent in pre_heads for parent in parents):
                moved = [post_heads if parent in pre_heads else (parent,) for parent in parents]
                relink[rev] = tuple(dict.fromkeys(name for group in moved for name in group))
    return Plan(new=tuple(new), left_out=tuple(left_out), relink=relink)


def _parents(scripts: ScriptDirectory, rev: str, dependencies: bool = False) -> list[str]:
    """A revision's ``down_revision`` entries (and its ``depends_on`` targets), as ids."""
    script = scripts.get_revision(rev)
    names = list(_as_tuple(script.down_revision))
    if dependencies:
        names += _as_tuple(script.dependencies)
    return [scripts.get_revision(name).revision for name in names]


def _as_tuple(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def lay_out(ours: History, steps: Plan, versions: Path) -> None:
    """This checkout's revision files into REF's tree (``versions``, emptied first): all but
    the ones left out, the relinked ones with their new links appended (the module's last
    assignment is the one Alembic reads)."""
    shutil.rmtree(versions)
    shutil.copytree(ROOT / VERSIONS, versions, ignore=shutil.ignore_patterns("__pycache__"))
    for rev in steps.left_out:
        (versions / _relative(ours, rev)).unlink()
    for rev, parents in steps.relink.items():
        path = versions / _relative(ours, rev)
        down = parents[0] if len(parents) == 1 else (tuple(parents) or None)
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\n\n# check_compat: laid on one line, in the order of a rolling deploy "
                         "(this copy only)\n"
                         f"down_revision = {down!r}\nbranch_labels = None\n")


def _relative(ours: History, rev: str) -> Path:
    return Path(ours.scripts.get_revision(rev).path).resolve().relative_to(
        (ROOT / VERSIONS).resolve())


def checkout(ref: str, dest: Path) -> None:
    """REF's tree, as committed, into ``dest`` (no worktree bookkeeping left behind)."""
    try:
        _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except CompatError:
        raise CompatError(f"{ref!r} is not a commit this repository knows (fetch it, or "
                          "name a tag or commit with --against)") from None
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", ref], cwd=ROOT,
                               stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout,
                           capture_output=True)
    archive.stdout.close()
    if archive.wait() != 0 or untar.returncode != 0:
        raise CompatError(f"could not extract {ref}: {untar.stderr.decode().strip()}")


def run_tests(tree: Path, tests: tuple[str, ...], work: Path, verbose: bool) -> Run:
    """REF's tests in ``tree``, with the report plugin beside them (not in REF's tree)."""
    plugin_dir = work / "plugin"
    plugin_dir.mkdir(exist_ok=True)
    shutil.copy2(Path(compat_report.__file__), plugin_dir / f"{_PLUGIN}.py")
    report_file = work / "report.json"
    report_file.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_dir),
                                                      env.get("PYTHONPATH")]))
    env[compat_report.REPORT_ENV] = str(report_file)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", _PLUGIN, "-x", *tests], cwd=tree, env=env,
                          capture_output=True, text=True)
    if verbose:
        print(proc.stdout, proc.stderr, file=sys.stderr)
    run = Run(proc.returncode, output=proc.stdout + proc.stderr)
    if report_file.is_file():
        state = json.loads(report_file.read_text())
        for record in state["collect_errors"] + state["failures"]:
            record["detail"] = record["detail"].replace(f"{tree}{os.sep}", "")  # REF-relative
        run.collect_errors, run.failures = state["collect_errors"], state["failures"]
        run.ran, run.skipped = state["ran"], state["skipped"]
    return run


def could_not_run(ref: str, tests: tuple[str, ...], run: Run) -> str | None:
    """Why this run gives no verdict, in one line; None when tests ran."""
    shown = " ".join(tests)
    if run.collect_errors:
        first = run.collect_errors[0]
        more = len(run.collect_errors) - 1
        return (f"{ref}'s tests do not collect: {first['nodeid'] or shown}: {first['detail']}"
                + (f" (and {more} more)" if more else ""))
    if run.exit_code == 5:
        return f"no tests found in {ref}'s {shown}"
    if run.exit_code not in (0, 1):
        return (f"{ref}'s tests could not run (pytest exit {run.exit_code}): "
                f"{compat_report.one_line(run.output)}")
    if run.exit_code == 1 and not run.failures:
        return f"{ref}'s tests failed without naming a test: {compat_report.one_line(run.output)}"
    if not run.failures and run.ran == 0:
        return f"every test in {ref}'s {shown} was skipped ({run.skipped}); none ran"
    return None


def check(ref: str, tests: tuple[str, ...], verbose: bool = False) -> Verdict:
    """Run REF's tests on this checkout's revisions; raises CompatError when no verdict."""
    with tempfile.TemporaryDirectory(prefix="compat-") as tmp:
        work = Path(tmp)
        release = work / "release"
        checkout(ref, release)
        missing = [t for t in tests if not (release / t.partition("::")[0]).exists()]
        if missing:
            raise CompatError(f"{ref} has no {', '.join(missing)} to run")
        ours = read_history(ROOT / VERSIONS, "this checkout")
        steps = plan(ours, read_history(release / VERSIONS, ref), ref)
        lay_out(ours, steps, release / VERSIONS)
        new_revisions = sorted(steps.new)
        left_out = (f"; {len(steps.left_out)} new post-deploy left out, they run once {ref} "
                    f"is gone: {', '.join(sorted(steps.left_out))}" if steps.left_out else "")
        print(f"check_compat: running {ref}'s {' '.join(tests)} on this checkout's revisions "
              f"({len(new_revisions)} new: {', '.join(new_revisions) or 'none'}{left_out})",
              file=sys.stderr)
        run = run_tests(release, tests, work, verbose)
        reason = could_not_run(ref, tests, run)
        if reason:
            raise CompatError(reason)
        if run.failures:
            confirm_on_own_schema(ref, run.failures, work, verbose)
        return Verdict(ref, tests, tuple(run.failures), tuple(new_revisions), run.ran,
                       tuple(sorted(steps.left_out)))


def confirm_on_own_schema(ref: str, failures: list[dict], work: Path, verbose: bool) -> None:
    """The failed tests again, on REF's own revisions: a test that fails there too does not
    fail because of the new schema, so there is no verdict to give."""
    own = work / "own"
    checkout(ref, own)
    ids = tuple(dict.fromkeys(f["nodeid"] for f in failures))
    print(f"check_compat: confirming on {ref}'s own revisions: {', '.join(ids)}",
          file=sys.stderr)
    again = run_tests(own, ids, work, verbose)
    reason = could_not_run(ref, ids, again)
    if reason:
        raise CompatError(f"{reason} (on {ref}'s own revisions)")
    if again.failures:
        first = again.failures[0]
        raise CompatError(f"{first['nodeid']} fails on {ref}'s own revisions too, so the new "
                          f"schema is not the cause: {first['detail']}")


def main(argv: list[str] | None = None) -> int:
    """Exit 0 compatible, 1 REF breaks on the new schema, 2 could not check."""
    parser = argparse.ArgumentParser(
        prog="scripts/check_compat.sh",
        description="Run the previous release's tests on a database migrated with this "
                    "checkout's revisions, as a rolling deploy leaves it while that release "
                    "serves: the pre-deploy revisions and the release's own post-deploy "
                    "ones; this checkout's new post-deploy revisions are left out (they run "
                    "once the previous release is gone).",
        epilog="exit status: 0 compatible; 1 the previous release's tests fail on this "
               "schema (named, with the new revisions); 2 could not check (REF unknown, its "
               "tests do not collect or import, none found or all skipped)")
    parser.add_argument("--against", metavar="REF",
                        help="the release to check (default: the newest tag, else HEAD~1)")
    parser.add_argument("--tests", metavar="PATH", action="append",
                        help=f"REF's tests to run, a path in its tree (repeatable; default: "
                             f"${TESTS_ENV}, space-separated, else {' '.join(DEFAULT_TESTS)})")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    args = parser.parse_args(argv)
    try:
        tests = tests_to_run(args.tests, os.environ)
        ref = args.against or default_ref()
        verdict = check(ref, tests, args.verbose)
    except CompatError as exc:
        print(f"check_compat: could not check: {exc}", file=sys.stderr)
        return 2
    if verdict.failures:
        names = ", ".join(dict.fromkeys(f["nodeid"] for f in verdict.failures))
        print(f"check_compat: {ref} breaks on the schema of revision(s) "
              f"{', '.join(verdict.new_revisions) or '(none new)'}: {names} failed. Make "
              f"the change in expand/contract steps ({SAFE_MIGRATION_DOCS})", file=sys.stderr)
        for failure in verdict.failures:
            print(f"  {failure['nodeid']}: {failure['detail']}", file=sys.stderr)
        return 1
    print(f"check_compat: {ref}'s {' '.join(tests)} pass on this checkout's schema "
          f"({verdict.ran} test(s) ran)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
