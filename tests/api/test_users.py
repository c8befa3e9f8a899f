"""/api/users: signing up, reading oneself and renewing one's token; plus the JSON errors
every /api endpoint shares."""

import pytest
from werkzeug.exceptions import Conflict

from backend.models import User
from tests.api.support import assert_error, bearer, count, sign_up

# --- happy paths -------------------------------------------------------------------------


def test_create_user_returns_it_with_an_id_a_token_and_location(client):
    response = client.post("/api/users", json={"email": "ada@example.com", "name": "Ada"})

    body = response.get_json()
    assert response.status_code == 201
    assert set(body) == {"id", "email", "name", "created_at", "token"}
    assert body["email"] == "ada@example.com" and body["name"] == "Ada"
    assert isinstance(body["id"], int) and body["created_at"]
    assert isinstance(body["token"], str) and len(body["token"]) >= 43
    assert response.headers["Location"].endswith(f"/api/users/{body['id']}")


def test_each_user_gets_a_different_token(client):
    ada, _ = sign_up(client, "ada@example.com")
    grace, _ = sign_up(client, "grace@example.com")

    assert ada["token"] != grace["token"]


def test_create_user_strips_surrounding_blanks(client):
    body, _ = sign_up(client, email="  ada@example.com ", name="  Ada  ")

    assert body["email"] == "ada@example.com" and body["name"] == "Ada"


def test_get_user_returns_what_was_created_without_the_token(client):
    created, headers = sign_up(client)

    response = client.get(f"/api/users/{created['id']}", headers=headers)

    assert response.status_code == 200
    assert response.get_json() == {k: v for k, v in created.items() if k != "token"}


def test_get_me_returns_the_user_the_token_belongs_to(client):
    sign_up(client, "ada@example.com")
    grace, headers = sign_up(client, "grace@example.com", "Grace")

    response = client.get("/api/users/me", headers=headers)

    assert response.status_code == 200
    assert response.get_json() == {k: v for k, v in grace.items() if k != "token"}


def test_a_new_token_replaces_the_old_one_at_once(client):
    user, old_headers = sign_up(client)

    response = client.post("/api/users/me/token", headers=old_headers)

    body = response.get_json()
    assert response.status_code == 200
    assert body["id"] == user["id"] and body["token"] != user["token"]
    assert client.get("/api/users/me", headers=bearer(body["token"])).status_code == 200
    assert_error(client.get("/api/users/me", headers=old_headers), 401)


def test_longest_allowed_name_and_email_are_accepted(client):
    email = "a" * (320 - len("@example.com")) + "@example.com"

    body, _ = sign_up(client, email=email, name="n" * 200)

    assert len(body["email"]) == 320 and len(body["name"]) == 200


# --- bad input ---------------------------------------------------------------------------


def test_duplicate_email_is_a_conflict_and_leaves_the_service_usable(app, client):
    sign_up(client)

    response = client.post("/api/users", json={"email": "ada@example.com", "name": "Other"})

    assert "ada@example.com" in assert_error(response, 409)
    assert count(app, User) == 1
    sign_up(client, email="grace@example.com", name="Grace")  # the session was rolled back


def test_duplicate_email_rolls_back_the_session_it_failed_in(app, client):
    from backend.api.users import create_user
    from backend.extensions import db

    sign_up(client)
    body = {"email": "ada@example.com", "name": "Other"}

    with app.test_request_context("/api/users", method="POST", json=body):
        with pytest.raises(Conflict):
            create_user()
        # Without a rollback, this same session would refuse every further statement.
        rows = db.session.scalar(db.select(db.func.count()).select_from(User))

    assert rows == 1


@pytest.mark.parametrize("body, field", [
    ({"name": "Ada"}, "email"),
    ({"email": "ada@example.com"}, "name"),
    ({}, "email"),
])
def test_missing_fields_are_rejected(client, body, field):
    response = client.post("/api/users", json=body)

    assert field in assert_error(response, 400)


@pytest.mark.parametrize("body, field", [
    ({"email": 5, "name": "Ada"}, "email"),
    ({"email": "ada@example.com", "name": None}, "name"),
    ({"email": "ada@example.com", "name": True}, "name"),
    ({"email": "ada@example.com", "name": ["Ada"]}, "name"),
    ({"email": "ada@example.com", "name": ""}, "name"),
    ({"email": "ada@example.com", "name": "   "}, "name"),
    ({"email": "ada@example.com", "name": "n" * 201}, "name"),
    ({"email": "a" * 321 + "@example.com", "name": "Ada"}, "email"),
    ({"email": "not-an-address", "name": "Ada"}, "email"),
    ({"email": "ada@", "name": "Ada"}, "email"),
    ({"email": "a da@example.com", "name": "Ada"}, "email"),
    ({"email": "ada@example.com", "name": "A\x00da"}, "name"),
])
def test_bad_field_values_are_rejected(app, client, body, field):
    response = client.post("/api/users", json=body)

    assert field in assert_error(response, 400)
    assert count(app, User) == 0


@pytest.mark.parametrize("field", ["admin", "token", "token_hash", "id"])
def test_unknown_fields_are_rejected(app, client, field):
    response = client.post("/api/users", json={"email": "a@b.c", "name": "A", field: "x"})

    assert field in assert_error(response, 400)
    assert count(app, User) == 0


@pytest.mark.parametrize("data", [
    "{not json",
    '["ada@example.com", "Ada"]',
    "null",
    "",
])
def test_a_json_body_that_is_not_a_json_object_is_rejected(client, data):
    response = client.post("/api/users", data=data, content_type="application/json")

    assert "JSON object" in assert_error(response, 400)


@pytest.mark.parametrize("data, content_type", [
    ("email=a@b.c&name=A", "application/x-www-form-urlencoded"),
    ('{"email": "a@b.c", "name": "A"}', "text/plain"),
])
def test_a_body_that_is_not_typed_as_json_is_unsupported(app, client, data, content_type):
    response = client.post("/api/users", data=data, content_type=content_type)

    assert "application/json" in assert_error(response, 415)
    assert count(app, User) == 0


@pytest.mark.parametrize("user_id", ["999", str(2**64)])
def test_unknown_user_is_not_found(client, user_id):
    _, headers = sign_up(client)

    response = client.get(f"/api/users/{user_id}", headers=headers)

    assert user_id in assert_error(response, 404)


def test_listing_users_is_not_a_route(client):
    _, headers = sign_up(client)

    response = client.get("/api/users", headers=headers)

    assert_error(response, 405)
    assert "GET" not in response.headers["Allow"] and "POST" in response.headers["Allow"]


# --- errors Flask raises itself ----------------------------------------------------------


def test_unknown_api_path_answers_json(client):
    _, headers = sign_up(client)

    response = client.get("/api/nothing-here", headers=headers)

    assert "/api/nothing-here" in assert_error(response, 404)


def test_non_numeric_id_in_the_url_answers_json_404(client):
    _, headers = sign_up(client)

    response = client.get("/api/users/abc", headers=headers)

    assert_error(response, 404)


def test_wrong_method_answers_json_405_with_allow(client):
    response = client.delete("/api/users")

    assert "DELETE" in assert_error(response, 405)
    assert "POST" in response.headers["Allow"]


def test_paths_outside_the_api_keep_flasks_own_errors(client):
    response = client.get("/not-the-api")

    assert response.status_code == 404
    assert response.get_json(silent=True) is None
