"""The rules both clients share: how each call is built, how an answer is read, when a
request is retried, and how an event stream is followed. `LedgerClient` (sync.py) and
`AsyncLedgerClient` (aio.py) only move bytes; everything they decide is decided here.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, NotRequired, TypedDict
from urllib.parse import quote

import httpx

from client.errors import (
    Conflict,
    InvalidResponse,
    LedgerError,
    Unavailable,
    Unreachable,
    error_for,
)
from domain import ijson
from domain.errors import InvalidJson
from domain.fold import ClaimStatus

Json = dict[str, Any]
Params = dict[str, str | int]
AsOf = str | date | datetime
Status = ClaimStatus | str  # a ClaimStatus or its value

NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
ACT_PATHS = {"assert": "assertions", "deny": "denials", "retract": "retractions", "void": "voids", "review": "reviews"}


# -- The shapes of what is sent ------------------------------------------------------------------


class Party(TypedDict):
    """Who spoke, or on whose behalf: a slug id and a display name."""

    id: str
    name: str


class Source(TypedDict, total=False):
    """Where an act was published."""

    url: str
    outlet: str
    title: str
    published_at: str


class Rating(TypedDict):
    """A review's verdict: its words, and optionally a number on a scale."""

    text: str
    value: NotRequired[float]
    best: NotRequired[float]
    worst: NotRequired[float]


# What the methods take: the TypedDicts above, or any mapping with those members.
PartyLike = Party | Mapping[str, str]
SourceLike = Source | Mapping[str, str]
RatingLike = Rating | Mapping[str, Any]


@dataclass(frozen=True)
class StreamItem:
    """One event of a Server-Sent Events stream: its `position` in the log (the SSE `id`),
    its `type` (the SSE `event`) and its `data`: a feed item `{position, hash, body}` from
    `stream_events`, a claim's view from `watch_claims`."""

    position: int
    type: str
    data: Json


# -- Calls ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request of the API: what to send, and which statuses are answers (the rest raise)."""

    method: Literal["GET", "POST"]
    path: str
    params: Params = field(default_factory=dict)
    body: Json | None = None
    headers: dict[str, str] = field(default_factory=dict)
    answers: tuple[int, ...] = (200,)

    def with_key(self, key: str | None) -> Call:
        """A write with its Idempotency-Key: the one given, or a new one for this logical write,
        sent unchanged on every retry of it."""
        return Call(self.method, self.path, self.params, self.body,
                    {**self.headers, "Idempotency-Key": key or str(uuid.uuid4())}, self.answers)


def segment(value: str) -> str:
    """A path segment (a claim's id or key, a party id), percent-encoded whole."""
    return quote(value, safe="")


