"""The WSGI entry: ``gunicorn wsgi:app``, and what ``flask`` finds from the repository root."""

from backend import create_app

app = create_app()
