"""Projects: a user's named groups of tasks, each with a slug derived from its name."""

from __future__ import annotations

from flask import Response, jsonify, url_for

from backend.api import api, commit, created, get_or_404, list_page
from backend.api.validation import id_value, json_object, query_int, text_value
from backend.extensions import db
from backend.models import Project, User
from backend.models.project import slugify

NAME_MAX = Project.__table__.c.name.type.length


@api.post("/projects")
def create_project() -> tuple[Response, int, dict[str, str]]:
    body = json_object(required=("owner_id", "name"))
    owner_id = id_value(body["owner_id"], "owner_id")
    name = text_value(body["name"], "name", NAME_MAX)
    get_or_404(User, owner_id)
    project = Project(owner_id=owner_id, name=name, slug=slugify(name))
    db.session.add(project)
    commit(missing=f"user {owner_id} not found")
    return created(project.to_dict(), url_for("api.get_project", project_id=project.id))


@api.get("/projects")
def list_projects() -> Response:
    # An unknown owner is not an error here: the filter simply matches nothing.
    query = db.select(Project).order_by(Project.id)
    owner_id = query_int("owner_id")
    if owner_id is not None:
        query = query.where(Project.owner_id == owner_id)
    return list_page(query, Project.to_dict)


@api.get("/projects/<int:project_id>")
def get_project(project_id: int) -> Response:
    return jsonify(get_or_404(Project, project_id).to_dict())


@api.patch("/projects/<int:project_id>")
def update_project(project_id: int) -> Response:
    body = json_object(required=("name",))
    name = text_value(body["name"], "name", NAME_MAX)
    project = get_or_404(Project, project_id)
    # The slug always follows the name, so it can never describe a name the project lost.
    project.name, project.slug = name, slugify(name)
    commit()
    return jsonify(project.to_dict())


@api.delete("/projects/<int:project_id>")
def delete_project(project_id: int) -> tuple[str, int]:
    # The schema's ON DELETE CASCADE removes the tasks; loading them here would be wasted work.
    db.session.delete(get_or_404(Project, project_id))
    commit()
    return "", 204
