#!/usr/bin/env bash
# CI: port a second application onto a fresh copy of this checkout, exactly as
# docs/adopting.md tells a team to, then prove the suite and every tool on it:
#   .ci/swap_app.sh [APP_DIR]          (default: tests/apps/blog)
# On the copy: scripts/remove_example.sh, the app's files copied in, the lint baseline
# written and committed; then make test, make verify-migrations, the lint, the entrypoint on a
# scratch database (/readyz 200), a rehearsal, create_migration, check_compat against the
# commit before the change, and resolve_conflict on two git branches. Needs the checkout,
# its .venv (make install) and nothing else: PostgreSQL is the embedded one. Exit non-zero on
# the first failure. KEEP_SWAP_COPY=1 keeps the copy for a look afterwards; SWAP_APP_SUITE=0
# leaves make test out (the tools alone, for a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE="$PWD"
APP="$(cd "${1:-tests/apps/blog}" && pwd)"
say() { printf 'swap_app: %s\n' "$*"; }
fail() { printf 'swap_app: FAILED: %s\n' "$*" >&2; exit 1; }
started=$SECONDS

if [ ! -x "$SOURCE/.venv/bin/python" ]; then
    echo "swap_app: no .venv in $SOURCE: run make install first" >&2
    exit 2
fi
PY="$SOURCE/.venv/bin/python"
work="$(mktemp -d "${TMPDIR:-/tmp}/swap-app.XXXXXX")"
REPO="$work/repo"
holder=""
server=""
finish() {
    local status=$?
    for pid in "$server" "$holder"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [ "${KEEP_SWAP_COPY:-0}" = 1 ]; then
        say "the copy stays in $REPO"
    else
        rm -rf "$work"
    fi
    say "$([ "$status" -eq 0 ] && echo passed || echo "failed (exit $status)") in $((SECONDS - started)) s"
}
trap finish EXIT

gitc() { git -c user.name="swap app" -c user.email="swap-app@localhost" "$@"; }

# An HTTP request from the venv's Python (curl may not be installed): prints the status,
# then the body.
http() {
    "$PY" - "$@" <<'PY'
import json, sys, urllib.error, urllib.request
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
request = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        print(response.status, response.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
PY
}

# Edit a model file: insert LINE after the first line that contains ANCHOR.
add_line_after() {
    "$PY" - "$1" "$2" "$3" <<'PY'
import sys
from pathlib import Path
path, anchor, line = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
lines = path.read_text().splitlines(keepends=True)
at = next(i for i, text in enumerate(lines) if anchor in text)
lines.insert(at + 1, line + "\n")
path.write_text("".join(lines))
PY
}

say "1. a fresh copy of the checkout in $REPO (its files as git sees them; .venv linked)"
mkdir -p "$REPO"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$REPO"
ln -s "$SOURCE/.venv" "$REPO/.venv"
cd "$REPO"
git init -q
gitc add -A
gitc commit -q -m "the service with its example application"

say "2. the port, as docs/adopting.md says: remove the example, copy $APP in"
scripts/remove_example.sh
cp -R "$APP"/. .
.venv/bin/flask db heads
say "3. baseline the inherited history's lint findings, commit"
scripts/lint_migrations.sh --write-baseline "inherited: applied in production before the port" \
    || fail "lint_migrations.sh --write-baseline"
test -f migrations/lint-baseline.txt || fail "no migrations/lint-baseline.txt written"
gitc add -A
gitc commit -q -m "port the application"
ported="$(git rev-parse HEAD)"

if [ "${SWAP_APP_SUITE:-1}" = 0 ]; then
    say "4. make test: skipped (SWAP_APP_SUITE=0)"
else
    say "4. make test: the whole suite on the ported application"
    make test
fi
say "5. make verify-migrations"
make verify-migrations
say "6. the migration lint, with the baseline: passes"
scripts/lint_migrations.sh

# The embedded development server, held up for the rest of the run so that its URL can be
# given to the entrypoint and the rehearsal (every other command finds it on its own).
url_file="$work/embedded-url"
"$PY" - "$url_file" <<'PY' &
import signal, sys
from pathlib import Path
from migration_tools.embedded import embedded_database_url
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with embedded_database_url() as url:
    Path(sys.argv[1]).write_text(url)
    while True:
        signal.pause()
PY
holder=$!
for _ in $(seq 1 600); do
    [ -s "$url_file" ] && break
    kill -0 "$holder" 2>/dev/null || fail "the embedded PostgreSQL did not start"
    sleep 0.1
done
[ -s "$url_file" ] || fail "the embedded PostgreSQL did not start within 60 s"
scratch_url="$("$PY" - "$(cat "$url_file")" <<'PY'
import sys
from backend.config import parse_database_url
from migration_tools import scratch
url = scratch.create_database(parse_database_url(sys.argv[1]), "swap_app_scratch")
print(url.set(drivername="postgresql").render_as_string(hide_password=False))
PY
)"

