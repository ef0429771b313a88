"""A witness killed (SIGKILL) between requests and in the middle of a load never cosigns two
different trees of one size, and never forgets a tree it cosigned.

Two forks of one log (same key, same origin, agreeing on a prefix) are submitted at once by
several clients, each following the witness's 409 answers as a log would, while the witness
process is killed and restarted. Every cosignature that came back is checked: it verifies
on the tree it was asked for, and for each size all of them are of one root.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

from domain.note import Note
from tests.witness.conftest import MemoryLog, WitnessProcess, cosignature_of

ROUNDS = 2
CLIENTS_PER_FORK = 4
PREFIX, SIZE = 4, 60


class Submitter(threading.Thread):
    """A log's client: grows its fork a few leaves at a time, learning the witness's size from 409s."""

    def __init__(self, witness: WitnessProcess, fork: MemoryLog, stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        self.witness, self.fork, self.stop = witness, fork, stop
        self.random = random.Random(seed)
        self.cosigned: list[tuple[int, bytes, Note]] = []  # (size, root, the note with the cosignature)
        self.statuses: defaultdict[int, int] = defaultdict(int)
        self.unexpected: list[str] = []  # answers no log should get (checked by the test, not the thread)

    def run(self) -> None:
        old = 0
        with httpx.Client(timeout=5) as http:
            while not self.stop.is_set():
                size = min(SIZE, old + self.random.randint(0, 3))
                try:
                    response = http.post(f"{self.witness.url}/add-checkpoint", content=self.fork.body(old, size))
                except httpx.TransportError:  # killed: try again once it is back
                    time.sleep(0.02)
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    note = self.fork.note(size).with_signatures(cosignature_of(response))
                    self.cosigned.append((size, self.fork.root(size), note))
                    old = size
                elif response.status_code == 409 and response.headers["content-type"] == "text/x.tlog.size":
                    old = int(response.text)
                else:  # 422: the other fork won past the prefix; 409: it won at this very size
                    if response.status_code not in (409, 422):
                        self.unexpected.append(f"{response.status_code} {response.text[:200]}")
                    old = 0


def test_kills_never_make_the_witness_cosign_two_trees_of_one_size(tmp_path: Path) -> None:
    logs = [MemoryLog.new(f"crash.test/{i}", SIZE) for i in range(ROUNDS)]
    witness = WitnessProcess(tmp_path, [log.vkey for log in logs])
    verifier = witness.verifier
    witness.start()
    rng = random.Random(19)
    submitters: list[Submitter] = []
    try:
        for number, log in enumerate(logs):
            forks = [log, log.fork(at=PREFIX, size=SIZE)]
            stop = threading.Event()
            clients = [Submitter(witness, fork, stop, seed=number * 100 + i)
                       for i, fork in enumerate(forks * CLIENTS_PER_FORK)]
            for client in clients:
                client.start()
            time.sleep(rng.uniform(0.05, 0.4))
            witness.kill()  # mid-load: requests in flight, some committed and not yet answered
            witness.start()
            time.sleep(rng.uniform(0.1, 0.3))
            stop.set()
            for client in clients:
                client.join(10)
            witness.kill()  # between requests
            witness.start()
            submitters += clients
            probe = witness.post(log.body(0, 0))  # old 0 against what it holds: its size, or a first cosign
            sizes = [size for c in clients for size, _, _ in c.cosigned]
            if sizes:
                assert probe.status_code == 409 and int(probe.text) >= max(sizes), probe.text
    finally:
        witness.stop()

    assert not [u for client in submitters for u in client.unexpected]
    roots: defaultdict[tuple[str, int], set[bytes]] = defaultdict(set)
    for client in submitters:
        for size, root, note in client.cosigned:
            assert note.verified_by([verifier]) == [verifier]
            roots[(client.fork.origin, size)].add(root)
    assert roots, "no checkpoint was cosigned at all"
    two = {key: len(found) for key, found in roots.items() if len(found) > 1}
    assert not two, f"two trees of one size were cosigned: {two}"
    assert any(size > PREFIX for _, size in roots), "the load never went past the forks' common prefix"
    statuses = sum(sum(c.statuses.values()) for c in submitters)
    assert statuses > 50, statuses

