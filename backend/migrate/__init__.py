"""The migration lifecycle: waiting for the database, applying and checking revisions."""


class LifecycleError(RuntimeError):
    """A reason to refuse: the message is one line, safe to print (no password)."""
