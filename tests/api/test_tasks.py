"""/api/tasks: statuses, due dates, filters and partial updates, in one's own projects."""

import pytest

from backend.models import Task
from tests.api.support import assert_error, count, make_project, make_task, sign_up


def new_project(client, headers, name="P") -> int:
    return make_project(client, headers, name)["id"]


# --- happy paths -------------------------------------------------------------------------


def test_create_task_defaults_to_todo_without_a_due_date(client, auth):
    project_id = new_project(client, auth)

    response = client.post("/api/tasks", json={"project_id": project_id, "title": "Write"},
                           headers=auth)

    body = response.get_json()
    assert response.status_code == 201
    assert body["project_id"] == project_id and body["title"] == "Write"
    assert body["status"] == "todo" and body["due_date"] is None
    assert response.headers["Location"].endswith(f"/api/tasks/{body['id']}")


def test_create_task_with_status_and_due_date(client, auth):
    project_id = new_project(client, auth)

    body = make_task(client, auth, project_id, status="doing", due_date="2024-02-29")

    assert body["status"] == "doing" and body["due_date"] == "2024-02-29"
    assert client.get(f"/api/tasks/{body['id']}", headers=auth).get_json() == body


def test_longest_allowed_title_is_accepted(client, auth):
    body = make_task(client, auth, new_project(client, auth), title="t" * 500)

    assert len(body["title"]) == 500


def test_list_tasks_filters_by_project_and_status(client, auth):
    first = new_project(client, auth, "P")
    second = new_project(client, auth, "Q")
    wanted = make_task(client, auth, first, "A", status="done")["id"]
    make_task(client, auth, first, "B", status="todo")
    make_task(client, auth, second, "C", status="done")

    by_project = client.get(f"/api/tasks?project_id={first}", headers=auth).get_json()
    by_status = client.get("/api/tasks?status=done", headers=auth).get_json()
    by_both = client.get(f"/api/tasks?project_id={first}&status=done", headers=auth).get_json()

    assert by_project["total"] == 2
    assert {t["project_id"] for t in by_project["items"]} == {first}
    assert by_status["total"] == 2 and {t["status"] for t in by_status["items"]} == {"done"}
    assert [t["id"] for t in by_both["items"]] == [wanted] and by_both["total"] == 1


def test_list_tasks_shows_only_tasks_in_the_callers_projects(client, auth):
    mine = make_task(client, auth, new_project(client, auth))["id"]
    _, grace = sign_up(client, "grace@example.com")
    hers = new_project(client, grace)
    make_task(client, grace, hers, status="done")

    everything = client.get("/api/tasks", headers=auth).get_json()
    in_hers = client.get(f"/api/tasks?project_id={hers}", headers=auth).get_json()

    assert [t["id"] for t in everything["items"]] == [mine] and everything["total"] == 1
    assert in_hers["items"] == [] and in_hers["total"] == 0


def test_list_tasks_paginates_with_filters(client, auth):
    project_id = new_project(client, auth)
    ids = [make_task(client, auth, project_id, f"T{i}")["id"] for i in range(5)]

    body = client.get(f"/api/tasks?project_id={project_id}&page=2&per_page=3",
                      headers=auth).get_json()

    assert body["total"] == 5 and body["page"] == 2 and body["per_page"] == 3
    assert [t["id"] for t in body["items"]] == ids[3:]


def test_patch_task_changes_only_the_given_fields(client, auth):
    task = make_task(client, auth, new_project(client, auth), "Old", due_date="2030-01-01")

    response = client.patch(f"/api/tasks/{task['id']}", json={"status": "done", "title": "New"},
                            headers=auth)

    body = response.get_json()
    assert response.status_code == 200
    assert body == {**task, "status": "done", "title": "New", "updated_at": body["updated_at"]}
    assert body["updated_at"] >= task["updated_at"]
    assert client.get(f"/api/tasks/{task['id']}", headers=auth).get_json() == body


def test_patch_due_date_sets_and_clears_it(client, auth):
    task = make_task(client, auth, new_project(client, auth))
    path = f"/api/tasks/{task['id']}"

    set_to = client.patch(path, json={"due_date": "2031-12-31"}, headers=auth).get_json()
    cleared = client.patch(path, json={"due_date": None}, headers=auth).get_json()

    assert set_to["due_date"] == "2031-12-31"
    assert cleared["due_date"] is None


