"""The web pages over plain HTTP, on both backends: status codes, what they say, escaping,
the Content-Security-Policy, the read policy's cookie, and the verification's proofs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.auth import TOKEN_COOKIE
from domain.canonical import canonical_bytes
from domain.merkle import event_leaf_hash, verify_inclusion
from domain.note import Checkpoint, Note
from tests.api import story
from tests.conftest import new_database_url
from tests.web.conftest import Site, open_site
from web.routes import CSP

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_the_home_page_lists_and_counts_the_claims_and_searches_them(site: Site) -> None:
    home = site.page("/")
    assert home.status_code == 200 and home.headers["content-type"] == "text/html; charset=utf-8"
    assert story.STATEMENT in home.text
    assert re.search(r'data-count="disputed">(\d+)<', home.text)
    found = site.page("/", q="telephoned", status="disputed")
    assert f'href="/claims/{story.KEY}"' in found.text
    assert 'option value="disputed" selected' in found.text
    nothing = site.page("/", q="xylophone")
    assert nothing.status_code == 200 and f'href="/claims/{story.KEY}"' not in nothing.text
    assert "No claim matches these filters" in nothing.text
    by_party = site.page("/", party=story.PESKOV["id"], status="", subject="")  # empty fields: not given
    assert f'href="/claims/{story.KEY}"' in by_party.text


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "maybe"}, "status"), ({"party": "Not A Slug"}, "party"), ({"cursor": "forged"}, "cursor"),
    ({"q": "!!!"}, "q"),
])
def test_bad_filters_get_a_page_saying_what_to_fix(site: Site, params: dict[str, str], field: str) -> None:
    page = site.page("/", **params)
    assert page.status_code == 422
    assert "text/html" in page.headers["content-type"]
    assert field in page.text and 'role="alert"' in page.text


def test_the_claim_page_says_who_says_what_in_peoples_words(site: Site) -> None:
    page = site.page(f"/claims/{story.KEY}")
    assert page.status_code == 200
    text = page.text
    assert 'class="badge big disputed"' in text
    assert "Dmitry Peskov, for Vladimir Putin, via TASS — quoted by The Moscow Times" in text
    assert "<strong>Elton John</strong></a> <span class=\"verb\">asserts" in text
    assert "<strong>Vladimir Putin</strong></a> <span class=\"verb\">denies" in text
    assert 'href="https://tass.com/politics/821412"' in text
    assert '<svg class="timeline"' in text and text.count('<g class="mark') == 3
    assert '<html lang="en">' in text
    assert text.count("<tr data-position=") == 3
    for link in ("?format=schema", "?format=prov", "?format=turtle", "/history.csv"):
        assert link in text


def test_time_travel_redraws_the_page_as_of_that_moment(site: Site) -> None:
    before_denial = site.page(f"/claims/{story.KEY}", recorded_as_of="", said_as_of="2015-09-14")
    assert before_denial.status_code == 200
    assert 'class="badge big asserted"' in before_denial.text
    assert "Vladimir Putin</strong></a> <span class=\"verb\">denies" not in before_denial.text
    assert 'data-travelling="yes"' in before_denial.text
    before_it_existed = site.page(f"/claims/{story.KEY}", recorded_as_of="2000-01-01")
    assert before_it_existed.status_code == 404 and "did not exist yet" in before_it_existed.text
    bad = site.page(f"/claims/{story.KEY}", said_as_of="yesterday")
    assert bad.status_code == 422 and "said_as_of" in bad.text and "2015-09-14T18:00:00Z" in bad.text


def test_a_claim_page_drawn_before_is_drawn_again_once_the_claim_moves_on(site: Site) -> None:
    key = "pages-follow-versions"
    site.post("/v1/claims", {"key": key, "statement": "The harbour bridge closes for repairs in May"})
    asserted = site.post(f"/v1/claims/{key}/assertions", {"party": {"id": "port-authority", "name": "Port authority"}})
    assert site.page("/v1/claims", min_position=asserted["position"]).status_code == 200
    first = site.page(f"/claims/{key}")
    assert 'class="badge big asserted"' in first.text and 'data-version="2"' in first.text
    assert site.page(f"/claims/{key}").content == first.content  # the same drawing
    denied = site.post(f"/v1/claims/{key}/denials", {"party": {"id": "city-council", "name": "City council"}})
    assert site.page("/v1/claims", min_position=denied["position"]).status_code == 200
    second = site.page(f"/claims/{key}")
    assert 'class="badge big disputed"' in second.text and 'data-version="3"' in second.text
    # Its live stream starts where the projections are as the page is served, even when it was
    # drawn long before (the stream reads the log from there).
    assert f'data-after="{denied["position"]}"' in second.text
    other = site.post("/v1/claims", {"key": "pages-follow-versions-elsewhere", "statement": "Another claim"})
    assert site.page("/v1/claims", min_position=other["position"]).status_code == 200
    third = site.page(f"/claims/{key}")
    assert f'data-after="{other["position"]}"' in third.text and 'data-version="3"' in third.text
    by_id = site.page(f"/claims/{site.page(f'/v1/claims/{key}').json()['id']}")
    assert 'class="badge big disputed"' in by_id.text


def test_unknown_claims_and_parties_are_404_pages(site: Site) -> None:
    for path in ("/claims/no-such-claim", "/parties/no-such-party", "/parties/Not%20a%20slug"):
        page = site.page(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CSP


def test_the_party_page_shows_what_they_hold_and_said_for_others(site: Site) -> None:
    peskov = site.page(f"/parties/{story.PESKOV['id']}")
    assert peskov.status_code == 200
    assert "No stance of their own." in peskov.text
    assert "Dmitry Peskov, for Vladimir Putin: <strong>denies</strong>" in peskov.text
    putin = site.page(f"/parties/{story.PUTIN['id']}")
    assert f'href="/claims/{story.KEY}"' in putin.text and "<strong>denies</strong>" in putin.text


def test_pages_carry_a_content_security_policy_without_inline_script_or_style(site: Site) -> None:
    for path in ("/", f"/claims/{story.KEY}", f"/parties/{story.ELTON['id']}", "/sign-in"):
        page = site.page(path)
        assert page.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), f"an inline script on {path}"
        assert " style=" not in page.text and "<style" not in page.text, f"an inline style on {path}"


def test_static_files_are_versioned_and_cached_for_good(site: Site) -> None:
    home = site.page("/").text
    urls = re.findall(r'(?:href|src)="(/static/([0-9a-f]+)/[a-z]+\.(?:css|js))"', home)
    assert urls
    for url, version in urls:
        answer = site.page(url)
        assert answer.status_code == 200 and "immutable" in answer.headers["cache-control"]
        assert site.page(url.replace(version, "0" * len(version))).status_code == 404
    assert site.page("/static/x/../routes.py").status_code == 404


def test_what_a_user_wrote_is_shown_as_text(site: Site) -> None:
    key = "xss-in-a-statement"
    site.post("/v1/claims", {"key": key, "statement": XSS})
    act = site.post(f"/v1/claims/{key}/assertions", {
        "party": {"id": "mallory", "name": "<b>Mallory</b>"}, "quote": "</blockquote><script>alert(2)</script>",
        "source": {"url": "javascript:alert(3)", "outlet": "<i>Evil</i>"},
    })
    assert site.page("/v1/claims", min_position=act["position"]).status_code == 200  # projected
    page = site.page(f"/claims/{key}")
    home = site.page("/", q="script")
    for text in (page.text, home.text):
        assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;Mallory&lt;/b&gt;" in page.text and "<b>Mallory" not in page.text
    assert "javascript:" not in page.text  # the link is dropped, the outlet shown as text
    assert "&lt;i&gt;Evil&lt;/i&gt;" in page.text


def test_the_proofs_a_page_checks_verify_against_the_signed_checkpoint(site: Site) -> None:
    checkpoint = site.client.get("/v1/audit/checkpoint").json()
    key = site.client.get("/v1/audit/public-key").json()
    from domain.note import Verifier

    note = Note.parse(checkpoint["note"])
    note.open([Verifier.parse(key["verifier_key"])])
    tree = Checkpoint.parse(note.text)
    proofs = site.page(f"/claims/{story.KEY}/proofs", tree_size=tree.size).json()
    assert proofs["tree_size"] == tree.size and len(proofs["events"]) == 3
    previous = "0" * 64
    for event in proofs["events"]:
        import hashlib

        assert hashlib.sha256(canonical_bytes(event["body"])).hexdigest() == event["hash"]
        assert event["body"]["prev_hash"] == previous
        previous = event["hash"]
        path = [bytes.fromhex(h) for h in event["audit_path"]]
        assert verify_inclusion(event_leaf_hash(event["hash"]), event["leaf_index"], tree.size, path, tree.root_hash)
    assert site.page("/claims/no-such-claim/proofs").status_code == 404
    beyond = site.page(f"/claims/{story.KEY}/proofs", tree_size=10**6)
    assert beyond.status_code == 422 and beyond.headers["content-type"] == "application/problem+json"


@pytest.fixture
def closed_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.setenv("LEDGER_READ_TOKENS_REQUIRED", "1")
    for site in open_site(new_database_url("sqlite", tmp_path)):
        site.seed()
        yield site


def test_with_read_tokens_required_pages_ask_to_sign_in_and_the_cookie_reads_only(closed_site: Site) -> None:
    client = closed_site.client
    page = client.get(f"/claims/{story.KEY}")
    assert page.status_code == 401 and 'action="/sign-in"' in page.text
    assert f'name="next" value="/claims/{story.KEY}"' in page.text
    assert client.get("/v1/claims/stream").status_code == 401

    wrong = client.post("/sign-in", data={"token": "not-a-token", "next": "/"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
    assert TOKEN_COOKIE not in client.cookies
    elsewhere = client.post("/sign-in", data={"token": closed_site.token("reader"), "next": "/"},
                            headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403 and TOKEN_COOKIE not in client.cookies

    signed = client.post("/sign-in", data={"token": closed_site.token("reader"), "next": "//evil.example/x"},
                         follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/"  # no redirect to another site
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie

    assert client.get(f"/claims/{story.KEY}").status_code == 200
    assert client.get(f"/v1/claims/{story.KEY}").json()["status"] == "disputed"  # the API reads with it too
    assert client.get(f"/claims/{story.KEY}/proofs").status_code == 200
    # A write never takes the cookie: no token, no write, nothing changed.
    write = client.post(f"/v1/claims/{story.KEY}/assertions", json=story.elton_asserts(act_id="by-cookie"))
    assert write.status_code == 401
    assert client.get(f"/v1/claims/{story.KEY}").json()["version"] == 3

    out = client.post("/sign-out", follow_redirects=False)
    assert out.status_code == 303 and TOKEN_COOKIE not in client.cookies
    assert client.get("/").status_code == 401


def test_a_stale_cookie_is_dropped_with_the_sign_in_form(closed_site: Site) -> None:
    closed_site.client.cookies.set(TOKEN_COOKIE, "revoked-or-never-made")
    page = closed_site.client.get("/")
    assert page.status_code == 401 and "unknown or revoked" in page.text
    assert f'{TOKEN_COOKIE}=""' in page.headers["set-cookie"] or "Max-Age=0" in page.headers["set-cookie"]


def test_sign_in_refuses_an_empty_or_oversized_form(closed_site: Site) -> None:
    empty = closed_site.client.post("/sign-in", data={"token": " "})
    assert empty.status_code == 422 and "Token field" in empty.text
    huge = closed_site.client.post("/sign-in", data={"token": "x" * 5000})
    assert huge.status_code == 422


def test_json_bodies_stay_json_outside_the_sign_in_form(closed_site: Site) -> None:
    refused = httpx.Request("POST", "http://x/v1/claims", data={"statement": "a form"})
    answer = closed_site.client.send(refused)
    assert answer.status_code == 415


NORTHVALE = {"id": "northvale-fact-check", "name": "Northvale Fact Check"}


def test_reviews_retractions_and_voids_show_on_the_page_and_the_timeline(site: Site) -> None:
    key = "pages-reviews-and-voids"
    site.post("/v1/claims", {"key": key, "statement": "The ferry runs free during the closure"})
    site.post(f"/v1/claims/{key}/assertions", {"party": {"id": "ivo-marsh", "name": "Ivo Marsh"}, "act_id": "ivo-1",
                                               "said_at": "2024-02-01"})
    site.post(f"/v1/claims/{key}/retractions", {"retracts": "ivo-1", "party": {"id": "ivo-marsh", "name": "Ivo Marsh"},
                                                "said_at": "2024-02-03", "reason": "misread the notice"})
    site.post(f"/v1/claims/{key}/denials", {"party": {"id": "ferry-co", "name": "Ferry Co"}, "act_id": "ferry-1"})
    site.post(f"/v1/claims/{key}/voids", {"voids": "ferry-1", "reason": "recorded on the wrong claim"})
    last = site.post(f"/v1/claims/{key}/reviews", {
        "reviewer": NORTHVALE, "rating": {"text": "False", "value": 1, "best": 5, "worst": 1},
        "url": "https://factcheck.northvale.example/ferry", "reviewed_at": "2024-02-05", "summary": "No such offer.",
    })
    assert site.page("/v1/claims", min_position=last["position"]).status_code == 200
    page = site.page(f"/claims/{key}").text
    assert 'class="badge big retracted"' in page
    assert "<strong>Northvale Fact Check</strong></a> rates it" in page
    assert "False (1 on a scale from 1 (worst) to 5 (best))" in page and "No such offer." in page
    assert 'href="https://factcheck.northvale.example/ferry"' in page
    assert 'class="mark asserted was-retracted"' in page and 'class="mark denied was-voided"' in page
    assert 'class="mark reviewed"' in page and "staff voided ferry-1 (recorded in error)" in page
    reviewer = site.page(f"/parties/{NORTHVALE['id']}").text
    assert f'href="/claims/{key}"' in reviewer and "False (1 on a scale" in reviewer


def test_the_export_links_of_a_claims_page_answer(site: Site) -> None:
    page = site.page(f"/claims/{story.KEY}").text
    links = re.findall(r'<li><a href="([^"]+)" type="([^"]+)">', page)
    assert len(links) == 6
    for href, media in links:
        answer = site.page(href.replace("&amp;", "&"))
        assert answer.status_code == 200, f"{href}: {answer.text[:300]}"
        # The link's `type` names the family the format is served in (JSON-LD is JSON).
        assert media.split("/")[1].split("+")[-1] in answer.headers["content-type"], href


def test_the_page_cache_keeps_the_pages_drawn_last_within_its_bytes() -> None:
    from web.routes import PageCache

    cache = PageCache(max_bytes=1600)  # pages of up to 100 bytes are kept
    for n in range(17):
        cache.put(("claim", f"c{n}", 1, False), bytes(100))
    assert cache.get(("claim", "c0", 1, False)) is None  # the oldest went first
    assert all(cache.get(("claim", f"c{n}", 1, False)) is not None for n in range(1, 17))
    assert cache.bytes == 1600
    cache.put(("claim", "huge", 1, False), bytes(101))  # over a sixteenth of the budget: not kept
    assert cache.get(("claim", "huge", 1, False)) is None
    cache.put(("claim", "c16", 1, False), bytes(10))  # replaced, not counted twice
    assert cache.bytes == 1510


def test_a_long_history_shows_its_latest_events_and_says_where_the_rest_are(site: Site) -> None:
    from web.routes import SHOWN_EVENTS, STANCES_IN_FULL

    key = "pages-long-history"
    site.post("/v1/claims", {"key": key, "statement": "The tide tables were printed wrong"})
    for n in range(SHOWN_EVENTS + 5):
        last = site.post(f"/v1/claims/{key}/assertions", {"party": {"id": f"reader-{n}", "name": f"Reader {n}"},
                                                          "quote": f"Quote number {n}"})
    assert site.page("/v1/claims", min_position=last["position"]).status_code == 200
    page = site.page(f"/claims/{key}").text
    assert page.count("<tr data-position=") == SHOWN_EVENTS
    assert f"The latest {SHOWN_EVENTS} of {SHOWN_EVENTS + 6} events" in page
    assert f'data-position="{last["position"]}"' in page  # the newest are the ones shown
    assert len(site.page(f"/claims/{key}/proofs").json()["events"]) == SHOWN_EVENTS + 6  # Verify checks them all
    # Every holder's stance is listed; the quotes of the first ones only, and the page says so.
    assert page.count('<li class="stance asserts">') == SHOWN_EVENTS + 5
    assert page.count("<blockquote") == STANCES_IN_FULL and 'id="stances-cut"' in page


def test_two_apps_in_one_process_each_serve_their_own_pages(tmp_path: Path) -> None:
    """The same story on two ledgers: the same keys and versions, other hashes and times."""
    hashes = []
    for first in open_site(new_database_url("sqlite", tmp_path)):
        first.seed()
        for second in open_site(new_database_url("sqlite", tmp_path)):
            position = second.seed()
            assert second.page("/v1/claims", min_position=position).status_code == 200
            for site in (first, second):
                page = site.page(f"/claims/{story.KEY}").text
                history = site.page(f"/v1/claims/{story.KEY}/history").json()["events"]
                assert all(f'data-hash="{e["hash"]}"' in page for e in history)
                hashes.append(history[-1]["hash"])
    assert hashes[0] != hashes[1]
