"""The blog's tables, written the way Flask-Migrate users often write them: a
self-referential many-to-many (``followers``), posts with an enum status, comments that
answer comments. Importing this package puts every table on ``db.metadata``."""

from .comment import Comment
from .post import POST_STATUSES, Post
from .user import User, followers

__all__ = ["POST_STATUSES", "Comment", "Post", "User", "followers"]
