"""Who may call what under /api: the access rules as tables, one case a line.

``pytest tests/api/test_access.py -v`` prints every case as METHOD PATH, who asks, and the
status it must answer. All of them run against the same rows (the ``world`` fixture):

- the owner: a user with a project and a task in it, who has renewed their token once
  (``POST /api/users/me/token``), so the token they signed up with is *a revoked token*;
- another user, with a project and a task of their own.

Paths and bodies name the row they reach: ``<owner's project>``, ``<owner's task>``,
``<owner's id>``, ``<other user's id>``, and ``<missing ...>`` for an id no row has.
Callers: *no token* (no Authorization header), *a malformed header* (the owner's valid token
under another scheme: ``Token <token>``), *an unknown token* (well formed, never issued),
*a revoked token*, *the owner*, *another user*.

Besides its status, every case checks what was written: a read or a refused request leaves
every row of the database as it was, an accepted write changes it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from backend.extensions import db
from backend.models import User
from tests.api.support import (
    assert_error,
    bearer,
    count,
    make_project,
    make_task,
    sign_up,
    snapshot,
)

NO_TOKEN = "with no token"
MALFORMED = "with a malformed header"
UNKNOWN = "with an unknown token"
REVOKED = "with a revoked token"
OWNER = "as the owner"
OTHER = "as another user"
REFUSED_CALLERS = (NO_TOKEN, MALFORMED, UNKNOWN, REVOKED)

MISSING_ID = 999_999
READS = ("GET", "HEAD")


@dataclass
class World:
    owner: dict
    other: dict
    owner_token: str
    revoked_token: str
    other_token: str
    unknown_token: str
    ids: dict[str, int]

    def headers(self, who: str) -> dict[str, str]:
        return {
            NO_TOKEN: {},
            MALFORMED: {"Authorization": f"Token {self.owner_token}"},
            UNKNOWN: bearer(self.unknown_token),
            REVOKED: bearer(self.revoked_token),
            OWNER: bearer(self.owner_token),
            OTHER: bearer(self.other_token),
        }[who]

    def resolve(self, value: Any, **more: int) -> Any:
        """``value`` with every ``<...>`` placeholder replaced by the id it names (``more``
        names a few more: ``id=5`` for ``<id>``)."""
        ids = self.ids | {f"<{name}>": ident for name, ident in more.items()}
        if isinstance(value, dict):
            return {key: self.resolve(item, **more) for key, item in value.items()}
        if isinstance(value, str) and re.fullmatch(r"<[^>]+>", value):
            return ids[value]
        if isinstance(value, str):
            return re.sub(r"<[^>]+>", lambda match: str(ids[match.group()]), value)
        return value


@pytest.fixture
def world(client) -> World:
    owner, first_headers = sign_up(client, "owner@example.com", "Owner")
    project = make_project(client, first_headers, "Owner's project")
    task = make_task(client, first_headers, project["id"], "Owner's task")
    renewed = client.post("/api/users/me/token", headers=first_headers)
    assert renewed.status_code == 200, renewed.get_json()
    other, other_headers = sign_up(client, "other@example.com", "Other")
    other_project = make_project(client, other_headers, "Other's project")
    other_task = make_task(client, other_headers, other_project["id"], "Other's task")
    return World(
        owner=owner, other=other, owner_token=renewed.get_json()["token"],
        revoked_token=owner["token"], other_token=other["token"],
        unknown_token=secrets.token_urlsafe(32),
        ids={"<owner's id>": owner["id"], "<other user's id>": other["id"],
             "<owner's project>": project["id"], "<owner's task>": task["id"],
             "<other user's project>": other_project["id"],
             "<other user's task>": other_task["id"],
             "<missing id>": MISSING_ID, "<missing project>": MISSING_ID,
             "<missing task>": MISSING_ID},
    )


def shown(body: Any) -> str:
    """A JSON body as a case's name shows it, placeholders unquoted."""
    return re.sub(r'"(<[^>]+>)"', r"\1", json.dumps(body))


