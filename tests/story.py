"""The seed story's people and sources, shared by tests (a Moscow Times report of 15 September 2015: Kremlin rejects claim that Putin phoned Elton John)."""

from __future__ import annotations

CLAIM_KEY = "putin-phoned-elton-john"
STATEMENT = "Vladimir Putin telephoned Elton John on 14 September 2015"
ELTON = {"id": "elton-john", "name": "Elton John"}
PUTIN = {"id": "vladimir-putin", "name": "Vladimir Putin"}
PESKOV = {"id": "dmitry-peskov", "name": "Dmitry Peskov"}
INSTAGRAM = {"url": "https://www.instagram.com/eltonjohn", "outlet": "Instagram", "title": None,
             "published_at": "2015-09-14"}
TASS = {"url": None, "outlet": "TASS", "title": None, "published_at": "2015-09-15"}
ELTON_QUOTE = (
    "I would like to thank President Putin for reaching out to me via telephone today, "
    "and I look forward to meeting with him face to face"
)


def elton_asserts(**extra: object) -> dict[str, object]:
    return {"act_id": "elton-instagram", "party": ELTON, "said_at": "2015-09-14",
            "source": INSTAGRAM, "quote": ELTON_QUOTE, **extra}


def peskov_denies(**extra: object) -> dict[str, object]:
    return {"act_id": "peskov-tass", "party": PESKOV, "on_behalf_of": PUTIN, "said_at": "2015-09-15",
            "reported_via": [TASS], "quote": "It is not true", **extra}
