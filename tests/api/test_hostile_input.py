"""Input meant to break the service gets a 4xx with one JSON line, never a 500."""

from __future__ import annotations

import json

import pytest

from backend import MAX_BODY_BYTES, create_app
from backend.config import Config
from backend.models.project import SLUG_MAX
from tests.api.test_users import assert_error, make_user


def make_project(client, name="Apollo"):
    owner = make_user(client)
    response = client.post("/api/projects", json={"owner_id": owner["id"], "name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def post_raw(client, path: str, data: str | bytes):
    return client.post(path, data=data, content_type="application/json")


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


def test_a_lone_surrogate_in_project_and_task_text_is_a_400(client):
    project = make_project(client)

    responses = [
        post_raw(client, "/api/projects", json.dumps({"owner_id": project["owner_id"],
                                                      "name": "\ud800"})),
        client.patch(f"/api/projects/{project['id']}", data=json.dumps({"name": "x\ud800"}),
                     content_type="application/json"),
        post_raw(client, "/api/tasks", json.dumps({"project_id": project["id"],
                                                   "title": "\udc00"})),
    ]

    for response in responses:
        assert "valid Unicode" in assert_error(response, 400)


def test_a_slug_fits_its_column_whatever_the_name(client):
    # 'İ' lower-cases to two characters; 200 of them would make a 400-character slug.
    name = "İ" * 200

    project = make_project(client, name=name)

    assert project["name"] == name
    assert 0 < len(project["slug"]) <= SLUG_MAX
    renamed = client.patch(f"/api/projects/{project['id']}", json={"name": "İ" * 150})
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
                                  "/api/tasks/%D9%A1"])
def test_ids_are_ascii_digits_only(client, path):
    make_user(client)  # user 1 exists; a fullwidth or Arabic-Indic one must not reach it

    assert_error(client.get(path), 404)


def test_a_schema_not_migrated_answers_503_not_500(empty_db):
    app = create_app(Config(database_url=empty_db))

    response = app.test_client().get("/api/users")

    message = assert_error(response, 503)
    assert message.startswith("database schema not ready for this code")
    assert response.headers["Retry-After"] == "1"
