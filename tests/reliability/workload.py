"""Clients of the ledger over real HTTP: planned writes, their answers, and clients in other processes.

A `Write` is one request a client means to make; an `Answer` is what came back (or that
nothing did). Plans are plain data, so a client can run in a thread or in a process of
its own (`run_in_process`, for `ProcessPoolExecutor`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

Json = dict[str, Any]

HOT_KEY = "putin-phoned-elton-john"
HOT_STATEMENT = "Vladimir Putin telephoned Elton John on 14 September 2015"
PARTIES = [
    {"id": "elton-john", "name": "Elton John"},
    {"id": "dmitry-peskov", "name": "Dmitry Peskov"},
    {"id": "vladimir-putin", "name": "Vladimir Putin"},
    {"id": "tass", "name": "TASS"},
    {"id": "bbc-news", "name": "BBC News"},
    {"id": "the-moscow-times", "name": "The Moscow Times"},
]
OUTLETS = ["TASS", "BBC", "The Moscow Times", "Instagram", "Interfax"]
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def claim_key(i: int) -> str:
    return f"kremlin-call-report-{i}"


def claim_statement(i: int) -> str:
    return f"The Kremlin confirmed call report number {i} about Elton John"


@dataclass(frozen=True)
class Write:
    """One write a client means to make."""

    path: str
    body: Json
    idempotency_key: str | None = None
    if_match: str | None = None

    @property
    def claim(self) -> str:
        return self.path.split("/")[3] if self.path.count("/") >= 4 else str(self.body.get("key"))

    @property
    def kind(self) -> str:
        return self.path.rsplit("/", 1)[1] if self.path.count("/") >= 4 else "claims"


@dataclass
class Answer:
    """What a write got: a status and body, or no answer at all (`error`)."""

    write: Write
    status: int | None
    body: Json | None = None
    error: str | None = None
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def answered(self) -> bool:
        return self.status is not None


def registration(i: int, key: str | None = None) -> Json:
    return {"statement": claim_statement(i), "key": key or claim_key(i), "subjects": ["Elton John", "Kremlin"]}


def act_body(rng: random.Random, act_id: str | None, n: int) -> Json:
    party = rng.choice(PARTIES)
    body: Json = {
        "party": party, "said_at": f"2015-09-{rng.randint(10, 28):02d}",
        "source": {"outlet": rng.choice(OUTLETS), "url": f"https://example.org/report/{n}"},
        "quote": f"Statement {n} as reported",
    }
    if rng.random() < 0.3:
        body["on_behalf_of"] = PARTIES[2]
    if act_id is not None:
        body["act_id"] = act_id
    return body


def acts_plan(
    client: str, count: int, claims: Sequence[str], *, seed: int, hot_share: float = 0.5,
    idempotency: bool = False, client_act_ids: float = 0.5, stale_if_match: float = 0.0,
) -> list[Write]:
    """`count` assertions and denials by one client, about `hot_share` of them on the hot claim.

    About `client_act_ids` of them name their act_id; the others get one from the server, or
    from their Idempotency-Key (every write has a key with `idempotency`); `stale_if_match`
    of them send If-Match "2", which most claims have moved past.
    """
    rng = random.Random(seed)
    plan: list[Write] = []
    for n in range(count):
        claim = HOT_KEY if rng.random() < hot_share else rng.choice(claims)
        act_id = f"{client}-{n}" if rng.random() < client_act_ids else None
        kind = rng.choice(["assertions", "denials"])
        plan.append(Write(
            f"/v1/claims/{claim}/{kind}", act_body(rng, act_id, n),
            idempotency_key=f"{client}-key-{n}" if idempotency or (act_id is None and rng.random() < 0.5) else None,
            if_match='"2"' if rng.random() < stale_if_match else None,
        ))
    return plan


class Client:
    """One HTTP client with a token: sends writes and reads."""

    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=TIMEOUT, headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self.http.close()

    def send(self, write: Write) -> Answer:
        headers = {}
        if write.idempotency_key is not None:
            headers["Idempotency-Key"] = write.idempotency_key
        if write.if_match is not None:
            headers["If-Match"] = write.if_match
        started = time.monotonic()
        try:
            response = self.http.post(write.path, json=write.body, headers=headers)
        except httpx.TransportError as e:
            return Answer(write, None, error=f"{type(e).__name__}: {e}", seconds=time.monotonic() - started)
        try:
            body = response.json()
        except ValueError:
            body = {"text": response.text[:500]}
        return Answer(write, response.status_code, body if isinstance(body, dict) else {"json": body},
                      seconds=time.monotonic() - started, headers=dict(response.headers))

    def unseen(self, answer: Answer) -> str | None:
        """Read-your-writes: None when the claim's history read at the answer's position holds
        the act, else what the read answered."""
        assert answer.body is not None
        response = self.http.get(f"/v1/claims/{answer.write.claim}/history",
                                 params={"min_position": answer.body["position"]})
        if response.status_code == 200 and any(
            e["act_id"] == answer.body.get("act_id") for e in response.json()["events"]
        ):
            return None
        return f"{response.status_code} {response.text[:300]}"


def run_plan(
    base: str, token: str, plan: Sequence[Write], *, check_reads_every: int = 0,
    on_no_answer: Callable[[Answer], None] | None = None, start_at: float = 0.0,
) -> tuple[list[Answer], list[Answer]]:
    """Send every write in order, from wall-clock time `start_at` on (so clients in several
    processes start together); (answers, acknowledged writes a read at their position did not show)."""
    client = Client(base, token)
    time.sleep(max(0.0, start_at - time.time()))
    answers: list[Answer] = []
    unseen: list[Answer] = []
    try:
        for i, write in enumerate(plan):
            answer = client.send(write)
            answers.append(answer)
            if not answer.answered and on_no_answer is not None:
                on_no_answer(answer)
            if answer.ok and check_reads_every and i % check_reads_every == 0:
                read = client.unseen(answer)
                if read is not None:
                    answer.error = f"not seen at its position: {read}"
                    unseen.append(answer)
    finally:
        client.close()
    return answers, unseen


def run_in_process(
    base: str, token: str, plans: list[list[Json]], check_reads_every: int, start_at: float
) -> list[list[Json]]:
    """Several clients (threads) in this process; answers as plain data for the parent process."""
    results: list[list[Json]] = [[] for _ in plans]

    def one(i: int) -> None:
        answers, unseen = run_plan(base, token, [Write(**w) for w in plans[i]],
                                   check_reads_every=check_reads_every, start_at=start_at)
        unseen_ids = {id(a) for a in unseen}
        results[i] = [{**asdict(a), "unseen": id(a) in unseen_ids} for a in answers]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(plans))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def answer_from(data: Json) -> tuple[Answer, bool]:
    """An Answer sent back by `run_in_process`, and whether its read did not show it."""
    fields = dict(data)
    unseen = bool(fields.pop("unseen"))
    fields["write"] = Write(**fields["write"])
    return Answer(**fields), unseen