say "7. the entrypoint on a scratch database: /readyz 200, some rows written, stopped"
port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DATABASE_URL="$scratch_url" PORT="$port" WEB_CONCURRENCY=1 ./entrypoint.sh >"$work/entrypoint.log" 2>&1 &
server=$!
ready=""
for _ in $(seq 1 300); do
    kill -0 "$server" 2>/dev/null || { cat "$work/entrypoint.log" >&2; fail "the entrypoint exited"; }
    if answer="$(http GET "http://127.0.0.1:$port/readyz" 2>/dev/null)" && [ "${answer%% *}" = 200 ]; then
        ready="$answer"
        break
    fi
    sleep 0.2
done
[ -n "$ready" ] || { cat "$work/entrypoint.log" >&2; fail "/readyz never answered 200"; }
say "/readyz: $ready"
grep -q "recorded checksums\|database now at" "$work/entrypoint.log" \
    || fail "the entrypoint logged no migration"
user="$(http POST "http://127.0.0.1:$port/api/users" '{"username": "ada", "email": "ada@example.com"}')"
[ "${user%% *}" = 201 ] || fail "POST /api/users: $user"
post="$(http POST "http://127.0.0.1:$port/api/posts" '{"user_id": 1, "body": "hello"}')"
[ "${post%% *}" = 201 ] || fail "POST /api/posts: $post"
kill -TERM "$server"
wait "$server" || fail "the entrypoint did not exit 0 on SIGTERM"
server=""

say "8. a rehearsal: the scratch database taken back two revisions, rehearsed from there"
DATABASE_URL="$scratch_url" .venv/bin/flask db downgrade -- -2
scripts/rehearse.sh --from-url "$scratch_url" --report "$work/rehearsal.md" >/dev/null
grep -q "Migration rehearsal: passed" "$work/rehearsal.md" || fail "the rehearsal did not pass"

say "9. create_migration: a blog model changed, its migration created"
add_line_after backend/models/user.py "about_me: so.Mapped" \
    "    website: so.Mapped[str | None] = so.mapped_column(sa.String(200))"
scripts/create_migration.sh "add website to users"
created="$(find migrations/versions -name '*_add_website_to_users.py')"
[ -n "$created" ] || fail "no revision file for 'add website to users'"
grep -q "add_column" "$created" || fail "$created adds no column"
scripts/lint_migrations.sh
gitc add -A
gitc commit -q -m "add website to users"

say "10. check_compat: the commit before the change, on this schema"
scripts/check_compat.sh --against "$ported"

say "11. resolve_conflict: two branches each add a revision, merged"
trunk="$(git rev-parse --abbrev-ref HEAD)"
gitc switch -q -c add-post-title
add_line_after backend/models/post.py "body: so.Mapped" \
    "    title: so.Mapped[str | None] = so.mapped_column(sa.String(100))"
scripts/create_migration.sh "add title to posts"
gitc add -A
gitc commit -q -m "add title to posts"
gitc switch -q "$trunk"
gitc switch -q -c add-comment-edited-at
add_line_after backend/models/comment.py "body: so.Mapped" \
    "    edited_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))"
scripts/create_migration.sh "add edited at to comments"
gitc add -A
gitc commit -q -m "add edited at to comments"
gitc merge -q --no-edit add-post-title
heads="$(.venv/bin/flask db heads | grep -c "(head)")"
[ "$heads" = 2 ] || fail "expected two heads after the merge, got $heads"
scripts/resolve_conflict.sh merge -m "merge post title and comment edited at"
heads="$(.venv/bin/flask db heads | grep -c "(head)")"
[ "$heads" = 1 ] || fail "expected one head after resolve_conflict, got $heads"
.venv/bin/flask db current
.venv/bin/flask db check
say "all green"
