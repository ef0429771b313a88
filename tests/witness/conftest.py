"""Witnesses as real processes (`claims witness serve`), and logs made in memory to feed them.

`MemoryLog` is a transparency log of random leaves signed with its own key: its checkpoint
notes and consistency proofs are computed with domain/merkle.py's RFC 9162 definitions, and
`fork` makes another log with the same key and origin that agrees only on a prefix.
"""

from __future__ import annotations

import base64
import functools
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.merkle import consistency_path, leaf_hash, root_of
from domain.note import Checkpoint, Note, Signature, Signer, Verifier
from tests.cli.test_serve import CLAIMS, free_port
from tests.reliability.server import wait_until

START_TIMEOUT = 30.0
WITNESS = [*CLAIMS, "witness"]


@dataclass
class MemoryLog:
    """A log of leaf hashes, its checkpoints signed by `signer` (whose name is the origin)."""

    signer: Signer
    leaves: list[bytes] = field(default_factory=list)

    @classmethod
    def new(cls, origin: str, size: int = 0) -> MemoryLog:
        log = cls(Signer(origin, Ed25519PrivateKey.generate()))
        log.grow(size)
        return log

    @property
    def origin(self) -> str:
        return self.signer.name

    @property
    def vkey(self) -> str:
        return str(self.signer.verifier)

    def grow(self, count: int) -> None:
        self.leaves += [leaf_hash(os.urandom(32)) for _ in range(count)]

    def fork(self, at: int, size: int) -> MemoryLog:
        """The same log (key, origin) up to `at` leaves, other leaves after, `size` in all."""
        other = MemoryLog(self.signer, self.leaves[:at])
        other.grow(size - at)
        return other

    def root(self, size: int) -> bytes:
        return root_of(self.leaves[:size])

    def note(self, size: int, signer: Signer | None = None) -> Note:
        text = Checkpoint(self.origin, size, self.root(size)).text()
        return Note(text, ((signer or self.signer).sign(text),))

    def proof(self, old: int, size: int) -> list[bytes]:
        return consistency_path(self.leaves[:size], old) if 0 < old < size else []

    def body(self, old: int, size: int, *, proof: Sequence[bytes] | None = None, signer: Signer | None = None) -> bytes:
        """An add-checkpoint request body: `old`, the proof (the right one unless given), the note."""
        hashes = self.proof(old, size) if proof is None else proof
        lines = "".join(base64.b64encode(h).decode() + "\n" for h in hashes)
        return f"old {old}\n{lines}\n{self.note(size, signer)}".encode()


def cosignature_of(response: httpx.Response) -> Signature:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines(keepends=True)
    assert len(lines) == 1, response.text
    return Signature.parse_line(lines[0])


@dataclass
class WitnessProcess:
    """`claims witness serve` on a fixed port, killable and restartable with its state."""

    workdir: Path
    logs: list[str]
    name: str = "witness.test/w"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    @property
    def key(self) -> Path:
        return self.workdir / "witness-key.pem"

    @property
    def state(self) -> Path:
        return self.workdir / "witness-state.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "witness.log"

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*WITNESS, *args], capture_output=True, text=True, timeout=60)

    @functools.cached_property
    def verifier(self) -> Verifier:
        """What `claims witness key` prints for this witness (asked once)."""
        made = self.command("key", "--key", str(self.key), "--name", self.name)
        assert made.returncode == 0, made.stderr
        return Verifier.parse(made.stdout.strip())

    def start(self) -> None:
        self.launch()
        self.wait_up()

    def launch(self) -> None:
        """Start the process without waiting for it to answer."""
        args = ["serve", "--key", str(self.key), "--name", self.name, "--state", str(self.state),
                "--port", str(self.port), "--log-level", "warning"]
        for vkey in self.logs:
            args += ["--log", vkey]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([*WITNESS, *args], stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_up(self) -> None:

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the witness exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                return self.http.get(self.url + "/", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, START_TIMEOUT, f"the witness answers on {self.url}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.http.close()

    def post(self, body: bytes) -> httpx.Response:
        return self.http.post(self.url + "/add-checkpoint", content=body)


def run_witness(workdir: Path, logs: Sequence[MemoryLog | str], name: str = "witness.test/w") -> Iterator[WitnessProcess]:
    witness = WitnessProcess(workdir, [log if isinstance(log, str) else log.vkey for log in logs], name)
    witness.start()
    try:
        yield witness
    finally:
        witness.stop()