@dataclass(frozen=True)
class Case:
    """One request and the status it must answer. ``data`` is a raw body, sent with
    ``content_type``; ``json`` a JSON one."""

    method: str
    path: str
    who: str
    status: int
    json: Any = None
    data: str | None = None
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        body = ""
        if self.json is not None:
            body = " " + shown(self.json)
        elif self.content_type:
            body = f" ({re.sub(r'; boundary=.*', '', self.content_type)} body"
            body += ", chunked)" if ("Transfer-Encoding", "chunked") in self.headers else ")"
        elif self.method == "POST":
            body = " (no body)"
        return f"{self.method} {self.path}{body} {self.who} -> {self.status}"

    def send(self, client, world: World):
        headers = {**world.headers(self.who), **dict(self.headers)}
        return client.open(world.resolve(self.path), method=self.method,
                           json=world.resolve(self.json), data=self.data,
                           content_type=self.content_type, headers=headers)


def cases(*items: Case) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", [pytest.param(c, id=str(c)) for c in items])


# Every route under /api, with a body that would succeed for the owner.
NEW_TASK = {"project_id": "<owner's project>", "title": "New"}
SIGN_UP = ("POST", "/api/users", {"email": "new@example.com", "name": "New"})
ROUTES = [
    ("GET", "/api/users/me", None),
    ("GET", "/api/users/<owner's id>", None),
    ("POST", "/api/users/me/token", None),
    ("POST", "/api/projects", {"name": "New"}),
    ("GET", "/api/projects", None),
    ("GET", "/api/projects/<owner's project>", None),
    ("PATCH", "/api/projects/<owner's project>", {"name": "Renamed"}),
    ("DELETE", "/api/projects/<owner's project>", None),
    ("POST", "/api/tasks", NEW_TASK),
    ("GET", "/api/tasks", None),
    ("GET", "/api/tasks/<owner's task>", None),
    ("PATCH", "/api/tasks/<owner's task>", {"status": "done"}),
    ("DELETE", "/api/tasks/<owner's task>", None),
]

# Signing up is the one request anyone may make: a token, valid or not, changes nothing.
SIGN_UP_CASES = [Case(*SIGN_UP[:2], who, 201, json=SIGN_UP[2])
                 for who in (*REFUSED_CALLERS, OWNER)]

# Every other route refuses, with the same 401, anyone who does not send a valid token.
REFUSED_CASES = [Case(method, path, who, 401, json=body)
                 for method, path, body in ROUTES for who in REFUSED_CALLERS]
REFUSED_CASES += [Case("HEAD", "/api/projects/<owner's project>", who, 401)
                  for who in REFUSED_CALLERS]