def test_delete_task_answers_204_and_removes_it(client, auth):
    task = make_task(client, auth, new_project(client, auth))

    response = client.delete(f"/api/tasks/{task['id']}", headers=auth)

    assert response.status_code == 204 and response.get_data() == b""
    assert_error(client.get(f"/api/tasks/{task['id']}", headers=auth), 404)
    assert client.get("/api/tasks", headers=auth).get_json()["total"] == 0


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("extra, field", [
    ({"project_id": None}, "project_id"),
    ({"title": None}, "title"),
    ({"project_id": "1"}, "project_id"),
    ({"project_id": False}, "project_id"),
    ({"project_id": -3}, "project_id"),
    ({"title": ""}, "title"),
    ({"title": "t" * 501}, "title"),
    ({"status": "blocked"}, "status"),
    ({"status": "TODO"}, "status"),
    ({"status": None}, "status"),
    ({"due_date": "2024-02-30"}, "due_date"),
    ({"due_date": "2024/01/01"}, "due_date"),
    ({"due_date": "20240101"}, "due_date"),
    ({"due_date": "2024-01-01T10:00:00"}, "due_date"),
    ({"due_date": "tomorrow"}, "due_date"),
    ({"due_date": 20240101}, "due_date"),
    ({"priority": "high"}, "priority"),
])
def test_create_task_rejects_bad_fields(app, client, auth, extra, field):
    project_id = new_project(client, auth)
    body = {"project_id": project_id, "title": "T", **extra}

    response = client.post("/api/tasks", json=body, headers=auth)

    assert field in assert_error(response, 400)
    assert count(app, Task) == 0


@pytest.mark.parametrize("missing", ["project_id", "title"])
def test_create_task_rejects_missing_fields(client, auth, missing):
    body = {"project_id": new_project(client, auth), "title": "T"}
    del body[missing]

    response = client.post("/api/tasks", json=body, headers=auth)

    assert missing in assert_error(response, 400)


def test_create_task_in_an_unknown_project_is_not_found(client, auth):
    response = client.post("/api/tasks", json={"project_id": 999, "title": "T"}, headers=auth)

    assert "999" in assert_error(response, 404)


def test_create_task_in_someone_elses_project_is_not_found(app, client, auth):
    _, grace = sign_up(client, "grace@example.com")
    hers = new_project(client, grace)

    response = client.post("/api/tasks", json={"project_id": hers, "title": "T"}, headers=auth)

    assert assert_error(response, 404) == f"project {hers} not found"
    assert count(app, Task) == 0


def test_create_task_rejects_a_json_array(client, auth):
    response = client.post("/api/tasks", json=[{"project_id": 1, "title": "T"}], headers=auth)

    assert_error(response, 400)


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_task_is_not_found(client, auth, method):
    response = getattr(client, method)("/api/tasks/999", json={"status": "done"}, headers=auth)

    assert "999" in assert_error(response, 404)


@pytest.mark.parametrize("body, fragment", [
    ({}, "nothing to update"),
    ({"status": "archived"}, "status"),
    ({"due_date": "31/12/2030"}, "due_date"),
    ({"title": "   "}, "title"),
    ({"project_id": 2}, "project_id"),
])
def test_patch_task_rejects_bad_fields_and_keeps_the_row(client, auth, body, fragment):
    task = make_task(client, auth, new_project(client, auth))

    response = client.patch(f"/api/tasks/{task['id']}", json=body, headers=auth)

    assert fragment in assert_error(response, 400)
    assert client.get(f"/api/tasks/{task['id']}", headers=auth).get_json() == task


def test_patch_task_rejects_a_non_json_body(client, auth):
    task = make_task(client, auth, new_project(client, auth))

    response = client.patch(f"/api/tasks/{task['id']}", data="status=done", headers=auth)

    assert_error(response, 415)
    assert client.get(f"/api/tasks/{task['id']}", headers=auth).get_json() == task


@pytest.mark.parametrize("query, name", [
    ("status=blocked", "status"),
    ("project_id=x", "project_id"),
    ("per_page=101", "per_page"),
    ("page=0", "page"),
])
def test_list_tasks_rejects_bad_query(client, auth, query, name):
    response = client.get(f"/api/tasks?{query}", headers=auth)

    assert name in assert_error(response, 400)
