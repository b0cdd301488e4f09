"""Pushing an order into Label Studio: task data ranks and a saved view, over httpx.MockTransport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from backends.ordering import RANK_FIELD, SELECT_VIEW, RankedTask, push_order, view_data
from studio.client import LabelStudioClient
from studio.protocol import Task


class FakeLabelStudio:
    """Just the endpoints an order push uses; records every request."""

    def __init__(self, views: list[dict[str, Any]] | None = None) -> None:
        self.views = views or []
        self.requests: list[tuple[str, str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        path = request.url.path.rstrip("/")
        if request.method == "GET" and path == "/api/dm/views":
            return httpx.Response(200, json=self.views)
        if request.method == "POST" and path == "/api/dm/views":
            return httpx.Response(201, json={"id": 77, "project": body["project"], "data": body["data"]})
        if request.method == "PATCH" and path.startswith("/api/dm/views/"):
            return httpx.Response(200, json={"id": int(path.rsplit("/", 1)[1]), **body})
        if request.method == "PATCH" and path.startswith("/api/tasks/"):
            return httpx.Response(200, json={"id": int(path.rsplit("/", 1)[1]), "data": body["data"]})
        return httpx.Response(404, json={"detail": f"no route {request.method} {path}"})

    def client(self) -> LabelStudioClient:
        return LabelStudioClient(
            "http://ls.test",
            "token",
            max_retries=0,
            httpx_client=httpx.Client(transport=httpx.MockTransport(self.handler)),
        )

    def patched_tasks(self) -> dict[int, dict[str, Any]]:
        return {
            int(path.rstrip("/").rsplit("/", 1)[1]): body["data"]
            for method, path, body in self.requests
            if method == "PATCH" and path.startswith("/api/tasks/")
        }


def _tasks() -> list[Task]:
    return [
        Task(id=1, data={"image": "/a.jpg"}, project=3),
        Task(id=2, data={"image": "/b.jpg", RANK_FIELD: 1}, project=3),  # ranked by an earlier push
        Task(id=3, data={"image": "/c.jpg", "note": "kept"}, project=3),
        Task(id=4, data={"image": "/d.jpg", RANK_FIELD: 2}, project=3),
    ]


def test_the_view_sorts_numerically_by_the_rank_and_shows_only_ranked_tasks() -> None:
    data = view_data(RANK_FIELD, SELECT_VIEW)
    assert data["ordering"] == [f"tasks:data.{RANK_FIELD}"]
    assert data["columnsDisplayType"] == {f"tasks:data.{RANK_FIELD}": "Number"}
    (item,) = data["filters"]["items"]
    assert item["filter"] == f"filter:tasks:data.{RANK_FIELD}" and item["type"] == "Number"
    assert data["title"] == SELECT_VIEW


def test_a_push_ranks_the_chosen_clears_the_rest_and_creates_the_view() -> None:
    fake = FakeLabelStudio()
    report = push_order(fake.client(), 3, [RankedTask(3, 1), RankedTask(4, 2)], _tasks())
    patched = fake.patched_tasks()
    assert patched[3] == {"image": "/c.jpg", "note": "kept", RANK_FIELD: 1}  # other keys kept
    assert patched[2] == {"image": "/b.jpg"}  # the earlier rank is cleared
    assert 4 not in patched and 1 not in patched  # already right / never ranked: no request
    assert report.view_id == 77 and report.view_created and report.ranked == 2 and report.cleared == 1
    posted = [body for method, path, body in fake.requests if method == "POST"]
    assert posted == [{"project": 3, "data": view_data(RANK_FIELD, SELECT_VIEW)}]


def test_a_second_push_updates_the_view_of_the_same_title() -> None:
    fake = FakeLabelStudio(
        views=[
            {"id": 5, "project": 3, "data": {"title": "other"}},
            {"id": 9, "project": 3, "data": {"title": SELECT_VIEW}},
        ]
    )
    report = push_order(fake.client(), 3, [RankedTask(1, 1)], _tasks())
    assert report.view_id == 9 and not report.view_created and report.cleared == 2
    assert [(m, p) for m, p, _ in fake.requests if "views" in p and m != "GET"] == [("PATCH", "/api/dm/views/9/")]


def test_unknown_tasks_are_refused() -> None:
    with pytest.raises(ValueError, match="not in project 3"):
        push_order(FakeLabelStudio().client(), 3, [RankedTask(99, 1)], _tasks())