# With a valid token, a user reaches their own rows, and anyone else's are not there.
OWNER_AND_OTHER_CASES = [
    Case("GET", "/api/users/me", OWNER, 200),
    Case("GET", "/api/users/<owner's id>", OWNER, 200),
    Case("GET", "/api/users/<owner's id>", OTHER, 404),
    Case("GET", "/api/users/<missing id>", OWNER, 404),
    Case("GET", "/api/users", OWNER, 405),  # no one lists users
    Case("POST", "/api/users/me/token", OWNER, 200),
    Case("POST", "/api/users/me/token", OTHER, 200),  # renews the other user's own token

    Case("POST", "/api/projects", OWNER, 201, json={"name": "New"}),
    Case("POST", "/api/projects", OWNER, 400,
         json={"name": "New", "owner_id": "<other user's id>"}),
    Case("POST", "/api/projects", OTHER, 400, json={"name": "New", "owner_id": "<owner's id>"}),
    Case("GET", "/api/projects", OWNER, 200),
    Case("GET", "/api/projects", OTHER, 200),  # what each sees: the tests further down
    Case("GET", "/api/projects/<owner's project>", OWNER, 200),
    Case("GET", "/api/projects/<owner's project>", OTHER, 404),
    Case("GET", "/api/projects/<missing project>", OTHER, 404),
    Case("HEAD", "/api/projects/<owner's project>", OWNER, 200),
    Case("HEAD", "/api/projects/<owner's project>", OTHER, 404),
    Case("PATCH", "/api/projects/<owner's project>", OWNER, 200, json={"name": "Renamed"}),
    Case("PATCH", "/api/projects/<owner's project>", OTHER, 404, json={"name": "Renamed"}),
    Case("PATCH", "/api/projects/<missing project>", OTHER, 404, json={"name": "Renamed"}),
    Case("DELETE", "/api/projects/<owner's project>", OWNER, 204),
    Case("DELETE", "/api/projects/<owner's project>", OTHER, 404),
    Case("DELETE", "/api/projects/<missing project>", OTHER, 404),

    Case("POST", "/api/tasks", OWNER, 201, json=NEW_TASK),
    Case("POST", "/api/tasks", OTHER, 404, json=NEW_TASK),
    Case("POST", "/api/tasks", OTHER, 404,
         json={"project_id": "<missing project>", "title": "New"}),
    Case("GET", "/api/tasks", OWNER, 200),
    Case("GET", "/api/tasks?project_id=<owner's project>", OTHER, 200),  # and lists nothing
    Case("GET", "/api/tasks/<owner's task>", OWNER, 200),
    Case("GET", "/api/tasks/<owner's task>", OTHER, 404),
    Case("GET", "/api/tasks/<missing task>", OTHER, 404),
    Case("PATCH", "/api/tasks/<owner's task>", OWNER, 200, json={"status": "done"}),
    Case("PATCH", "/api/tasks/<owner's task>", OTHER, 404, json={"status": "done"}),
    Case("PATCH", "/api/tasks/<missing task>", OTHER, 404, json={"status": "done"}),
    Case("DELETE", "/api/tasks/<owner's task>", OWNER, 204),
    Case("DELETE", "/api/tasks/<owner's task>", OTHER, 404),
    Case("DELETE", "/api/tasks/<missing task>", OTHER, 404),
]


def assert_outcome(case: Case, response, before: dict, after: dict) -> None:
    """The case's status; a JSON error body on failures; and a write only when accepted."""
    if case.method == "HEAD" or case.status == 204:
        assert response.status_code == case.status, response.get_data(as_text=True)
        assert response.get_data() == b""
    elif case.status >= 400:
        assert_error(response, case.status)
    else:
        assert response.status_code == case.status, response.get_data(as_text=True)
    if case.status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    if case.method in READS or case.status >= 400:
        assert after == before, "a read or a refused request changed the database"
    else:
        assert after != before, "an accepted write changed nothing"


@cases(*SIGN_UP_CASES, *REFUSED_CASES, *OWNER_AND_OTHER_CASES)
def test_access(app, client, world, case):
    before = snapshot(app)

    response = case.send(client, world)

    assert_outcome(case, response, before, snapshot(app))


# --- bodies that are not JSON: refused before anything is read or written --------------

FORM = "name=New&title=New&email=new%40example.com"
MULTIPART = '--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nNew\r\n--b--\r\n'
NOT_JSON = [
    ("text/plain", '{"name": "New", "title": "New", "email": "new@example.com"}'),
    ("application/x-www-form-urlencoded", FORM),
    ("multipart/form-data; boundary=b", MULTIPART),
]
BODY_ROUTES = [
    ("POST", "/api/users", NO_TOKEN),
    ("POST", "/api/users/me/token", OWNER),
    ("POST", "/api/projects", OWNER),
    ("PATCH", "/api/projects/<owner's project>", OWNER),
    ("POST", "/api/tasks", OWNER),
    ("PATCH", "/api/tasks/<owner's task>", OWNER),
]
CONTENT_TYPE_CASES = [
    Case(method, path, who, 415, data=data, content_type=content_type)
    for method, path, who in BODY_ROUTES for content_type, data in NOT_JSON
] + [
    Case("POST", "/api/projects", OWNER, 415, data='{"name": "New"}',
         content_type="text/plain", headers=(("Transfer-Encoding", "chunked"),)),
    Case("POST", "/api/projects", OWNER, 415, data='{"name": "New"}',
         content_type="application/json-patch+json"),
    # Who asks comes first: nothing about a request is looked at without a token.
    Case("POST", "/api/projects", NO_TOKEN, 401, data='{"name": "New"}',
         content_type="text/plain"),
    # A JSON type with parameters is JSON; a POST without a body needs no type at all.
    Case("POST", "/api/projects", OWNER, 201, data='{"name": "New"}',
         content_type="application/json; charset=utf-8"),
    Case("POST", "/api/users/me/token", OWNER, 200),
]


