"""/api/projects: a slug that follows the name, an owner filter, and cascading deletes."""

import pytest


def make_user(client, email="ada@example.com"):
    response = client.post("/api/users", json={"email": email, "name": "Ada"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def make_project(client, owner_id, name="Launch"):
    response = client.post("/api/projects", json={"owner_id": owner_id, "name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def make_task(client, project_id, title="Write it"):
    response = client.post("/api/tasks", json={"project_id": project_id, "title": title})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_error(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]
    return body["error"]


# --- happy paths -------------------------------------------------------------------------


@pytest.mark.parametrize("name, slug", [
    ("My First Project!", "my-first-project"),
    ("  Q3 -- Roadmap  ", "q3-roadmap"),
    ("!!!", "project"),
])
def test_create_project_computes_slug_from_name(client, name, slug):
    owner_id = make_user(client)

    response = client.post("/api/projects", json={"owner_id": owner_id, "name": name})

    body = response.get_json()
    assert response.status_code == 201
    assert body["slug"] == slug
    assert body["owner_id"] == owner_id and body["name"] == name.strip()
    assert response.headers["Location"].endswith(f"/api/projects/{body['id']}")


def test_get_project_returns_what_was_created(client):
    created = make_project(client, make_user(client))

    response = client.get(f"/api/projects/{created['id']}")

    assert response.status_code == 200
    assert response.get_json() == created


def test_list_projects_filters_by_owner(client):
    ada, grace = make_user(client, "ada@example.com"), make_user(client, "grace@example.com")
    mine = [make_project(client, ada, f"A{i}")["id"] for i in range(2)]
    make_project(client, grace, "G")

    body = client.get(f"/api/projects?owner_id={ada}").get_json()

    assert body["total"] == 2
    assert [p["id"] for p in body["items"]] == mine


def test_list_projects_for_an_unknown_owner_is_empty(client):
    make_project(client, make_user(client))

    response = client.get("/api/projects?owner_id=999")

    assert response.status_code == 200
    assert response.get_json()["items"] == [] and response.get_json()["total"] == 0


def test_list_projects_paginates(client):
    owner_id = make_user(client)
    ids = [make_project(client, owner_id, f"P{i}")["id"] for i in range(3)]

    body = client.get("/api/projects?page=2&per_page=2").get_json()

    assert body == {"items": body["items"], "page": 2, "per_page": 2, "total": 3}
    assert [p["id"] for p in body["items"]] == ids[2:]


def test_patch_name_recomputes_slug(client):
    project = make_project(client, make_user(client), "Old Name")

    response = client.patch(f"/api/projects/{project['id']}", json={"name": "Brand New Name"})

    body = response.get_json()
    assert response.status_code == 200
    assert body["name"] == "Brand New Name" and body["slug"] == "brand-new-name"
    assert client.get(f"/api/projects/{project['id']}").get_json()["slug"] == "brand-new-name"


def test_delete_project_answers_204_and_removes_it(client):
    project = make_project(client, make_user(client))

    response = client.delete(f"/api/projects/{project['id']}")

    assert response.status_code == 204 and response.get_data() == b""
    assert_error(client.get(f"/api/projects/{project['id']}"), 404)
    assert_error(client.delete(f"/api/projects/{project['id']}"), 404)


def test_delete_project_deletes_its_tasks_and_no_others(client):
    owner_id = make_user(client)
    doomed, kept = make_project(client, owner_id, "Doomed"), make_project(client, owner_id, "Kept")
    doomed_tasks = [make_task(client, doomed["id"], f"T{i}")["id"] for i in range(2)]
    kept_task = make_task(client, kept["id"])["id"]

    client.delete(f"/api/projects/{doomed['id']}")

    for task_id in doomed_tasks:
        assert_error(client.get(f"/api/tasks/{task_id}"), 404)
    remaining = client.get("/api/tasks").get_json()
    assert [t["id"] for t in remaining["items"]] == [kept_task] and remaining["total"] == 1


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"name": "P"}, "owner_id"),
    ({"owner_id": 1}, "name"),
    ({"owner_id": "1", "name": "P"}, "owner_id"),
    ({"owner_id": True, "name": "P"}, "owner_id"),
    ({"owner_id": 1.0, "name": "P"}, "owner_id"),
    ({"owner_id": 0, "name": "P"}, "owner_id"),
    ({"owner_id": 2**63, "name": "P"}, "owner_id"),
    ({"owner_id": 1, "name": 42}, "name"),
    ({"owner_id": 1, "name": ""}, "name"),
    ({"owner_id": 1, "name": "n" * 201}, "name"),
    ({"owner_id": 1, "name": "P", "slug": "p"}, "slug"),
])
def test_create_project_rejects_bad_fields(client, body, field):
    make_user(client)

    response = client.post("/api/projects", json=body)

    assert field in assert_error(response, 400)
    assert client.get("/api/projects").get_json()["total"] == 0


def test_create_project_for_an_unknown_owner_is_not_found(client):
    response = client.post("/api/projects", json={"owner_id": 999, "name": "P"})

    assert "999" in assert_error(response, 404)


def test_create_project_rejects_a_non_json_body(client):
    response = client.post("/api/projects", data="owner_id=1", content_type="text/plain")

    assert_error(response, 400)


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_project_is_not_found(client, method):
    response = getattr(client, method)("/api/projects/999", json={"name": "X"})

    assert "999" in assert_error(response, 404)


@pytest.mark.parametrize("body, fragment", [
    ({}, "name"),
    ({"name": None}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "X", "slug": "custom"}, "slug"),
    ({"name": "X", "owner_id": 2}, "owner_id"),
])
def test_patch_project_rejects_bad_fields_and_keeps_the_row(client, body, fragment):
    project = make_project(client, make_user(client), "Keep Me")

    response = client.patch(f"/api/projects/{project['id']}", json=body)

    assert fragment in assert_error(response, 400)
    assert client.get(f"/api/projects/{project['id']}").get_json() == project


@pytest.mark.parametrize("query", ["owner_id=abc", "owner_id=0", "per_page=101", "page=0"])
def test_list_projects_rejects_bad_query(client, query):
    response = client.get(f"/api/projects?{query}")

    assert query.split("=")[0] in assert_error(response, 400)


def test_post_to_a_single_project_is_method_not_allowed(client):
    project = make_project(client, make_user(client))

    response = client.post(f"/api/projects/{project['id']}", json={})

    assert_error(response, 405)
    assert "PATCH" in response.headers["Allow"]
