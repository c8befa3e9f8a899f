"""``flask users token EMAIL``: a new API token for a user, from the operator's shell.

A token is shown once, at sign-up, and the API renews one only for a caller who still has
it: a user who lost theirs, or who signed up before tokens existed (revision 4a1f6c8e2d35
left them without one), has no way back through the API.
"""

from __future__ import annotations

import click
import sqlalchemy as sa
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from backend.api.auth import new_token
from backend.extensions import db
from backend.models import User
from backend.postgres import describe_error

users_cli = AppGroup("users", help="The example application's users.")


@users_cli.command("token")
@click.argument("email")
def issue_token(email: str) -> None:
    """Give the user EMAIL a new API token and print it; their old token stops working."""
    try:
        user = db.session.scalar(sa.select(User).where(User.email == email.strip()))
        if user is None:
            raise click.ClickException(f"no user with email {email.strip()}")
        token, user.token_hash = new_token()
        db.session.commit()
    except SQLAlchemyError as exc:
        raise click.ClickException(f"could not issue a token: {describe_error(exc)}") from None
    click.echo(token)
