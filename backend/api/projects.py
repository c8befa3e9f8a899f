"""Projects: a user's named groups of tasks, each with a slug derived from its name."""

from __future__ import annotations

from flask import Response, jsonify, url_for

from backend.api import api, commit, created, list_page, one_or_404
from backend.api.auth import current_user_id
from backend.api.validation import json_object, text_value
from backend.extensions import db
from backend.models import Project
from backend.models.project import slugify

NAME_MAX = Project.__table__.c.name.type.length


def owned_project(project_id: int) -> Project:
    """The caller's project ``project_id``; 404 for anyone else's, as for one that never was."""
    query = db.select(Project).where(Project.id == project_id,
                                     Project.owner_id == current_user_id())
    return one_or_404(query, "project", project_id)


@api.post("/projects")
def create_project() -> tuple[Response, int, dict[str, str]]:
    body = json_object(required=("name",))
    name = text_value(body["name"], "name", NAME_MAX)
    project = Project(owner_id=current_user_id(), name=name, slug=slugify(name))
    db.session.add(project)
    commit()
    return created(project.to_dict(), url_for("api.get_project", project_id=project.id))


@api.get("/projects")
def list_projects() -> Response:
    query = db.select(Project).where(Project.owner_id == current_user_id()).order_by(Project.id)
    return list_page(query, Project.to_dict)


@api.get("/projects/<int:project_id>")
def get_project(project_id: int) -> Response:
    return jsonify(owned_project(project_id).to_dict())


@api.patch("/projects/<int:project_id>")
def update_project(project_id: int) -> Response:
    body = json_object(required=("name",))
    name = text_value(body["name"], "name", NAME_MAX)
    project = owned_project(project_id)
    # The slug always follows the name, so it can never describe a name the project lost.
    project.name, project.slug = name, slugify(name)
    commit()
    return jsonify(project.to_dict())


@api.delete("/projects/<int:project_id>")
def delete_project(project_id: int) -> tuple[str, int]:
    # The schema's ON DELETE CASCADE removes the tasks; loading them here would be wasted work.
    db.session.delete(owned_project(project_id))
    commit()
    return "", 204