@cases(*CONTENT_TYPE_CASES)
def test_content_type(app, client, world, case):
    before = snapshot(app)

    response = case.send(client, world)

    assert_outcome(case, response, before, snapshot(app))
    if case.status == 415:
        assert "application/json" in response.get_json()["error"]


# --- headers every /api answer carries -------------------------------------------------

HEADER_CASES = [
    Case("POST", "/api/users", NO_TOKEN, 201, json={"email": "new@example.com", "name": "N"}),
    Case("GET", "/api/users/me", OWNER, 200),
    Case("DELETE", "/api/tasks/<owner's task>", OWNER, 204),
    Case("POST", "/api/projects", OWNER, 400, json={}),
    Case("GET", "/api/projects", NO_TOKEN, 401),
    Case("GET", "/api/projects", UNKNOWN, 401),
    Case("GET", "/api/projects/<owner's project>", OTHER, 404),
    Case("GET", "/api/nothing-here", NO_TOKEN, 404),  # from routing: no view ran
    Case("GET", "/api", NO_TOKEN, 404),
    Case("GET", "/api/users", OWNER, 405),  # from routing: listing users is gone
    Case("POST", "/api/projects", OWNER, 415, data="name=New", content_type="text/plain"),
]


@cases(*HEADER_CASES)
def test_every_answer_is_nosniff_and_no_store(client, world, case):
    response = case.send(client, world)

    assert response.status_code == case.status, response.get_data(as_text=True)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    if case.status != 204:
        assert response.mimetype == "application/json"


def test_paths_outside_the_api_do_not_get_the_apis_headers(client):
    response = client.get("/not-the-api")

    assert response.status_code == 404
    assert "X-Content-Type-Options" not in response.headers


# --- someone else's rows -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/projects", "/api/tasks"],
                         ids=lambda path: f"GET {path} lists each user only their own")
def test_a_list_shows_only_the_callers_own_rows(client, world, path):
    own = {"/api/projects": "<owner's project>", "/api/tasks": "<owner's task>"}[path]
    others = {"/api/projects": "<other user's project>", "/api/tasks": "<other user's task>"}

    as_owner = client.get(path, headers=world.headers(OWNER)).get_json()
    as_other = client.get(path, headers=world.headers(OTHER)).get_json()

    assert [row["id"] for row in as_owner["items"]] == [world.ids[own]]
    assert [row["id"] for row in as_other["items"]] == [world.ids[others[path]]]
    assert as_owner["total"] == as_other["total"] == 1


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param("/api/projects?owner_id=<owner's id>", ["<other user's project>"],
                 id="GET /api/projects?owner_id=<owner's id> as another user lists only "
                    "their own"),
    pytest.param("/api/tasks?project_id=<owner's project>", [],
                 id="GET /api/tasks?project_id=<owner's project> as another user lists "
                    "nothing"),
])
def test_a_filter_naming_someone_elses_rows_shows_none_of_them(client, world, query,
                                                                expected):
    response = client.get(world.resolve(query), headers=world.headers(OTHER))

    body = response.get_json()
    assert response.status_code == 200
    assert [row["id"] for row in body["items"]] == [world.ids[name] for name in expected]
    assert body["total"] == len(expected)


REFUSED_WRITES = [
    Case("PATCH", "/api/projects/<owner's project>", OTHER, 404, json={"name": "Taken over"}),
    Case("DELETE", "/api/projects/<owner's project>", OTHER, 404),
    Case("PATCH", "/api/tasks/<owner's task>", OTHER, 404,
         json={"status": "done", "title": "Taken over"}),
    Case("DELETE", "/api/tasks/<owner's task>", OTHER, 404),
]


