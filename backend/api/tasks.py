"""Tasks: the work inside a project, with a status and an optional due date."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, url_for

from backend.api import api, commit, created, list_page, one_or_404
from backend.api.auth import current_user_id
from backend.api.projects import owned_project
from backend.api.validation import (
    bad_request,
    date_value,
    id_value,
    json_object,
    query_int,
    query_status,
    status_value,
    text_value,
)
from backend.extensions import db
from backend.models import Project, Task

TITLE_MAX = Task.__table__.c.title.type.length
EDITABLE = ("title", "status", "due_date")


def owned_task(task_id: int) -> Task:
    """The caller's task ``task_id`` (in one of their projects); 404 for anyone else's."""
    query = (db.select(Task).join(Task.project)
             .where(Task.id == task_id, Project.owner_id == current_user_id()))
    return one_or_404(query, "task", task_id)


def _changes(body: dict[str, Any]) -> dict[str, Any]:
    """Validated values for whichever editable fields the body carries."""
    checks = {"title": lambda v: text_value(v, "title", TITLE_MAX),
              "status": status_value,
              "due_date": lambda v: date_value(v, "due_date")}
    return {field: checks[field](body[field]) for field in EDITABLE if field in body}


@api.post("/tasks")
def create_task() -> tuple[Response, int, dict[str, str]]:
    body = json_object(required=("project_id", "title"), optional=("status", "due_date"))
    project_id = id_value(body["project_id"], "project_id")
    values = {"status": "todo", **_changes(body)}
    owned_project(project_id)
    task = Task(project_id=project_id, **values)
    db.session.add(task)
    commit(missing=f"project {project_id} not found")
    return created(task.to_dict(), url_for("api.get_task", task_id=task.id))


@api.get("/tasks")
def list_tasks() -> Response:
    query = (db.select(Task).join(Task.project)
             .where(Project.owner_id == current_user_id()).order_by(Task.id))
    project_id = query_int("project_id")
    if project_id is not None:
        query = query.where(Task.project_id == project_id)
    status = query_status()
    if status is not None:
        query = query.where(Task.status == status)
    return list_page(query, Task.to_dict)


@api.get("/tasks/<int:task_id>")
def get_task(task_id: int) -> Response:
    return jsonify(owned_task(task_id).to_dict())


@api.patch("/tasks/<int:task_id>")
def update_task(task_id: int) -> Response:
    changes = _changes(json_object(optional=EDITABLE))
    if not changes:
        bad_request(f"nothing to update: give at least one of {', '.join(EDITABLE)}")
    task = owned_task(task_id)
    for field, value in changes.items():
        setattr(task, field, value)
    commit()
    return jsonify(task.to_dict())


@api.delete("/tasks/<int:task_id>")
def delete_task(task_id: int) -> tuple[str, int]:
    db.session.delete(owned_task(task_id))
    commit()
    return "", 204
