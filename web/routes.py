"""The web pages: the same projections the API reads, as HTML for people.

    GET  /                          search, filters, counts by status, a paged list (live)
    GET  /claims/{ref}              a claim: status, stances, quotes, reviews, timeline, history,
                                    time travel (?recorded_as_of, ?said_as_of), verification
    GET  /claims/{ref}/proofs       its events' bodies and RFC 9162 inclusion proofs (JSON, for the page's check)
    GET  /claims/{ref}/history.csv  its history as CSV; GET /claims.csv the list as CSV
    GET  /parties/{id}              what a party holds, what they said for others, their reviews
    GET  /sign-in, POST /sign-in, POST /sign-out     the read token in an HttpOnly cookie
    GET  /static/<version>/<name>   CSS and scripts (web/assets.py)

Pages follow the API's read policy (`read_access`): with LEDGER_READ_TOKENS_REQUIRED=1 a
visitor without a token gets the sign-in form (401). They are answered with a
Content-Security-Policy that allows no inline script or style.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from weakref import WeakKeyDictionary

import anyio.to_thread
import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api import formats
from api.auth import TOKEN_COOKIE
from api.lookups import Lookups
from api.routes.audit import current_note, get_inclusion_proof
from api.routes.claims import TimeTravel, not_found
from api.routes.deps import Services, read_access, services_of
from api.routes.fast import fast_path
from domain.errors import InvalidInput, NotFound
from domain.fold import ClaimStatus
from domain.ijson import MAX_SAFE_INTEGER
from domain.note import Checkpoint as TreeHead
from domain.values import MAX_NAME, SLUG, check_text, parse_as_of
from projections.engine import TRACKING_NAME
from projections.queries import ReadModels
from projections.tables import LIVE, Tables
from store.tokens import AccessRefused, InvalidToken, Role, RoleTooLow, token_hash
from web import present
from web.assets import ASSETS, IMMUTABLE

router = APIRouter(include_in_schema=False)

TEMPLATES = Path(__file__).resolve().parent / "templates"
PAGE_SIZE = 25
SHOWN_EVENTS = 50  # a claim's page draws its latest events; its history's exports hold them all
STANCES_IN_FULL = 50  # stances shown with their quote, sources and note; those after it in one line
SIGN_IN, SIGN_OUT = "/sign-in", "/sign-out"
FORM_PATHS = (SIGN_IN, SIGN_OUT)  # their bodies are HTML forms (api/app.py BodyGuard)
MAX_FORM_BYTES = 4096
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATUSES = [s.value for s in ClaimStatus]

environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.ChainableUndefined,
    trim_blocks=True, lstrip_blocks=True, auto_reload=False,
)
environment.globals.update(static=ASSETS.url, status_words=present.STATUS_WORDS, statuses=STATUSES)
environment.filters["rating"] = present.rating_words
environment.filters["safe_url"] = present.safe_url


def render(template: str, signed_in: bool, **context: Any) -> bytes:
    return environment.get_template(template).render(signed_in=signed_in, **context).encode()


def html(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    return html(render(template, signed_in(request), **context), status)


def signed_in(request: Request) -> bool:
    return TOKEN_COOKIE in request.cookies


class PageCache:
    """Pages drawn lately, by what they were drawn from: a claim's page by the claim's
    version, the home page by the projections' position. A page is the same for everyone who
    may read it (the read policy is checked before), so one drawing serves every reader
    until the claim, or the ledger, moves on."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes  # the pages drawn last, up to this many bytes in all
        self.bytes = 0
        self.pages: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        with self.lock:
            found = self.pages.get(key)
            if found is not None:
                self.pages.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], body: bytes) -> None:
        if len(body) > self.max_bytes // 16:  # a very long history is drawn each time
            return
        with self.lock:
            old = self.pages.pop(key, None)
            self.bytes += len(body) - (len(old) if old is not None else 0)
            self.pages[key] = body
            while self.bytes > self.max_bytes:
                _, dropped = self.pages.popitem(last=False)
                self.bytes -= len(dropped)


def pages_of(request: Request) -> PageCache:
    """The app's page cache (one per app: web/app.py makes it, beside the app's services)."""
    found = getattr(request.app.state, "web_pages", None)
    if not isinstance(found, PageCache):
        raise RuntimeError("the pages' app was not made by web.app.create_app")
    return found


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    return page(request, "error.html", status, title=title, detail=detail)


async def refused(request: Request) -> Response | None:
    """None when the read policy lets the visitor read; else the page to show instead: the
    sign-in form (401), or a 403 page for a token of too low a role."""
    try:
        await read_access(request)
    except RoleTooLow as e:
        return error_page(request, 403, "Not allowed", str(e))
    except AccessRefused as e:
        response = sign_in_page(request, 401, str(e) if isinstance(e, InvalidToken) else None)
        if isinstance(e, InvalidToken):
            response.delete_cookie(TOKEN_COOKIE, path="/")
        return response
    return None


