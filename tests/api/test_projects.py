"""/api/projects: a slug that follows the name, a caller's own projects only, cascading
deletes; plus the pagination every list under /api shares."""

import pytest

from backend.models import Project
from tests.api.support import assert_error, count, make_project, make_task, sign_up

# --- happy paths -------------------------------------------------------------------------


@pytest.mark.parametrize("name, slug", [
    ("My First Project!", "my-first-project"),
    ("  Q3 -- Roadmap  ", "q3-roadmap"),
    ("!!!", "project"),
])
def test_create_project_computes_slug_from_name(client, name, slug):
    owner, headers = sign_up(client)

    response = client.post("/api/projects", json={"name": name}, headers=headers)

    body = response.get_json()
    assert response.status_code == 201
    assert body["slug"] == slug
    assert body["owner_id"] == owner["id"] and body["name"] == name.strip()
    assert response.headers["Location"].endswith(f"/api/projects/{body['id']}")


def test_create_project_belongs_to_the_user_whose_token_it_carries(client):
    sign_up(client, "ada@example.com")
    grace, headers = sign_up(client, "grace@example.com")

    project = make_project(client, headers)

    assert project["owner_id"] == grace["id"]


def test_get_project_returns_what_was_created(client):
    _, headers = sign_up(client)
    created = make_project(client, headers)

    response = client.get(f"/api/projects/{created['id']}", headers=headers)

    assert response.status_code == 200
    assert response.get_json() == created


def test_list_projects_shows_only_the_callers_own(client):
    _, ada = sign_up(client, "ada@example.com")
    _, grace = sign_up(client, "grace@example.com")
    mine = [make_project(client, ada, f"A{i}")["id"] for i in range(2)]
    make_project(client, grace, "G")

    body = client.get("/api/projects", headers=ada).get_json()

    assert body["total"] == 2
    assert [p["id"] for p in body["items"]] == mine


def test_list_projects_for_a_user_without_any_is_empty(client):
    ada, ada_headers = sign_up(client, "ada@example.com")
    make_project(client, ada_headers)
    _, grace = sign_up(client, "grace@example.com")

    response = client.get(f"/api/projects?owner_id={ada['id']}", headers=grace)

    assert response.status_code == 200
    assert response.get_json()["items"] == [] and response.get_json()["total"] == 0


def test_list_projects_defaults_to_first_page_of_twenty(client):
    _, headers = sign_up(client)
    projects = [make_project(client, headers, f"P{i}") for i in range(3)]

    response = client.get("/api/projects", headers=headers)

    body = response.get_json()
    assert response.status_code == 200
    assert body["page"] == 1 and body["per_page"] == 20 and body["total"] == 3
    assert [p["id"] for p in body["items"]] == [p["id"] for p in projects]


def test_list_projects_paginates(client):
    _, headers = sign_up(client)
    ids = [make_project(client, headers, f"P{i}")["id"] for i in range(3)]

    body = client.get("/api/projects?page=2&per_page=2", headers=headers).get_json()

    assert body == {"items": body["items"], "page": 2, "per_page": 2, "total": 3}
    assert [p["id"] for p in body["items"]] == ids[2:]


def test_list_projects_pages_through_in_id_order(client):
    _, headers = sign_up(client)
    ids = [make_project(client, headers, f"P{i}")["id"] for i in range(5)]

    first = client.get("/api/projects?page=1&per_page=2", headers=headers).get_json()
    last = client.get("/api/projects?page=3&per_page=2", headers=headers).get_json()

    assert [p["id"] for p in first["items"]] == ids[:2]
    assert [p["id"] for p in last["items"]] == ids[4:]
    assert first["total"] == last["total"] == 5
    assert last["page"] == 3 and last["per_page"] == 2


@pytest.mark.parametrize("page", ["4", str(2**63 - 1)])
def test_list_projects_past_the_end_is_empty_not_an_error(client, page):
    _, headers = sign_up(client)
    make_project(client, headers)

    response = client.get(f"/api/projects?page={page}&per_page=100", headers=headers)

    body = response.get_json()
    assert response.status_code == 200
    assert body["items"] == [] and body["total"] == 1