@cases(*REFUSED_WRITES)
def test_a_refused_write_leaves_the_owners_row_as_the_owner_sees_it(client, world, case):
    path = world.resolve(case.path)
    seen_before = client.get(path, headers=world.headers(OWNER)).get_json()

    response = case.send(client, world)

    assert_error(response, 404)
    seen_after = client.get(path, headers=world.headers(OWNER))
    assert seen_after.status_code == 200 and seen_after.get_json() == seen_before


# ``<id>`` is the owner's row in one request and a missing one in the other; ``noun`` is
# what the 404 names.
ALIKE = [
    ("GET", "/api/users/<id>", None, "user", "<owner's id>"),
    ("GET", "/api/projects/<id>", None, "project", "<owner's project>"),
    ("PATCH", "/api/projects/<id>", {"name": "X"}, "project", "<owner's project>"),
    ("DELETE", "/api/projects/<id>", None, "project", "<owner's project>"),
    ("GET", "/api/tasks/<id>", None, "task", "<owner's task>"),
    ("PATCH", "/api/tasks/<id>", {"status": "done"}, "task", "<owner's task>"),
    ("DELETE", "/api/tasks/<id>", None, "task", "<owner's task>"),
    ("POST", "/api/tasks", {"project_id": "<id>", "title": "T"}, "project",
     "<owner's project>"),
]


@pytest.mark.parametrize(("method", "path", "body", "noun", "owners"), [
    pytest.param(*row, id=f"{row[0]} {row[1]}{' ' + shown(row[2]) if row[2] else ''} "
                          f"{OTHER}: {row[4]} answers as <missing {row[3]}>")
    for row in ALIKE
])
def test_someone_elses_row_answers_exactly_as_a_missing_one(client, world, method, path, body,
                                                            noun, owners):
    """Nothing in the answer tells a row that is someone else's from one that never was."""
    def ask(ident: int):
        return client.open(world.resolve(path, id=ident), method=method,
                           json=world.resolve(body, id=ident), headers=world.headers(OTHER))

    theirs, missing = ask(world.ids[owners]), ask(MISSING_ID)

    assert assert_error(theirs, 404) == f"{noun} {world.ids[owners]} not found"
    assert assert_error(missing, 404) == f"{noun} {MISSING_ID} not found"
    assert headers_but_length(theirs) == headers_but_length(missing)


def headers_but_length(response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name != "Content-Length"}


# --- the token: shown once, stored as a digest, never echoed ------------------------------


def test_the_token_is_shown_once(client):
    user, headers = sign_up(client)

    me = client.get("/api/users/me", headers=headers)
    by_id = client.get(f"/api/users/{user['id']}", headers=headers)

    assert "token" in user
    for response in (me, by_id):
        assert response.status_code == 200 and "token" not in response.get_json()
        assert user["token"] not in response.get_data(as_text=True)


def test_the_database_holds_only_the_tokens_digest(app, client):
    user, _ = sign_up(client)
    token = user["token"]

    with app.app_context():
        token_hash = db.session.scalar(sa.select(User.token_hash).where(User.id == user["id"]))
    rows = snapshot(app)

    assert re.fullmatch(r"[0-9a-f]{64}", token_hash) and token_hash != token
    assert token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(rows)


def test_a_renewed_token_replaces_the_digest_and_the_old_token_fails(app, client):
    user, old = sign_up(client)

    renewed = client.post("/api/users/me/token", headers=old).get_json()

    with app.app_context():
        token_hash = db.session.scalar(sa.select(User.token_hash).where(User.id == user["id"]))
    assert token_hash == hashlib.sha256(renewed["token"].encode()).hexdigest()
    assert_error(client.get("/api/users/me", headers=old), 401)
    assert_error(client.post("/api/users/me/token", headers=old), 401)
    assert client.get("/api/users/me", headers=bearer(renewed["token"])).status_code == 200


