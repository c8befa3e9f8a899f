"""The blog's users: created once per username, followed by others."""

from __future__ import annotations


def make_user(client, name: str) -> dict:
    response = client.post("/api/users", json={"username": name, "email": f"{name}@example.com"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_new_user_is_unseen_and_followed_by_nobody(client):
    user = make_user(client, "susan")

    got = client.get(f"/api/users/{user['id']}")

    assert got.status_code == 200
    assert got.get_json() | {"id": 0} == {"id": 0, "username": "susan",
                                          "email": "susan@example.com", "about_me": None,
                                          "last_seen": None, "followers": 0}


def test_a_taken_username_is_a_conflict(client):
    make_user(client, "john")

    again = client.post("/api/users", json={"username": "john", "email": "other@example.com"})

    assert again.status_code == 409
    assert "already exists" in again.get_json()["error"]


def test_following_counts_once_per_follower(client):
    susan, john, mary = (make_user(client, name) for name in ("susan", "john", "mary"))

    for follower in (john, mary):
        assert client.post(f"/api/users/{susan['id']}/followers",
                           json={"follower_id": follower["id"]}).status_code == 201
    twice = client.post(f"/api/users/{susan['id']}/followers", json={"follower_id": john["id"]})

    assert twice.status_code == 409
    assert client.get(f"/api/users/{susan['id']}").get_json()["followers"] == 2


def test_an_unknown_user_is_a_json_404(client):
    response = client.get("/api/users/2147483648")

    assert response.status_code == 404
    assert response.get_json() == {"error": "user 2147483648 not found"}
