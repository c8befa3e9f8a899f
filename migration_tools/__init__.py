"""The developer and CI tools around migrations: create, lint, verify, rehearse, resolve
conflicts, draw the graph, check compatibility, and the embedded development database.

They work on a checkout and stay out of the production image (the Dockerfile copies
``backend/`` only); what runs in the service lives in ``backend/migrate/``.
"""
