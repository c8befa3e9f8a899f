"""Input meant to break the service gets a 4xx with one JSON line, never a 500."""

from __future__ import annotations

import json

import pytest

from backend import MAX_BODY_BYTES, create_app
from backend.config import Config
from backend.models.project import SLUG_MAX
from tests.api.support import assert_error, bearer, make_project, make_task, sign_up


def post_raw(client, path: str, data: str | bytes, headers=None):
    return client.post(path, data=data, content_type="application/json", headers=headers)


@pytest.mark.parametrize("depth", [1_000, 30_000])
def test_deeply_nested_json_is_a_400(client, depth):
    response = post_raw(client, "/api/users", "[" * depth + "]" * depth)

    assert "JSON object" in assert_error(response, 400)


@pytest.mark.parametrize(("path", "body"), [
    ("/api/users", {"email": "a\ud800@example.com", "name": "Ada"}),
    ("/api/users", {"email": "ada@example.com", "name": "A\udfffda"}),
])
def test_a_lone_surrogate_in_a_string_is_a_400(client, path, body):
    # json.dumps escapes the surrogate as \ud800: valid JSON, not valid Unicode text.
    response = post_raw(client, path, json.dumps(body))

    assert "valid Unicode" in assert_error(response, 400)


def test_a_lone_surrogate_in_project_and_task_text_is_a_400(client, auth):
    project = make_project(client, auth)

    responses = [
        post_raw(client, "/api/projects", json.dumps({"name": "\ud800"}), auth),
        client.patch(f"/api/projects/{project['id']}", data=json.dumps({"name": "x\ud800"}),
                     content_type="application/json", headers=auth),
        post_raw(client, "/api/tasks", json.dumps({"project_id": project["id"],
                                                   "title": "\udc00"}), auth),
    ]

    for response in responses:
        assert "valid Unicode" in assert_error(response, 400)


def test_a_slug_fits_its_column_whatever_the_name(client, auth):
    # 'İ' lower-cases to two characters; 200 of them would make a 400-character slug.
    name = "İ" * 200

    project = make_project(client, auth, name=name)

    assert project["name"] == name
    assert 0 < len(project["slug"]) <= SLUG_MAX
    renamed = client.patch(f"/api/projects/{project['id']}", json={"name": "İ" * 150},
                           headers=auth)
    assert renamed.status_code == 200 and len(renamed.get_json()["slug"]) <= SLUG_MAX


def test_a_body_over_the_limit_is_a_413_and_is_not_echoed(client):
    body = json.dumps({"email": "a@example.com", "name": "x" * MAX_BODY_BYTES})

    response = post_raw(client, "/api/users", body)

    assert "Too Large" in assert_error(response, 413)
    assert len(response.get_data()) < 200


def test_many_unknown_fields_are_named_briefly(client):
    body = {f"field_{i}_{'x' * 500}": i for i in range(50)} | {"email": "a@b.c", "name": "n"}

    message = assert_error(client.post("/api/users", json=body), 400)

    assert message.startswith("unknown field(s)") and "and 45 more" in message
    assert len(message) < 400


@pytest.mark.parametrize("path", ["/api/users/%EF%BC%91", "/api/users/%C2%B9",
                                  "/api/projects/%EF%BC%91", "/api/tasks/%D9%A1"])
def test_ids_are_ascii_digits_only(client, path):
    # User, project and task 1 exist and are the caller's: a fullwidth, superscript or
    # Arabic-Indic one must not reach them.
    user, headers = sign_up(client)
    project = make_project(client, headers)
    task = make_task(client, headers, project["id"])
    assert user["id"] == project["id"] == task["id"] == 1

    response = client.get(path, headers=headers)

    assert_error(response, 404)


@pytest.mark.parametrize(("method", "path", "body", "headers"), [
    ("post", "/api/users", {"email": "ada@example.com", "name": "Ada"}, None),
    # Looking up the token is the first thing such a request asks the database.
    ("get", "/api/users/me", None, bearer("t" * 43)),
], ids=["signing up", "with a token"])
def test_a_schema_not_migrated_answers_503_not_500(empty_db, method, path, body, headers):
    app = create_app(Config(database_url=empty_db))

    response = getattr(app.test_client(), method)(path, json=body, headers=headers)

    message = assert_error(response, 503)
    assert message.startswith("database schema not ready for this code")
    assert response.headers["Retry-After"] == "1"
