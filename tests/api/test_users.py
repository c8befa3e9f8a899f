"""/api/users, plus the behaviour every /api endpoint shares: pagination and JSON errors."""

import pytest
from werkzeug.exceptions import Conflict


def make_user(client, email="ada@example.com", name="Ada"):
    response = client.post("/api/users", json={"email": email, "name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_error(response, status):
    """Every failure answers JSON with one line under "error"."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    return body["error"]


# --- happy paths -------------------------------------------------------------------------


def test_create_user_returns_it_with_an_id_and_location(client):
    response = client.post("/api/users", json={"email": "ada@example.com", "name": "Ada"})

    body = response.get_json()
    assert response.status_code == 201
    assert body["email"] == "ada@example.com" and body["name"] == "Ada"
    assert isinstance(body["id"], int) and body["created_at"]
    assert response.headers["Location"].endswith(f"/api/users/{body['id']}")


def test_create_user_strips_surrounding_blanks(client):
    body = make_user(client, email="  ada@example.com ", name="  Ada  ")

    assert body["email"] == "ada@example.com" and body["name"] == "Ada"


def test_get_user_returns_what_was_created(client):
    created = make_user(client)

    response = client.get(f"/api/users/{created['id']}")

    assert response.status_code == 200
    assert response.get_json() == created


def test_list_users_defaults_to_first_page_of_twenty(client):
    users = [make_user(client, email=f"u{i}@example.com", name=f"U{i}") for i in range(3)]

    response = client.get("/api/users")

    body = response.get_json()
    assert response.status_code == 200
    assert body["page"] == 1 and body["per_page"] == 20 and body["total"] == 3
    assert [u["id"] for u in body["items"]] == [u["id"] for u in users]


def test_list_users_pages_through_in_id_order(client):
    ids = [make_user(client, email=f"u{i}@example.com", name=f"U{i}")["id"] for i in range(5)]

    first = client.get("/api/users?page=1&per_page=2").get_json()
    last = client.get("/api/users?page=3&per_page=2").get_json()

    assert [u["id"] for u in first["items"]] == ids[:2]
    assert [u["id"] for u in last["items"]] == ids[4:]
    assert first["total"] == last["total"] == 5
    assert last["page"] == 3 and last["per_page"] == 2


@pytest.mark.parametrize("page", ["4", str(2**63 - 1)])
def test_list_users_past_the_end_is_empty_not_an_error(client, page):
    make_user(client)

    response = client.get(f"/api/users?page={page}&per_page=100")

    body = response.get_json()
    assert response.status_code == 200
    assert body["items"] == [] and body["total"] == 1


def test_list_users_accepts_the_largest_page_size(client):
    make_user(client)

    response = client.get("/api/users?per_page=100")

    assert response.status_code == 200
    assert response.get_json()["per_page"] == 100


def test_longest_allowed_name_and_email_are_accepted(client):
    email = "a" * (320 - len("@example.com")) + "@example.com"

    body = make_user(client, email=email, name="n" * 200)

    assert len(body["email"]) == 320 and len(body["name"]) == 200


# --- bad input ---------------------------------------------------------------------------


def test_duplicate_email_is_a_conflict_and_leaves_the_service_usable(client):
    make_user(client)

    response = client.post("/api/users", json={"email": "ada@example.com", "name": "Other"})

    assert "ada@example.com" in assert_error(response, 409)
    assert client.get("/api/users").get_json()["total"] == 1
    make_user(client, email="grace@example.com", name="Grace")  # the session was rolled back


def test_duplicate_email_rolls_back_the_session_it_failed_in(app, client):
    from backend.api.users import create_user
    from backend.extensions import db
    from backend.models import User

    make_user(client)
    body = {"email": "ada@example.com", "name": "Other"}

    with app.test_request_context("/api/users", method="POST", json=body):
        with pytest.raises(Conflict):
            create_user()
        # Without a rollback, this same session would refuse every further statement.
        count = db.session.scalar(db.select(db.func.count()).select_from(User))

    assert count == 1


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
def test_bad_field_values_are_rejected(client, body, field):
    response = client.post("/api/users", json=body)

    assert field in assert_error(response, 400)
    assert client.get("/api/users").get_json()["total"] == 0


def test_unknown_fields_are_rejected(client):
    response = client.post("/api/users", json={"email": "a@b.c", "name": "A", "admin": True})

    assert "admin" in assert_error(response, 400)


@pytest.mark.parametrize("data, content_type", [
    ("email=a@b.c&name=A", "application/x-www-form-urlencoded"),
    ("not json", "text/plain"),
    ("{not json", "application/json"),
    ('["ada@example.com", "Ada"]', "application/json"),
    ("null", "application/json"),
    ("", "application/json"),
])
def test_a_body_that_is_not_a_json_object_is_rejected(client, data, content_type):
    response = client.post("/api/users", data=data, content_type=content_type)

    assert "JSON object" in assert_error(response, 400)


@pytest.mark.parametrize("user_id", ["999", str(2**64)])
def test_unknown_user_is_not_found(client, user_id):
    response = client.get(f"/api/users/{user_id}")

    assert user_id in assert_error(response, 404)


@pytest.mark.parametrize("query, name", [
    ("per_page=101", "per_page"),
    ("per_page=0", "per_page"),
    ("page=0", "page"),
    ("page=-1", "page"),
    ("page=abc", "page"),
    ("page=1.5", "page"),
    ("page=+1", "page"),
    ("page=", "page"),
    ("page=" + str(2**63), "page"),
    ("per_page=" + "9" * 5000, "per_page"),
])
def test_bad_pagination_is_rejected(client, query, name):
    response = client.get(f"/api/users?{query}")

    assert name in assert_error(response, 400)


# --- errors Flask raises itself ----------------------------------------------------------


def test_unknown_api_path_answers_json(client):
    response = client.get("/api/nothing-here")

    assert "/api/nothing-here" in assert_error(response, 404)


def test_non_numeric_id_in_the_url_answers_json_404(client):
    response = client.get("/api/users/abc")

    assert_error(response, 404)


def test_wrong_method_answers_json_405_with_allow(client):
    response = client.delete("/api/users")

    assert "DELETE" in assert_error(response, 405)
    assert "POST" in response.headers["Allow"] and "GET" in response.headers["Allow"]


def test_paths_outside_the_api_keep_flasks_own_errors(client):
    response = client.get("/not-the-api")

    assert response.status_code == 404
    assert response.get_json(silent=True) is None
