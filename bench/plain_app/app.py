"""A stock Flask app for the routes ``bench/request_path.py`` drives: what a team would
write without this project, to compare our request path with.

Flask-SQLAlchemy with its default engine (default pool, no pre-ping, no listeners), the
routes written the usual way (``db.get_or_404``, ``db.first_or_404``, ``db.paginate``,
``request.get_json``) with the checks a careful plain app makes. It asks for a token the
same way ours does: a ``before_request`` reads ``Authorization: Bearer <token>``, hashes the
token with SHA-256 and looks the user's id up by ``users.token_hash`` (its unique index) in
one query, or answers 401; every query then keeps to that user's rows (anyone else's answer
404), and every /api answer carries ``X-Content-Type-Options: nosniff`` and
``Cache-Control: no-store``. gunicorn runs it as ``bench.plain_app.app:create_app()``.
"""

from __future__ import annotations

import hashlib
import os

from flask import Flask, Response, abort, g, jsonify, request, url_for

from bench.plain_app.models import TASK_STATUSES, Project, Task, User, db


def _under_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def create_app(database_url: str | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url or os.environ["DATABASE_URL"]
    db.init_app(app)

    @app.before_request
    def authenticate():
        if not _under_api():
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        user_id = None
        if scheme.lower() == "bearer" and token:
            digest = hashlib.sha256(token.encode()).hexdigest()
            user_id = db.session.scalar(db.select(User.id).where(User.token_hash == digest))
        if user_id is None:
            return jsonify(error="unauthorized"), 401, {"WWW-Authenticate": "Bearer"}
        g.user_id = user_id
        return None

    @app.after_request
    def api_headers(response: Response) -> Response:
        if _under_api():
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Cache-Control"] = "no-store"
        return response

    def owned_project(project_id: int) -> Project:
        return db.first_or_404(db.select(Project).where(Project.id == project_id,
                                                        Project.owner_id == g.user_id))

    def owned_task(task_id: int) -> Task:
        return db.first_or_404(db.select(Task).join(Task.project)
                               .where(Task.id == task_id, Project.owner_id == g.user_id))

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/api/users/<int:user_id>")
    def get_user(user_id: int):
        if user_id != g.user_id:
            abort(404)
        return jsonify(db.get_or_404(User, user_id).to_dict())

    @app.get("/api/projects/<int:project_id>")
    def get_project(project_id: int):
        return jsonify(owned_project(project_id).to_dict())

    @app.get("/api/tasks")
    def list_tasks():
        page = request.args.get("page", 1, type=int)
        per_page = min(request.args.get("per_page", 20, type=int), 100)
        query = (db.select(Task).join(Task.project)
                 .where(Project.owner_id == g.user_id).order_by(Task.id))
        project_id = request.args.get("project_id", type=int)
        if project_id is not None:
            query = query.where(Task.project_id == project_id)
        status = request.args.get("status")
        if status is not None:
            query = query.where(Task.status == status)
        pages = db.paginate(query, page=page, per_page=per_page, error_out=False)
        return jsonify(items=[task.to_dict() for task in pages.items], page=page,
                       per_page=per_page, total=pages.total)

    @app.get("/api/tasks/<int:task_id>")
    def get_task(task_id: int):
        return jsonify(owned_task(task_id).to_dict())

    @app.post("/api/tasks")
    def create_task():
        body = request.get_json()
        if not isinstance(body, dict) or not isinstance(body.get("project_id"), int) \
                or not isinstance(body.get("title"), str) or not body["title"].strip():
            abort(400)
        if body.get("status", "todo") not in TASK_STATUSES:
            abort(400)
        owned_project(body["project_id"])
        task = Task(project_id=body["project_id"], title=body["title"].strip(),
                    status=body.get("status", "todo"))
        db.session.add(task)
        db.session.commit()
        return jsonify(task.to_dict()), 201, {"Location": url_for("get_task", task_id=task.id)}

    @app.patch("/api/tasks/<int:task_id>")
    def update_task(task_id: int):
        body = request.get_json()
        if not isinstance(body, dict) or body.get("status") not in TASK_STATUSES:
            abort(400)
        task = owned_task(task_id)
        task.status = body["status"]
        db.session.commit()
        return jsonify(task.to_dict())

    return app
