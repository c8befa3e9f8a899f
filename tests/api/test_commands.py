"""flask users token: an operator issues a new token to a user who has none or lost it."""

from tests.api.support import sign_up


def test_a_new_token_lets_the_user_in_and_ends_the_old_one(app, client):
    user, old_headers = sign_up(client, "ada@example.com", "Ada")

    result = app.test_cli_runner().invoke(args=["users", "token", "ada@example.com"])

    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token and token != user["token"]
    me = client.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.get_json()["id"] == user["id"]
    assert client.get("/api/users/me", headers=old_headers).status_code == 401


def test_an_unknown_email_is_one_line_and_changes_nothing(app, client):
    _, headers = sign_up(client, "ada@example.com", "Ada")

    result = app.test_cli_runner().invoke(args=["users", "token", "nobody@example.com"])

    assert result.exit_code == 1
    assert result.output == "Error: no user with email nobody@example.com\n"
    assert client.get("/api/users/me", headers=headers).status_code == 200