def test_a_second_renewal_revokes_the_first_renewed_token(client):
    _, first = sign_up(client)
    second = bearer(client.post("/api/users/me/token", headers=first).get_json()["token"])

    third = bearer(client.post("/api/users/me/token", headers=second).get_json()["token"])

    assert_error(client.get("/api/users/me", headers=second), 401)
    assert_error(client.get("/api/users/me", headers=first), 401)
    assert client.get("/api/users/me", headers=third).status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"],
                         ids=lambda scheme: f"Authorization: {scheme} <token> -> 200")
def test_the_bearer_scheme_is_case_insensitive(client, scheme):
    user, _ = sign_up(client)

    response = client.get("/api/users/me", headers={"Authorization": f"{scheme} {user['token']}"})

    assert response.status_code == 200 and response.get_json()["id"] == user["id"]


def test_blanks_around_the_token_are_ignored(client):
    user, _ = sign_up(client)

    response = client.get("/api/users/me", headers={"Authorization": f"Bearer   {user['token']} "})

    assert response.status_code == 200 and response.get_json()["id"] == user["id"]


# Each maps the user's real token to the Authorization header sent.
BAD_HEADERS = {
    "an empty header": lambda token: "",
    "the scheme alone": lambda token: "Bearer",
    "the scheme and a blank": lambda token: "Bearer ",
    "the token without a scheme": lambda token: token,
    "another scheme (Basic)": lambda token: f"Basic {token}",
    "another scheme (Token)": lambda token: f"Token {token}",
    "a colon after the scheme": lambda token: f"Bearer: {token}",
    "a tab after the scheme": lambda token: f"Bearer\t{token}",
    "two tokens": lambda token: f"Bearer {token} {token}",
    "the token with a character more": lambda token: f"Bearer {token}x",
    "the token a character short": lambda token: f"Bearer {token[:-1]}",
    "the token with a NUL": lambda token: f"Bearer {token}\x00",
    "a 10,000-character token": lambda token: "Bearer " + "a" * 10_000,
    "the token and 10,000 characters more": lambda token: f"Bearer {token}" + "a" * 10_000,
    "a non-ASCII token": lambda token: "Bearer " + "é" * 43,
    "the token with a non-ASCII character": lambda token: f"Bearer {token}é",
    "the token in UTF-8 read as Latin-1": lambda token: f"Bearer {token}ü".encode().decode(
        "latin-1"),
}


@pytest.mark.parametrize("sent", BAD_HEADERS,
                         ids=lambda name: f"POST /api/projects with {name} -> 401")
def test_a_bad_authorization_header_is_a_401_that_echoes_nothing(app, client, sent):
    user, _ = sign_up(client)
    header = BAD_HEADERS[sent](user["token"])
    before = snapshot(app)

    response = client.post("/api/projects", json={"name": "P"},
                           headers={"Authorization": header})

    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    answer = response.get_data(as_text=True) + repr(dict(response.headers))
    assert user["token"][:-1] not in answer
    assert len(header.strip()) < 8 or header.strip() not in answer
    assert snapshot(app) == before


@pytest.mark.parametrize("who", [UNKNOWN, REVOKED, MALFORMED],
                         ids=lambda who: f"GET /api/users/me {who} -> 401, token not echoed")
def test_a_401_never_echoes_the_token_sent(client, world, who):
    token = world.headers(who)["Authorization"].split(" ", 1)[1]

    response = client.get("/api/users/me", headers=world.headers(who))

    assert_error(response, 401)
    assert token not in response.get_data(as_text=True)
    assert token not in repr(dict(response.headers))


def test_a_token_sent_to_sign_up_is_ignored_and_not_echoed(app, client, world):
    response = client.post("/api/users", json={"email": "new@example.com", "name": "New"},
                           headers=world.headers(OWNER))

    body = response.get_json()
    assert response.status_code == 201
    assert body["id"] not in (world.owner["id"], world.other["id"])
    assert body["token"] != world.owner_token and world.owner_token not in response.get_data(
        as_text=True)
    assert count(app, User) == 3
