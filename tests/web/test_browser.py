"""The pages in a real headless Chromium against a real `claims serve`: what a reader sees,
time travel, live changes, the in-browser verification (and its failure when an answer is
tampered with), inert hostile text, the keyboard alone, and signing in."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api import story
from tests.audit.proxy import TamperingProxy
from tests.web.conftest import REPO, Served, screenshot, serve_seeded

pytestmark = pytest.mark.slow

KEY = "putin-phoned-elton-john"  # the seed story `claims demo` loads
WAIT = 10.0  # seconds a page may take to show what a test waits for
DOCS_SCREENSHOT = REPO / "docs" / "img" / "claim-page.png"


def until(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # A live page redraws what changed: an element found a moment ago may be gone; look again.
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05,
                             ignored_exceptions=[StaleElementReferenceException]).until(condition)
    except TimeoutException:
        raise AssertionError(f"gave up after {timeout:g} s waiting until {what}; the page says:\n"
                             f"{driver.find_element('tag name', 'body').text[:2000]}") from None


def text_of(driver: Any, css: str) -> str:
    return str(driver.find_element("css selector", css).text)


def no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return
    message = alert.text
    alert.dismiss()
    raise AssertionError(f"a script ran: an alert said {message!r}")


def open_page(driver: Any, url: str) -> None:
    driver.get(url)
    until(driver, lambda d: d.execute_script("return document.readyState") == "complete", f"{url} loaded")


def verify(driver: Any) -> str:
    button = driver.find_element("id", "verify")
    until(driver, lambda d: button.is_enabled(), "the Verify button is ready")
    button.click()
    return str(until(driver, lambda d: re.match(r"Verified|Verification failed", text_of(d, "#verify-result"))
                     and text_of(d, "#verify-result"), "the verification ended"))


def test_the_seed_storys_page_shows_the_dispute_and_who_speaks_for_whom(
    browser: Any, served: Served, tmp_path: Path,
) -> None:
    open_page(browser, f"{served.base}/claims/{KEY}")
    assert text_of(browser, "#status") == "Disputed"
    stances = text_of(browser, ".stances")
    assert "Elton John asserts" in stances
    assert "Vladimir Putin denies" in stances
    assert "Dmitry Peskov, for Vladimir Putin — quoted by TASS" in stances
    assert browser.find_element("css selector", "html").get_attribute("lang") == "en"
    assert len(browser.find_elements("css selector", "svg.timeline g.mark")) == 3
    assert len(browser.find_elements("css selector", "#history tbody tr")) == 3
    no_alert(browser)
    screenshot(browser, tmp_path / "claim-page.png")
    # The screenshot in docs/web.md and the README: the whole page, verified. Made when it is
    # missing or asked for (UPDATE_DOCS_SCREENSHOT=1): each run's key and times differ, and a
    # test run should not leave a changed file in the checkout.
    assert verify(browser).startswith("Verified"), text_of(browser, "#verify-steps")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1000, min(int(height) + 140, 4000))  # + the window's own chrome
    try:
        browser.execute_script("window.scrollTo(0, 0)")
        screenshot(browser, tmp_path / "claim-page-whole.png")
        if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1" or not DOCS_SCREENSHOT.exists():
            screenshot(browser, DOCS_SCREENSHOT)
    finally:
        browser.set_window_size(1200, 1000)


def test_time_travel_to_before_the_denial_shows_it_asserted(browser: Any, served: Served) -> None:
    open_page(browser, f"{served.base}/claims/{KEY}")
    field = browser.find_element("id", "recorded_as_of")
    field.send_keys("2015-09-15T12:00:00Z")
    browser.find_element("css selector", "form.travel button[type=submit]").click()
    until(browser, lambda d: "recorded_as_of=" in d.current_url, "the form was sent")
    assert text_of(browser, "#status") == "Asserted"
    assert "Vladimir Putin denies" not in text_of(browser, ".stances")
    assert "what the ledger knew at 2015-09-15T12:00:00Z" in text_of(browser, ".travelling")
    assert len(browser.find_elements("css selector", "#history tbody tr")) == 2


def test_a_posted_act_appears_on_open_pages_within_two_seconds(browser: Any, served: Served) -> None:
    key = f"live-{int(time.time() * 1000)}"
    open_page(browser, f"{served.base}/")
    until(browser, lambda d: "live" in text_of(d, "#live"), "the list follows the stream")
    served.post("/v1/claims", {"key": key, "statement": "The harbour bridge closes for repairs in May"})
    started = time.monotonic()
    until(browser, lambda d: d.find_elements("css selector", f'#claims a[href="/claims/{key}"]'),
          "the new claim is listed", timeout=2.0)
    def row(d: Any) -> str:
        return str(d.find_element("css selector", f'#claims a[href="/claims/{key}"]').find_element("xpath", "..").text)

    assert "Unattested" in until(browser, row, "the new claim's row")
    served.post(f"/v1/claims/{key}/assertions", {"party": {"id": "port-authority", "name": "Port authority"}})
    until(browser, lambda d: "Asserted" in row(d), "its row shows the assertion", timeout=2.0)
    assert time.monotonic() - started < 4.0

    open_page(browser, f"{served.base}/claims/{key}")
    time.sleep(0.3)  # the stream connects after the page loads
    served.post(f"/v1/claims/{key}/denials", {"party": {"id": "city-council", "name": "City council"}})
    until(browser, lambda d: text_of(d, "#status") == "Disputed", "the claim's page shows the denial", timeout=2.0)
    assert "City council denies" in text_of(browser, ".stances")
    assert "Updated live" in text_of(browser, "#live")


def test_verification_passes_and_pins_the_ledgers_key(browser: Any, served: Served) -> None:
    open_page(browser, f"{served.base}/claims/{KEY}")
    result = verify(browser)
    assert result.startswith("Verified: all 3 events"), text_of(browser, "#verify-steps")
    verdicts = [cell.text for cell in browser.find_elements("css selector", "#history td.verdict")]
    assert verdicts == ["✓ verified"] * 3
    pinned = browser.execute_script("return localStorage.getItem('claims-ledger.pinned-key')")
    served_key = served.server.http.get(f"{served.base}/v1/audit/public-key").json()["verifier_key"]
    assert pinned == served_key
    assert "Key pinned by this browser" in text_of(browser, "#key-fingerprint")


def tampered_root(path: str, body: bytes) -> bytes:
    if path != "/v1/audit/checkpoint":
        return body
    checkpoint = json.loads(body)
    lines = checkpoint["note"].split("\n")
    root = bytearray(base64.b64decode(lines[2]))
    root[0] ^= 1
    lines[2] = base64.b64encode(bytes(root)).decode()
    checkpoint["note"] = "\n".join(lines)
    return json.dumps(checkpoint).encode()


def tampered_proof(path: str, body: bytes) -> bytes:
    if not path.endswith("/proofs"):
        return body
    proofs = json.loads(body)
    first = proofs["events"][1]["audit_path"]
    first[0] = ("1" if first[0][0] != "1" else "2") + first[0][1:]
    return json.dumps(proofs).encode()


@pytest.fixture
def proxy(served: Served) -> Iterator[TamperingProxy]:
    proxy = TamperingProxy(served.base)
    yield proxy
    proxy.close()


@pytest.mark.parametrize(("rewrite", "failure"), [
    (tampered_root, "the checkpoint's signature does not verify with the pinned key"),
    (tampered_proof, "its inclusion proof leads to root"),
])
def test_verification_fails_visibly_when_an_answer_is_tampered_with(
    browser: Any, proxy: TamperingProxy, rewrite: Callable[[str, bytes], bytes], failure: str, tmp_path: Path,
) -> None:
    proxy.rewrite = rewrite
    open_page(browser, f"{proxy.base}/claims/{KEY}?said_as_of=2099-01-01")  # travelling: no live stream
    result = verify(browser)
    screenshot(browser, tmp_path / "tampered.png")
    assert result.startswith("Verification failed"), result
    assert failure in text_of(browser, ".verify"), text_of(browser, ".verify")
    assert proxy.changed >= 1
    if rewrite is tampered_proof:  # the one event whose proof was changed is the one that fails
        verdicts = [cell.text for cell in browser.find_elements("css selector", "#history td.verdict")]
        assert verdicts == ["✓ verified", "✗ failed", "✓ verified"]


def test_a_script_in_a_statement_is_shown_as_text_and_never_runs(browser: Any, served: Served) -> None:
    statement = '<script>alert("statement")</script><img src=x onerror="alert(\'img\')">'
    key = f"xss-{int(time.time() * 1000)}"
    written = served.post("/v1/claims", {"key": key, "statement": statement})
    served.post(f"/v1/claims/{key}/assertions", {
        "party": {"id": "mallory", "name": "<img src=x onerror=alert('party')>"},
        "quote": "<svg onload=alert('quote')>", "source": {"url": "javascript:alert('link')", "outlet": "Evil"},
    })
    served.server.http.get(f"{served.base}/v1/claims/{key}", params={"min_position": written["position"] + 1})
    open_page(browser, f"{served.base}/claims/{key}")
    no_alert(browser)
    assert text_of(browser, "h1.statement") == statement  # the quotation marks are CSS
    assert "<img src=x onerror=alert('party')>" in text_of(browser, ".stances")
    assert not browser.find_elements("css selector", "main img, main script, .stances svg")
    open_page(browser, f"{served.base}/?q=alert")
    no_alert(browser)
    assert statement in text_of(browser, "#claims")


def focus_by_tab(driver: Any, matches: Callable[[Any], bool], what: str, presses: int = 40) -> Any:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(presses):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        active = driver.switch_to.active_element
        if matches(active):
            return active
    raise AssertionError(f"{what} is not reachable with the Tab key")


def test_the_main_flows_work_by_keyboard_alone(browser: Any, served: Served) -> None:
    from selenium.webdriver.common.keys import Keys

    open_page(browser, f"{served.base}/")
    search = focus_by_tab(browser, lambda e: e.get_attribute("id") == "q", "the search field")
    search.send_keys("telephoned", Keys.ENTER)
    until(browser, lambda d: "q=telephoned" in d.current_url, "the search was sent")
    link = focus_by_tab(browser, lambda e: (e.get_attribute("href") or "").endswith(f"/claims/{KEY}"),
                        "the claim's link")
    link.send_keys(Keys.ENTER)
    until(browser, lambda d: d.current_url.endswith(f"/claims/{KEY}"), "the claim's page opened")
    field = focus_by_tab(browser, lambda e: e.get_attribute("id") == "said_as_of", "the time-travel field")
    field.send_keys("2015-09-14", Keys.ENTER)
    until(browser, lambda d: "said_as_of=2015-09-14" in d.current_url, "the time-travel form was sent")
    assert text_of(browser, "#status") == "Asserted"
    button = focus_by_tab(browser, lambda e: e.get_attribute("id") == "verify", "the Verify button")
    until(browser, lambda d: button.is_enabled(), "the Verify button is ready")
    button.send_keys(Keys.SPACE)
    until(browser, lambda d: text_of(d, "#verify-result").startswith("Verified"), "verified by keyboard")


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory, served: Served) -> Iterator[Served]:
    """A second server that asks readers for a token."""
    yield from serve_seeded(tmp_path_factory.mktemp("closed"), LEDGER_READ_TOKENS_REQUIRED="1")


def test_signing_in_when_read_tokens_are_required(browser: Any, closed: Served, tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    from tests.reliability.server import make_token

    _, reader = make_token(closed.server.database_url, "reader")
    open_page(browser, f"{closed.base}/claims/{KEY}")
    assert "Sign in to read" in text_of(browser, "main")
    token = browser.find_element("id", "token")
    token.send_keys("clm_not-a-real-token", Keys.ENTER)
    until(browser, lambda d: d.find_elements("id", "sign-in-problem"), "the refusal is shown")
    assert "unknown or revoked" in text_of(browser, "#sign-in-problem")
    browser.find_element("id", "token").send_keys(reader, Keys.ENTER)
    until(browser, lambda d: d.find_elements("id", "status"), "the claim's page after signing in")
    assert browser.current_url == f"{closed.base}/claims/{KEY}"
    assert text_of(browser, "#status") == "Disputed"
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: no script reads it
    assert verify(browser).startswith("Verified"), text_of(browser, "#verify-steps")
    open_page(browser, f"{closed.base}/")
    until(browser, lambda d: "live" in text_of(d, "#live"), "the stream accepted the cookie")
    screenshot(browser, tmp_path / "signed-in.png")
    browser.find_element("css selector", "form[action='/sign-out'] button").click()
    until(browser, lambda d: "Sign in to read" in text_of(d, "main"), "signed out")
    browser.delete_all_cookies()


def test_the_pages_fit_a_phone(browser: Any, served: Served, tmp_path: Path) -> None:
    browser.set_window_size(390, 844)
    try:
        for path in ("/", f"/claims/{KEY}"):
            open_page(browser, served.base + path)
            width = browser.execute_script("return document.documentElement.scrollWidth")
            viewport = browser.execute_script("return window.innerWidth")
            assert width <= viewport, f"{path} scrolls sideways on a phone ({width} > {viewport})"
        screenshot(browser, tmp_path / "phone.png")
    finally:
        browser.set_window_size(1200, 1000)


__all__ = ["story"]