def test_list_projects_accepts_the_largest_page_size(client):
    _, headers = sign_up(client)
    make_project(client, headers)

    response = client.get("/api/projects?per_page=100", headers=headers)

    assert response.status_code == 200
    assert response.get_json()["per_page"] == 100


def test_patch_name_recomputes_slug(client):
    _, headers = sign_up(client)
    project = make_project(client, headers, "Old Name")

    response = client.patch(f"/api/projects/{project['id']}", json={"name": "Brand New Name"},
                            headers=headers)

    body = response.get_json()
    assert response.status_code == 200
    assert body["name"] == "Brand New Name" and body["slug"] == "brand-new-name"
    after = client.get(f"/api/projects/{project['id']}", headers=headers).get_json()
    assert after["slug"] == "brand-new-name"


def test_delete_project_answers_204_and_removes_it(client):
    _, headers = sign_up(client)
    project = make_project(client, headers)

    response = client.delete(f"/api/projects/{project['id']}", headers=headers)

    assert response.status_code == 204 and response.get_data() == b""
    assert_error(client.get(f"/api/projects/{project['id']}", headers=headers), 404)
    assert_error(client.delete(f"/api/projects/{project['id']}", headers=headers), 404)


def test_delete_project_deletes_its_tasks_and_no_others(client):
    _, headers = sign_up(client)
    doomed = make_project(client, headers, "Doomed")
    kept = make_project(client, headers, "Kept")
    doomed_tasks = [make_task(client, headers, doomed["id"], f"T{i}")["id"] for i in range(2)]
    kept_task = make_task(client, headers, kept["id"])["id"]

    client.delete(f"/api/projects/{doomed['id']}", headers=headers)

    for task_id in doomed_tasks:
        assert_error(client.get(f"/api/tasks/{task_id}", headers=headers), 404)
    remaining = client.get("/api/tasks", headers=headers).get_json()
    assert [t["id"] for t in remaining["items"]] == [kept_task] and remaining["total"] == 1


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({}, "name"),
    ({"name": 42}, "name"),
    ({"name": ""}, "name"),
    ({"name": "n" * 201}, "name"),
    ({"name": "P", "slug": "p"}, "slug"),
    # The owner is whoever the token names; a body cannot choose one, not even oneself.
    ({"owner_id": 1, "name": "P"}, "owner_id"),
    ({"owner_id": 2, "name": "P"}, "owner_id"),
    ({"owner_id": "1", "name": "P"}, "owner_id"),
    ({"owner_id": 2**63, "name": "P"}, "owner_id"),
])
def test_create_project_rejects_bad_fields(app, client, body, field):
    sign_up(client, "ada@example.com")
    _, headers = sign_up(client, "grace@example.com")

    response = client.post("/api/projects", json=body, headers=headers)

    assert field in assert_error(response, 400)
    assert count(app, Project) == 0


def test_create_project_rejects_a_non_json_body(app, client):
    _, headers = sign_up(client)

    response = client.post("/api/projects", data="name=P", content_type="text/plain",
                           headers=headers)

    assert_error(response, 415)
    assert count(app, Project) == 0


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_project_is_not_found(client, method):
    _, headers = sign_up(client)

    response = getattr(client, method)("/api/projects/999", json={"name": "X"}, headers=headers)

    assert "999" in assert_error(response, 404)


@pytest.mark.parametrize("body, fragment", [
    ({}, "name"),
    ({"name": None}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "X", "slug": "custom"}, "slug"),
    ({"name": "X", "owner_id": 2}, "owner_id"),
])
def test_patch_project_rejects_bad_fields_and_keeps_the_row(client, body, fragment):
    _, headers = sign_up(client)
    project = make_project(client, headers, "Keep Me")

    response = client.patch(f"/api/projects/{project['id']}", json=body, headers=headers)

    assert fragment in assert_error(response, 400)
    assert client.get(f"/api/projects/{project['id']}", headers=headers).get_json() == project


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
    _, headers = sign_up(client)

    response = client.get(f"/api/projects?{query}", headers=headers)

    assert name in assert_error(response, 400)


def test_post_to_a_single_project_is_method_not_allowed(client):
    _, headers = sign_up(client)
    project = make_project(client, headers)

    response = client.post(f"/api/projects/{project['id']}", json={}, headers=headers)

    assert_error(response, 405)
    assert "PATCH" in response.headers["Allow"]
