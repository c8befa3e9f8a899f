"""The plain counterpart of ``bench/request_path.py``: stock Flask, Flask-SQLAlchemy and
gunicorn serving the example API's hot routes on the same tables.

It imports nothing from ``backend/``, so that whatever the project adds to a request (its
engine options, checkout check, round-trip watchdog, outage and body hooks, log format)
shows up as a difference between the two, and nothing else does.
"""
