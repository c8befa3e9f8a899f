"""What the API tests do over and over: sign up as a client would, then send its token."""

from __future__ import annotations

import sqlalchemy as sa

from backend.extensions import db


def bearer(token: str) -> dict[str, str]:
    """The headers a client sends with every request but signing up."""
    return {"Authorization": f"Bearer {token}"}


def sign_up(client, email="ada@example.com", name="Ada") -> tuple[dict, dict[str, str]]:
    """A new user, as ``POST /api/users`` answers it (token included), and their headers."""
    response = client.post("/api/users", json={"email": email, "name": name})
    assert response.status_code == 201, response.get_json()
    user = response.get_json()
    return user, bearer(user["token"])


def make_project(client, headers, name="Launch") -> dict:
    response = client.post("/api/projects", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def make_task(client, headers, project_id, title="Write it", **extra) -> dict:
    body = {"project_id": project_id, "title": title, **extra}
    response = client.post("/api/tasks", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_error(response, status) -> str:
    """Every failure answers JSON with one line under "error"; returns that line."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    return body["error"]


def count(app, model) -> int:
    """How many rows ``model``'s table holds, read from the database, not through the API."""
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def snapshot(app) -> dict[str, list[tuple]]:
    """Every row of every table the application maps, in id order: equal snapshots mean a
    request wrote nothing."""
    with app.app_context():
        return {table.name: [tuple(row) for row in
                             db.session.execute(sa.select(table).order_by(*table.primary_key))]
                for table in db.metadata.sorted_tables}