def sign_in_page(request: Request, status: int = 200, problem: str | None = None,
                 next_path: str | None = None) -> Response:
    """The sign-in form; `next_path` (default: the page asked for) is where it leads after."""
    next_path = local_path(next_path or request.query_params.get("next") or str(request.url.path) + (
        f"?{request.url.query}" if request.url.query else ""))
    if next_path.startswith(SIGN_IN):
        next_path = "/"
    return page(request, "sign_in.html", status, problem=problem, next_path=next_path)


def local_path(target: str) -> str:
    """`target` when it is a path on this site, else "/" (no redirect to another site)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def optional(value: str | None) -> str | None:
    """A GET form sends its empty fields too: empty means not given."""
    value = (value or "").strip()
    return value or None


Text = Annotated[str | None, Query(max_length=200)]


# -- Home: search, filters, counts, the list ------------------------------------------------------


def status_counts(read: ReadModels) -> dict[str, int]:
    with read.store.reading() as cur:
        rows = cur.execute(f"SELECT status, COUNT(*) FROM {read.tables.claims} GROUP BY status").fetchall()
    found = {str(status): int(n) for status, n in rows}
    return {status: found.get(status, 0) for status in STATUSES}


def list_filters(q: str | None, status: str | None, party: str | None, subject: str | None) -> dict[str, str]:
    """The list's filters, checked as GET /v1/claims checks them (InvalidInput names the field)."""
    filters = {name: value for name, value in (("q", optional(q)), ("status", optional(status)),
                                                ("party", optional(party)), ("subject", optional(subject))) if value}
    if "status" in filters and filters["status"] not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)} (got {filters['status']!r:.40})", "status")
    if "party" in filters and not SLUG.fullmatch(filters["party"]):
        raise InvalidInput(
            f"party is a party's id: lowercase letters, digits and hyphens (got {filters['party']!r:.60})", "party"
        )
    if "subject" in filters:
        check_text(filters["subject"], "subject", max_len=MAX_NAME)
    return filters


@router.get("/")
async def home(request: Request, q: Text = None, status: Text = None, party: Text = None, subject: Text = None,
               cursor: Text = None) -> Response:
    if (answer := await refused(request)) is not None:
        return answer
    read = services_of(request).runtime.read
    try:
        filters = list_filters(q, status, party, subject)
    except InvalidInput as e:
        return error_page(request, 422, "Check the search", str(e))
    try:
        body = await anyio.to_thread.run_sync(home_page, pages_of(request), read, filters, optional(cursor),
                                              signed_in(request))
    except InvalidInput as e:
        return error_page(request, 422, "Check the search", str(e))
    return html(body)


def home_page(pages: PageCache, read: ReadModels, filters: dict[str, str], cursor: str | None, signed: bool) -> bytes:
    position = read.position()  # before the list: the page's live stream starts there and misses nothing
    key = ("home", position, tuple(sorted(filters.items())), cursor, signed)
    if (cached := pages.get(key)) is not None:
        return cached
    texts, next_cursor = read.list_claims_json(limit=PAGE_SIZE, cursor=cursor, **filters)
    counts = status_counts(read)
    body = render(
        "home.html", signed, items=[json.loads(text) for text in texts], counts=counts, total=sum(counts.values()),
        filters=filters,
        next_url=("/?" + urlencode({**filters, "cursor": next_cursor})) if next_cursor else None,
        first_url=("/?" + urlencode(filters)) if cursor else None,
        csv_url="/claims.csv" + (("?" + urlencode(filters)) if filters else ""),
        stream_query=urlencode({"after": position, **{k: v for k, v in filters.items() if k != "q"}}),
    )
    pages.put(key, body)
    return body


@router.get("/claims.csv")
async def claims_csv(request: Request, q: Text = None, status: Text = None, party: Text = None,
                     subject: Text = None) -> Response:
    """The list (every page) as CSV: GET /v1/claims answers CSV only to `Accept: text/csv`,
    which a link cannot send."""
    await read_access(request)
    read = services_of(request).runtime.read
    filters = list_filters(q, status, party, subject)

    def page_of(cursor: str | None) -> tuple[list[str], str | None]:
        return read.list_claims_json(limit=500, cursor=cursor, **filters)

    first = await anyio.to_thread.run_sync(page_of, None)
    return formats.csv_response(formats.claims_csv(first, page_of), "claims.csv")


# -- A claim --------------------------------------------------------------------------------------


