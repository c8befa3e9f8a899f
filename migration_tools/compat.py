"""``scripts/check_compat.sh [--against REF]``: does the previous release still work on the
schema this checkout's revisions make?

Expand/contract only works if each step leaves the running (older) code working: in a
rolling deploy and after a code rollback, release N serves on N+1's schema. This runs
release N's own API tests against a database migrated with *this* checkout's revisions:
a copy of REF (``git archive``) whose ``migrations/versions/`` is replaced by ours, then
REF's ``tests/api``. A revision that drops or renames a column N reads, or adds a NOT NULL
column N does not write, fails those tests, and the report names them with the revisions
N does not have.

Exit 0: compatible; 1: REF's tests fail on the new schema; 2: could not check.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = Path("migrations") / "versions"
API_TESTS = "tests/api"


class CompatError(RuntimeError):
    """The check could not run; the message is one line."""


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


def revisions_in(versions: Path) -> set[str]:
    scripts = ScriptDirectory(str(versions.parent), version_locations=[str(versions)])
    return {rev.revision for rev in scripts.walk_revisions()}


def checkout(ref: str, dest: Path) -> None:
    """REF's tree, as committed, into ``dest`` (no worktree bookkeeping left behind)."""
    _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    archive = subprocess.Popen(["git", "archive", "--format=tar", ref], cwd=ROOT,
                               stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout,
                           capture_output=True)
    archive.stdout.close()
    if archive.wait() != 0 or untar.returncode != 0:
        raise CompatError(f"could not extract {ref}: {untar.stderr.decode().strip()}")


def check(ref: str, verbose: bool = False) -> tuple[list[str], list[str]]:
    """(REF's failing tests, our revisions REF does not have); raises CompatError."""
    with tempfile.TemporaryDirectory(prefix="compat-") as tmp:
        old = Path(tmp)
        checkout(ref, old)
        if not (old / API_TESTS).is_dir():
            raise CompatError(f"{ref} has no {API_TESTS}/ to run")
        new_revisions = sorted(revisions_in(ROOT / VERSIONS) - revisions_in(old / VERSIONS))
        shutil.rmtree(old / VERSIONS)
        shutil.copytree(ROOT / VERSIONS, old / VERSIONS,
                        ignore=shutil.ignore_patterns("__pycache__"))
        print(f"check_compat: running {ref}'s {API_TESTS} on this checkout's revisions "
              f"({len(new_revisions)} new: {', '.join(new_revisions) or 'none'})",
              file=sys.stderr)
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-x", API_TESTS], cwd=old, capture_output=True, text=True)
        if verbose:
            print(proc.stdout, proc.stderr, file=sys.stderr)
        failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)
        if proc.returncode not in (0, 1) or (proc.returncode == 1 and not failed):
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise CompatError(f"{ref}'s tests could not run: {' / '.join(tail)}")
        return failed, new_revisions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/check_compat.sh",
        description="Run the previous release's API tests on this checkout's schema.")
    parser.add_argument("--against", metavar="REF",
                        help="the release to check (default: the newest tag, else HEAD~1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    args = parser.parse_args(argv)
    try:
        ref = args.against or default_ref()
        failed, new_revisions = check(ref, args.verbose)
    except CompatError as exc:
        print(f"check_compat: could not check: {exc}", file=sys.stderr)
        return 2
    if failed:
        print(f"check_compat: {ref} breaks on the schema of revision(s) "
              f"{', '.join(new_revisions) or '(none new)'}: {', '.join(failed)} failed. Make "
              "the change in expand/contract steps (README, 'Writing a safe migration')",
              file=sys.stderr)
        return 1
    print(f"check_compat: {ref}'s API tests pass on this checkout's schema", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
