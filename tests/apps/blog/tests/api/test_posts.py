"""The blog's posts (a PostgreSQL enum status, published unless said otherwise) and their
threaded comments (a foreign key from comments to comments)."""

from __future__ import annotations

import pytest


@pytest.fixture
def author(client) -> dict:
    response = client.post("/api/users", json={"username": "ada", "email": "ada@example.com"})
    return response.get_json()


def test_a_post_is_published_unless_it_says_draft(client, author):
    client.post("/api/posts", json={"user_id": author["id"], "body": "hello"})
    client.post("/api/posts", json={"user_id": author["id"], "body": "wip", "status": "draft"})

    published = client.get("/api/posts?status=published").get_json()["items"]
    drafts = client.get("/api/posts?status=draft").get_json()["items"]

    assert [post["body"] for post in published] == ["hello"]
    assert [post["body"] for post in drafts] == ["wip"]


def test_a_status_outside_the_enum_is_refused(client, author):
    response = client.post("/api/posts", json={"user_id": author["id"], "body": "x",
                                               "status": "archived"})

    assert response.status_code == 400
    assert response.get_json() == {"error": "status: one of draft, published"}


def test_a_reply_names_its_parent_comment(client, author):
    post = client.post("/api/posts", json={"user_id": author["id"], "body": "hi"}).get_json()
    url = f"/api/posts/{post['id']}/comments"
    first = client.post(url, json={"user_id": author["id"], "body": "first"}).get_json()

    reply = client.post(url, json={"user_id": author["id"], "body": "re", "parent_id": first["id"]})

    assert reply.status_code == 201
    assert [(c["body"], c["parent_id"]) for c in client.get(url).get_json()["items"]] == [
        ("first", None), ("re", first["id"])]


def test_a_reply_to_a_comment_on_another_post_is_refused(client, author):
    one, two = (client.post("/api/posts", json={"user_id": author["id"], "body": b}).get_json()
                for b in ("one", "two"))
    comment = client.post(f"/api/posts/{one['id']}/comments",
                          json={"user_id": author["id"], "body": "c"}).get_json()

    response = client.post(f"/api/posts/{two['id']}/comments",
                           json={"user_id": author["id"], "body": "r", "parent_id": comment["id"]})

    assert response.status_code == 400
