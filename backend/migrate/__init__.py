"""The migration lifecycle: waiting for the database, applying and checking revisions."""

from backend.postgres import OperatorError


class LifecycleError(OperatorError):
    """A reason to refuse: the message is one line, safe to print (no password)."""
