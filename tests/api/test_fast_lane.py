"""The fast lane: a fast handler declares every input of its route, or the app does not start,
and a request that carries what the handler leaves to FastAPI goes to FastAPI."""

from __future__ import annotations

import warnings
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import Scope

from api.app import create_app
from api.routes.fast import FastLane, Lane, UndeclaredInput, fast_path, lanes_of

with warnings.catch_warnings():  # starlette asks for httpx2, which is not released for this stack
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


async def by_the_lane(request: Request) -> Response:
    return JSONResponse({"by": "lane", "id": request.path_params["id"]})


async def paging(page: Annotated[int, Query()] = 1) -> int:
    return page


def app_with(router: APIRouter) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    return app


def refusal(router: APIRouter) -> str:
    with pytest.raises(UndeclaredInput) as refused:
        lanes_of(app_with(router).routes)
    return str(refused.value)


def test_a_fast_route_with_an_undeclared_header_is_refused_at_start_up() -> None:
    router = APIRouter()

    @router.get("/things/{id}")
    @fast_path(by_the_lane, path=("id",))
    async def thing(id: str, if_match: Annotated[str | None, Header()] = None) -> Any:
        return {"by": "fastapi"}

    message = refusal(router)
    assert "GET /things/{id}" in message and "header 'if-match'" in message
    assert "passes_headers=" in message  # says how to fix it


def test_a_fast_route_with_an_undeclared_query_parameter_is_refused_at_start_up() -> None:
    router = APIRouter()

    @router.get("/things/{id}")
    @fast_path(by_the_lane, path=("id",), passes_query=("limit",))
    async def thing(id: str, limit: int = 10, cursor: str | None = None) -> Any:
        return {"by": "fastapi"}

    message = refusal(router)
    assert "query parameter 'cursor'" in message and "limit" not in message


def test_a_fast_route_with_an_undeclared_dependency_or_input_of_one_is_refused_at_start_up() -> None:
    router = APIRouter()

    @router.get("/things/{id}", dependencies=[Depends(paging)])
    @fast_path(by_the_lane, path=("id",))
    async def thing(id: str) -> Any:
        return {"by": "fastapi"}

    message = refusal(router)
    assert "dependency paging" in message and "query parameter 'page'" in message


def test_a_fast_route_with_an_undeclared_path_parameter_or_body_is_refused_at_start_up() -> None:
    router = APIRouter()

    @router.post("/things/{id}")
    @fast_path(by_the_lane)
    async def thing(id: str, body: dict[str, int]) -> Any:
        return {"by": "fastapi"}

    message = refusal(router)
    assert "path parameter 'id'" in message and "body parameter 'body'" in message


@pytest.fixture
def lane_client() -> TestClient:
    router = APIRouter()

    @router.get("/things/{id}", dependencies=[Depends(paging)])
    @fast_path(by_the_lane, path=("id",), query=("page",), dependencies=(paging,),
               passes_query=("min_position",), passes_headers=("If-Match",))
    async def thing(
        id: str, min_position: int | None = None, if_match: Annotated[str | None, Header()] = None,
    ) -> Any:
        return {"by": "fastapi", "id": id}

    app = app_with(router)
    return TestClient(FastLane(app, api=app, lanes=lanes_of(app.routes)))


@pytest.mark.parametrize(("params", "headers", "by"), [
    ({}, {}, "lane"),
    ({"page": "2"}, {}, "lane"),
    ({"min_position": "3"}, {}, "fastapi"),
    ({"page": "2", "not_a_parameter": "1"}, {}, "fastapi"),
    ({}, {"If-Match": '"3"'}, "fastapi"),
    ({}, {"X-Request-Id": "r1"}, "lane"),
], ids=["plain", "handled query", "passed query", "unknown query", "passed header", "other header"])
def test_a_request_carrying_what_the_fast_handler_leaves_to_fastapi_goes_to_fastapi(
    lane_client: TestClient, params: dict[str, str], headers: dict[str, str], by: str,
) -> None:
    answer = lane_client.get("/things/t1", params=params, headers=headers)
    assert answer.status_code == 200 and answer.json() == {"by": by, "id": "t1"}


def scope(path: str, method: str, query: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = ()) -> Scope:
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": list(headers)}


def real_lanes(fast_lane: bool) -> dict[tuple[str, str], Lane]:
    app = create_app(url="sqlite:///not-opened.db", fast_lane=fast_lane)
    return {(method, lane.route.path): lane for lane in lanes_of(app.routes) for method in lane.methods}


@pytest.mark.parametrize("fast_lane", [True, False], ids=["lane on", "lane off"])
def test_the_ledger_app_starts_with_every_fast_handler_declared(fast_lane: bool) -> None:
    assert set(real_lanes(fast_lane)) == {
        ("GET", "/v1/claims/{id}"),
        *(("POST", f"/v1/claims/{{id}}/{kind}") for kind in ("assertions", "denials", "retractions", "voids", "reviews")),
        ("GET", "/tile/{tile:path}"),
    }


def test_the_ledger_fast_handlers_leave_idempotency_keys_if_match_and_read_parameters_to_fastapi() -> None:
    lanes = real_lanes(True)
    act = lanes[("POST", "/v1/claims/{id}/assertions")]
    assert act.takes(scope("/v1/claims/k/assertions", "POST", headers=((b"authorization", b"Bearer t"),)))
    assert not act.takes(scope("/v1/claims/k/assertions", "POST", headers=((b"idempotency-key", b"k1"),)))
    assert not act.takes(scope("/v1/claims/k/assertions", "POST", headers=((b"if-match", b'"2"'),)))
    read = lanes[("GET", "/v1/claims/{id}")]
    assert read.takes(scope("/v1/claims/k", "GET", headers=((b"if-none-match", b'"2"'),)))
    for query in (b"min_position=3", b"version=1", b"recorded_as_of=2015-09-15", b"said_as_of=2015"):
        assert not read.takes(scope("/v1/claims/k", "GET", query=query))