def as_of(value: AsOf, name: str) -> str:
    """A time-travel instant as the API takes it: a date, or an RFC 3339 date-time with an offset."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} {value!r} has no time zone; give it one, e.g. datetime(..., tzinfo=UTC)")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def present(**values: Any) -> Json:
    """The members given (not None), in order."""
    return {name: value for name, value in values.items() if value is not None}


def time_travel(
    version: int | None, recorded_as_of: AsOf | None, said_as_of: AsOf | None, min_position: int | None = None,
) -> Params:
    params: Params = present(version=version, min_position=min_position)
    if recorded_as_of is not None:
        params["recorded_as_of"] = as_of(recorded_as_of, "recorded_as_of")
    if said_as_of is not None:
        params["said_as_of"] = as_of(said_as_of, "said_as_of")
    return params


def get(path: str, params: Params | None = None) -> Call:
    return Call("GET", path, params or {})


def register(body: Json) -> Call:
    return Call("POST", "/v1/claims", body=body, answers=(200, 201))


def act(kind: str, claim: str, body: Json, if_match: int | None = None) -> Call:
    """An act on a claim: `kind` is assert, deny, retract, void or review."""
    if kind not in ACT_PATHS:
        raise ValueError(f"unknown act {kind!r}; one of {', '.join(ACT_PATHS)}")
    headers = {} if if_match is None else {"If-Match": f'"{if_match}"'}
    return Call("POST", f"/v1/claims/{segment(claim)}/{ACT_PATHS[kind]}", body=body, headers=headers,
                answers=(200, 201))


def health() -> Call:
    """/healthz answers 503 with the same document when the ledger is unusable: both are answers."""
    return Call("GET", "/healthz", answers=(200, 503))


# -- Answers -------------------------------------------------------------------------------------


def read_json(method: str, path: str, content: bytes) -> Any:
    try:
        return ijson.loads(content)
    except InvalidJson as e:
        raise InvalidResponse(f"{method} {path} did not answer I-JSON: {e}", status=200) from None


def answer(call: Call, response: httpx.Response) -> Any:
    """The decoded answer to `call`, or the error its problem document describes."""
    if response.status_code not in call.answers:
        raise problem(response, call.method, call.path)
    value = read_json(call.method, call.path, response.content)
    if not isinstance(value, dict):
        raise InvalidResponse(f"{call.method} {call.path} did not answer a JSON object", status=response.status_code)
    return value


def problem(response: httpx.Response, method: str, path: str) -> LedgerError:
    """The exception for an error answer: its problem document, or (an answer not from the
    ledger, such as a proxy's or the HTTP parser's plain text) a document made from it."""
    status = response.status_code
    cls = error_for(status)
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    try:
        document = ijson.loads(response.content)
    except InvalidJson:
        document = None
    if isinstance(document, dict) and isinstance(document.get("detail"), str):
        kind = document.get("type")
        title = document.get("title")
        return cls(
            document["detail"], status=status, title=title if isinstance(title, str) else None,
            type=kind if isinstance(kind, str) else "about:blank", document=document, retry_after=retry_after,
        )
    text = response.content.decode("utf-8", "replace").strip()[:300]
    return cls(f"{method} {path} answered {status}" + (f": {text}" if text else ""), status=status,
               retry_after=retry_after)


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header's delay in seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())


# -- Retries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter, capped: the n-th wait (from 0) is drawn from
    [d/2, d] with d = min(cap, initial * 2**n), so clients that failed together do not
    come back together."""

    initial: float = 0.25
    cap: float = 10.0

    def delay(self, attempt: int, floor: float | None = None, initial: float | None = None) -> float:
        ceiling = min(self.cap, (self.initial if initial is None else initial) * 2 ** min(attempt, 32))
        wait = random.uniform(ceiling / 2, ceiling)  # noqa: S311  # jitter, not a secret
        # The server's own Retry-After (or SSE retry) is a floor, itself capped.
        return max(wait, min(floor, self.cap)) if floor is not None else wait


DEFAULT_BACKOFF = Backoff()


def retryable(error: LedgerError) -> bool:
    """Worth the same request again: no answer, a 503, or an Idempotency-Key being reserved
    and given back by other requests at that instant. A write is retried with the same
    Idempotency-Key, so the ledger records it once whatever happened to the first try."""
    return (
        isinstance(error, Unreachable | Unavailable)
        or (isinstance(error, Conflict) and error.code == "idempotency-key-busy")
    )


def unreachable(call: Call, error: httpx.HTTPError) -> Unreachable:
    return Unreachable(f"{call.method} {call.path} failed: {str(error) or type(error).__name__}")


# -- The NDJSON feed -----------------------------------------------------------------------------


