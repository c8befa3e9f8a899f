"""Every model, imported here so that ``db.metadata`` (and autogenerate) sees them all."""

from backend.models.project import Project
from backend.models.task import TASK_STATUSES, Task
from backend.models.user import User

__all__ = ["TASK_STATUSES", "Project", "Task", "User"]
