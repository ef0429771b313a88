"""The seed story (Elton John's Instagram post, the Kremlin's denial via TASS) as HTTP bodies."""

from __future__ import annotations

from typing import Any

from tests.story import CLAIM_KEY as KEY
from tests.story import ELTON, PESKOV, PUTIN, STATEMENT

Json = dict[str, Any]
__all__ = ["ELTON", "KEY", "PESKOV", "PUTIN", "STATEMENT", "elton_asserts", "peskov_denies", "registration"]

INSTAGRAM = {"url": "https://www.instagram.com/p/7r0fHKSsBC/", "outlet": "Instagram", "published_at": "2015-09-14"}
TASS = {"url": "https://tass.com/politics/821412", "outlet": "TASS", "published_at": "2015-09-15"}
MOSCOW_TIMES = {
    "url": "https://www.themoscowtimes.com/2015/09/15/kremlin-rejects-claim-that-putin-phoned-elton-john-a49589",
    "outlet": "The Moscow Times", "title": "Kremlin Rejects Claim That Putin Phoned Elton John",
    "published_at": "2015-09-15",
}


def registration(**overrides: Any) -> Json:
    return {"statement": STATEMENT, "key": KEY, "subjects": ["vladimir-putin", "elton-john"], **overrides}


def elton_asserts(**overrides: Any) -> Json:
    return {
        "party": ELTON, "said_at": "2015-09-14T21:00:00Z", "source": INSTAGRAM,
        "reported_via": [MOSCOW_TIMES],
        "quote": "Thank-you to President Vladimir Putin for reaching out and speaking via telephone with me today.",
        "act_id": "elton-instagram", **overrides,
    }


def peskov_denies(**overrides: Any) -> Json:
    return {
        "party": PESKOV, "on_behalf_of": PUTIN, "said_at": "2015-09-15", "source": TASS,
        "reported_via": [MOSCOW_TIMES],
        "quote": "I can safely say that President Putin did not have any telephone conversation with Elton John.",
        "act_id": "peskov-tass", **overrides,
    }