class FeedReader:
    """The items of an NDJSON feed from its raw bytes, each parsed as I-JSON: the bytes the
    server sent, not a decoding of them that would mend what is not UTF-8."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.rest = b""

    def take(self, chunk: bytes) -> Iterator[Json]:
        *lines, self.rest = (self.rest + chunk).split(b"\n")
        return self.items(lines)

    def end(self) -> Iterator[Json]:
        lines, self.rest = [self.rest], b""
        return self.items(lines)

    def items(self, lines: Iterable[bytes]) -> Iterator[Json]:
        for line in lines:
            if not line.strip():
                continue
            try:
                item = ijson.loads(line)
            except InvalidJson as e:
                raise InvalidResponse(
                    f"the feed's item after position {self.after} is not I-JSON, so its readers may differ on what "
                    f"it says: {e}", status=200,
                ) from None
            if not isinstance(item, dict):
                raise InvalidResponse(f"the feed's item after position {self.after} is not a JSON object", status=200)
            if type(item.get("position")) is int:
                self.after = item["position"]
            yield item


def feed(after: int, limit: int | None = None) -> Call:
    return Call("GET", "/v1/events", present(after=after, limit=limit), headers={"Accept": NDJSON})


# -- Server-Sent Events --------------------------------------------------------------------------


@dataclass
class StreamCursor:
    """Where a followed stream is, and what to do with each event of it.

    It sends `?after=` and `Last-Event-ID` (the last position taken) on every connection
    after the first event, skips an event at or before that position (a duplicate after a
    reconnection), reconnects after an `event: dropped` (the server let a slow subscriber
    go) from that same position, and waits between failed connections with `backoff`,
    from the server's `retry:` when it sent one.
    """

    path: str
    filters: Params
    last: int | None
    backoff: Backoff
    max_reconnects: int | None = None
    failures: int = 0
    retry_ms: int | None = None
    dropped: bool = False

    def call(self) -> Call:
        params: Params = dict(self.filters)
        headers = {"Accept": EVENT_STREAM, "Cache-Control": "no-store"}
        if self.last is not None:
            params["after"] = self.last
            headers["Last-Event-ID"] = str(self.last)
        return Call("GET", self.path, params, headers=headers)

    def opened(self, response: httpx.Response, call: Call) -> None:
        """Raise what a connection's answer says, unless it is the stream."""
        if response.status_code != 200:
            raise problem(response, call.method, call.path)
        media_type = response.headers.get("content-type", "").partition(";")[0].strip()
        if media_type != EVENT_STREAM:
            raise InvalidResponse(f"GET {self.path} answered {media_type or 'no content type'}, not {EVENT_STREAM}",
                                  status=200)

    def take(self, event: str, data: str, id: str, retry: int | None) -> StreamItem | None:
        """The item to yield for one event, or None (a duplicate, or `dropped`, after which
        `self.dropped` is set and the caller reconnects)."""
        if retry is not None:
            self.retry_ms = retry
        if event == "dropped":
            self.dropped = True
            return None
        if not data:  # nothing to dispatch (HTML's rule), e.g. a `retry:` alone
            return None
        try:
            position = int(id)
        except ValueError:
            raise InvalidResponse(f"an event of {self.path} has the id {id!r}, not a log position", status=200) from None
        if self.last is not None and position <= self.last:
            return None
        try:
            value = ijson.loads(data)
        except InvalidJson as e:
            raise InvalidResponse(f"the data of event {position} of {self.path} is not I-JSON: {e}", status=200) from None
        if not isinstance(value, dict):
            raise InvalidResponse(f"the data of event {position} of {self.path} is not a JSON object", status=200)
        self.last = position
        self.failures = 0
        return StreamItem(position, event or "message", value)

    def reconnect_after(self, error: LedgerError | None) -> float:
        """The wait before the next connection; raises `error` when it is not worth another
        (a refusal, or `max_reconnects` consecutive failures)."""
        if self.dropped:  # the server asked us to come back from where we are: at once
            self.dropped = False
            return 0.0
        if error is not None and not retryable(error):
            raise error
        if self.max_reconnects is not None and self.failures >= self.max_reconnects:
            raise error or Unreachable(f"GET {self.path}: the stream ended {self.failures} times in a row")
        initial = None if self.retry_ms is None else self.retry_ms / 1000
        floor = error.retry_after if error is not None else None
        wait = self.backoff.delay(self.failures, floor, initial)
        self.failures += 1
        return wait


def headers_of(token: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {"User-Agent": "claims-ledger-client"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra or {})
    return headers