def travel_of(recorded_as_of: str | None, said_as_of: str | None) -> TimeTravel:
    recorded, said = optional(recorded_as_of), optional(said_as_of)
    return TimeTravel(
        recorded_as_of=None if recorded is None else parse_as_of(recorded, "recorded_as_of"),
        said_as_of=None if said is None else parse_as_of(said, "said_as_of"),
    )


async def fast_claim_page(request: Request) -> Response | None:
    """A claim's page as it is now, when drawn before at the claim's current version (the fast
    lane's handler, api/routes/fast.py); None sends the request on to `claim_page`."""
    ref = request.path_params.get("ref")
    if not isinstance(ref, str):
        return None
    if (answer := await refused(request)) is not None:
        return answer
    drawing, _ = await drawn(request, ref)
    return drawing


async def drawn(request: Request, ref: str) -> tuple[Response | None, bytes | None]:
    """The claim's page as drawn before at its current version, if it was; and the claim's
    stored view (JSON), to draw it from when not (None: no such claim)."""
    svc = services_of(request)
    after = await projected(svc)  # first: whatever the view below does not show comes after it
    found = await svc.lookups.claim_view(ref)
    if found is None:
        return None, None
    cached = pages_of(request).get(("claim", ref, found[1], signed_in(request)))
    return (None if cached is None else html(follow_from(cached, after))), found[0]


AFTER = b'data-after="-1"'  # in a drawn claim page: where its live stream starts, set as it is served
_positions: WeakKeyDictionary[Lookups, Callable[[str], Awaitable[tuple[Any, ...] | None]]] = WeakKeyDictionary()


async def projected(svc: Services) -> int:
    """The projections' position, in one indexed lookup on the event loop (api/lookups.py)."""
    lookup = _positions.get(svc.lookups)
    if lookup is None:
        tracking = Tables(LIVE).tracking
        lookup = _positions[svc.lookups] = svc.lookups.keyed(
            f"SELECT name, position FROM {tracking} WHERE name = ?",
            f"SELECT name, position FROM {tracking} WHERE name = ANY(?)", 0,
        )
    row = await lookup(TRACKING_NAME)
    return 0 if row is None else int(row[1])


def follow_from(body: bytes, after: int) -> bytes:
    """A drawn claim page whose live stream starts after log position `after` (the stream
    reads from there: a page drawn long ago must not make it read the log since)."""
    return body.replace(AFTER, b'data-after="%d"' % after, 1)


@router.get("/claims/{ref}")
@fast_path(fast_claim_page, path=("ref",), passes_query=("recorded_as_of", "said_as_of"))
async def claim_page(request: Request, ref: str,
                     recorded_as_of: Annotated[str | None, Query(max_length=64)] = None,
                     said_as_of: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    if (answer := await refused(request)) is not None:
        return answer
    svc = services_of(request)
    try:
        travel = travel_of(recorded_as_of, said_as_of)
    except InvalidInput as e:
        return error_page(request, 422, "Check the moment", f"{e}. Leave a field empty to not travel on that axis.")
    signed = signed_in(request)
    stored = None
    if travel.now:
        answer, stored = await drawn(request, ref)
        if answer is not None:
            return answer
    after = await projected(svc)
    body = await anyio.to_thread.run_sync(claim_page_body, pages_of(request), svc, ref, travel, signed,
                                          optional(recorded_as_of) or "", optional(said_as_of) or "", stored)
    if body is None:
        missing = await anyio.to_thread.run_sync(not_found, svc, ref, travel)
        return error_page(request, 404, "No such claim", str(missing))
    return html(follow_from(body, after))


def claim_page_body(pages: PageCache, svc: Services, ref: str, travel: TimeTravel, signed: bool, recorded_as_of: str,
                    said_as_of: str, stored: bytes | None = None) -> bytes | None:
    """The page drawn; from the claim's `stored` view (now) when the caller has it."""
    read = svc.runtime.read
    history = read.history_at(ref, **travel.kwargs())
    if history is None:
        return None
    events = history["events"]
    view = json.loads(stored) if stored is not None else None
    if view is None or view["version"] != events[-1]["version"]:  # travelling, or an act landed between
        view = read.claim_at(ref, **travel.kwargs())
        if view is None:
            return None
        if travel.now and events[-1]["version"] != view["version"]:
            events = (read.history_at(ref) or history)["events"]
    body = render(
        "claim.html", signed, view=view, events=events, travel=travel,
        recorded_as_of=recorded_as_of, said_as_of=said_as_of,
        stances=present.stance_lines(view, events), timeline=present.timeline_svg(events[-SHOWN_EVENTS:]),
        shown=events[-SHOWN_EVENTS:], summaries={e["position"]: present.event_summary(e) for e in events[-SHOWN_EVENTS:]},
        reviews=[{**r, "safe_url": present.safe_url(r.get("url"))} for r in view.get("reviews", [])],
        lang=view.get("language") or "en", position=-1, stances_in_full=STANCES_IN_FULL,  # set as the page is served: `follow_from`
    )
    if travel.now:
        pages.put(("claim", ref, view["version"], signed), body)
    return body


def claim_proofs(svc: Services, ref: str, tree_size: int | None) -> dict[str, Any]:
    read = svc.runtime.read
    history = read.history(ref)
    if history is None:
        raise NotFound(f"no claim has the id or key {ref!r:.130}")
    if tree_size is None:
        tree_size = TreeHead.parse(current_note(svc)[0].text).size
    events = []
    for item in history["events"]:
        position = item["position"]
        proof = get_inclusion_proof(svc, position, tree_size)
        fed = read.feed(after=position - 1, limit=1)
        if not fed or fed[0]["position"] != position:
            raise NotFound(f"the event at position {position} is not in the feed")
        events.append({**proof, "hash": fed[0]["hash"], "body": fed[0]["body"]})
    return {"claim_id": history["claim_id"], "tree_size": tree_size, "events": events}


@router.get("/claims/{ref}/proofs")
async def claim_proofs_json(
    request: Request, ref: str,
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SAFE_INTEGER)] = None,
) -> Response:
    """What the page's check needs, under the read policy: each event's body and hash as the
    feed serves them, and its RFC 9162 inclusion proof in the tree of `tree_size` (a
    checkpoint's). Proofs carry hashes only, as the open tiles do."""
    await read_access(request)
    svc = services_of(request)
    answer = await anyio.to_thread.run_sync(claim_proofs, svc, ref, tree_size)
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


@router.get("/claims/{ref}/history.csv")
async def history_csv(request: Request, ref: str) -> Response:
    await read_access(request)
    history = await anyio.to_thread.run_sync(services_of(request).runtime.read.history, ref)
    if history is None:
        raise NotFound(f"no claim has the id or key {ref!r:.130}")
    return formats.csv_response(formats.history_csv(history), "history.csv")


# -- A party --------------------------------------------------------------------------------------


@router.get("/parties/{party_id}")
async def party_page(request: Request, party_id: str) -> Response:
    if (answer := await refused(request)) is not None:
        return answer
    if not SLUG.fullmatch(party_id):
        return error_page(request, 404, "No such party",
                          "a party's id is lowercase letters, digits and hyphens, as in /parties/elton-john")
    party = await anyio.to_thread.run_sync(services_of(request).runtime.read.party, party_id)
    if party is None:
        return error_page(request, 404, "No such party", f"no claim holds a stance of party {party_id!r}")
    for item in party["stances"] + party["spoken_for_others"]:
        item["speaker"] = present.speaker(item["holder"], item["party"])
    return page(request, "party.html", party=party)


# -- Signing in -----------------------------------------------------------------------------------


@router.get(SIGN_IN)
async def sign_in_form(request: Request) -> Response:
    return sign_in_page(request)


def same_origin(request: Request) -> bool:
    """Whether a form post comes from this site's own pages (login CSRF: another site must not
    sign a visitor in with its token). Browsers send Origin on every POST."""
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def form_of(request: Request) -> Mapping[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput(f"the form is larger than {MAX_FORM_BYTES} bytes", "token")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise InvalidInput("the form is not UTF-8", "token") from None


@router.post(SIGN_IN)
async def sign_in(request: Request) -> Response:
    if not same_origin(request):
        return error_page(request, 403, "Not allowed", "sign in from this ledger's own sign-in page")
    try:
        form = await form_of(request)
    except InvalidInput as e:
        return sign_in_page(request, 422, str(e))
    token = form.get("token", "").strip()
    next_path = local_path(form.get("next", "/"))
    if not token:
        return sign_in_page(request, 422, "paste your token in the Token field", next_path)
    try:
        await services_of(request).tokens.authorize_async(token_hash(token), Role.READER)
    except AccessRefused as e:
        return sign_in_page(request, 401, str(e).replace("bearer token", "token"), next_path)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(TOKEN_COOKIE, token, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post(SIGN_OUT)
async def sign_out(request: Request) -> Response:
    if not same_origin(request):
        return error_page(request, 403, "Not allowed", "sign out from this ledger's own pages")
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path="/")
    return response


# -- Static files ---------------------------------------------------------------------------------


@router.get("/static/{version}/{name}")
async def static(version: str, name: str) -> Response:
    asset = ASSETS.get(version, name)
    if asset is None:
        raise NotFound(f"no static file {name!r} in version {version!r}; the pages link the current version")
    return Response(asset.body, media_type=asset.media_type,
                    headers={"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"})

