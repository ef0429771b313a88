"""A C2SP tlog-witness: cosigns a log's checkpoints once each is shown consistent with the last.

    POST /add-checkpoint     old <size>\\n, consistency proof lines, a blank line, the signed checkpoint
    GET  /                   the witness's verifier key and the logs it follows (text/plain)
    GET  /healthz            the same in JSON, for probes

The answers are those the protocol fixes: 200 with the cosignature line, 404 for an origin
the witness does not follow, 403 when no signature is a known log key's, 400 for a body that
is not the protocol's (or an old size past the checkpoint's), 409 with the witness's size
(`text/x.tlog.size`) when the old size is not the one it last cosigned, 409 (a problem
document) when the same size comes with another root hash, 422 when the consistency proof
does not verify. Refusals other than the size answer are RFC 9457 problem documents saying
what to fix. The state (witness/state.py) moves before the cosignature is made.
"""

from __future__ import annotations

import base64
import binascii
import http
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from domain.merkle import HASH_SIZE, verify_consistency
from domain.note import COSIGNATURE_V1, Checkpoint, Note, NoteError, Signer, Verifier
from witness.state import Witnessed, WitnessState

log = logging.getLogger("claims.witness")

MAX_BODY_BYTES = 64 * 1024
MAX_PROOF_LINES = 63
SIZE_MEDIA_TYPE = "text/x.tlog.size"
PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:claims-ledger:problem:"
_OLD_LINE = re.compile(r"old (0|[1-9][0-9]{0,19})")


class WitnessRefusal(Exception):
    """A request the witness does not cosign: its HTTP status, a problem code and what to fix."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class StaleSize(Exception):
    """The request's old size is not the size the witness last cosigned (409 with that size)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


@dataclass(frozen=True)
class Submission:
    """An add-checkpoint body, parsed: the old size, the proof and the signed checkpoint."""

    old_size: int
    proof: tuple[bytes, ...]
    note: Note
    checkpoint: Checkpoint


def parse_submission(body: bytes) -> Submission:
    """The add-checkpoint body, strictly as tlog-witness writes it; WitnessRefusal(400) otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WitnessRefusal(400, "malformed-submission", f"the body is not UTF-8 (byte {e.start})") from None
    head, blank, rest = text.partition("\n\n")
    if not blank:
        raise WitnessRefusal(
            400, "malformed-submission",
            "the body is `old <size>`, the consistency proof's lines, an empty line, then the signed checkpoint; "
            "it has no empty line",
        )
    old_line, *proof_lines = head.split("\n")
    match = _OLD_LINE.fullmatch(old_line)
    if match is None:
        raise WitnessRefusal(
            400, "malformed-submission",
            f"the first line must be `old <size>` in decimal without leading zeros (got {old_line!r:.60})",
        )
    if len(proof_lines) > MAX_PROOF_LINES:
        raise WitnessRefusal(
            400, "malformed-submission",
            f"a consistency proof has at most {MAX_PROOF_LINES} lines; this one has {len(proof_lines)}",
        )
    proof = []
    for number, line in enumerate(proof_lines, start=2):
        try:
            node = base64.b64decode(line.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            node = b""
        if len(node) != HASH_SIZE or base64.b64encode(node).decode("ascii") != line:
            raise WitnessRefusal(
                400, "malformed-submission",
                f"line {number} must be one consistency-proof hash in base64 ({HASH_SIZE} bytes; got {line!r:.60})",
            )
        proof.append(node)
    try:
        note = Note.parse(rest)
        checkpoint = Checkpoint.parse(note.text)
    except NoteError as e:
        raise WitnessRefusal(400, "malformed-checkpoint", f"the signed checkpoint is refused: {e}") from None
    return Submission(int(match.group(1)), tuple(proof), note, checkpoint)


class Witness:
    """The witness's rules: which logs it follows, its key and its state."""

    def __init__(self, signer: Signer, logs: Iterable[Verifier], state: WitnessState) -> None:
        if signer.alg != COSIGNATURE_V1:
            raise ValueError("a witness signs cosignatures (algorithm 0x04)")
        self.signer = signer
        self.state = state
        self.logs: dict[str, list[Verifier]] = {}
        for verifier in logs:
            self.logs.setdefault(verifier.name, []).append(verifier)

    def add_checkpoint(self, body: bytes) -> str:
        """The cosignature line(s) of the submitted checkpoint; WitnessRefusal or StaleSize when it is not cosigned."""
        submission = parse_submission(body)
        checkpoint = submission.checkpoint
        keys = self.logs.get(checkpoint.origin)
        if keys is None:
            raise WitnessRefusal(
                404, "unknown-log",
                f"this witness does not follow the log {checkpoint.origin!r:.120}; it follows "
                f"{', '.join(map(repr, sorted(self.logs))) or 'no log'}",
            )
        if not submission.note.verified_by(keys):
            raise WitnessRefusal(
                403, "unknown-log-key",
                f"no signature on the checkpoint verifies with a key this witness trusts for {checkpoint.origin!r:.120}",
            )
        old = submission.old_size
        if old > checkpoint.size:
            raise WitnessRefusal(
                400, "old-size-past-checkpoint",
                f"the old size {old} is larger than the checkpoint's size {checkpoint.size}; a log only grows",
            )
        new = Witnessed(checkpoint.size, checkpoint.root_hash)
        stored = self.state.latest(checkpoint.origin)
        known = 0 if stored is None else stored.size
        if old != known:
            raise StaleSize(known)
        self._check_consistency(submission, stored, new)
        moved = self.state.advance(checkpoint.origin, stored, new)
        if moved is not None:  # another request moved the state since it was read
            raise StaleSize(moved.size)
        # Only now, with the tree recorded as the latest, is it cosigned.
        return self.signer.sign(submission.note.text, timestamp=int(time.time())).line()

    @staticmethod
    def _check_consistency(submission: Submission, stored: Witnessed | None, new: Witnessed) -> None:
        old, proof = submission.old_size, submission.proof
        if stored is not None and old == new.size:
            if stored.root_hash != new.root_hash:
                raise WitnessRefusal(
                    409, "fork",
                    f"this witness cosigned a tree of {old} leaves with the root "
                    f"{base64.b64encode(stored.root_hash).decode()}; the checkpoint has another root for the "
                    "same size: the log presents two different trees",
                )
            if proof:
                raise WitnessRefusal(422, "bad-proof", "the old size is the checkpoint's: the proof must be empty")
            return
        if old == 0:
            if proof:
                raise WitnessRefusal(
                    422, "bad-proof", "the old size is 0: the consistency proof must be empty (an empty tree needs none)"
                )
            return
        assert stored is not None  # old == stored size > 0
        if not verify_consistency(old, new.size, stored.root_hash, new.root_hash, list(proof)):
            raise WitnessRefusal(
                422, "bad-proof",
                f"the consistency proof does not show the tree of {old} leaves this witness cosigned to be a prefix "
                f"of the checkpoint's tree of {new.size}",
            )


def problem(status: int, code: str, detail: str, instance: str) -> JSONResponse:
    phrase = http.HTTPStatus(status).phrase
    return JSONResponse(
        {"type": TYPE_PREFIX + code, "title": phrase, "status": status, "detail": detail, "instance": instance},
        status_code=status, media_type=PROBLEM_MEDIA_TYPE,
    )


async def _read_body(request: Request) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_witness_app(witness: Witness) -> Starlette:
    """The witness's HTTP server (an ASGI app for uvicorn)."""

    async def add_checkpoint(request: Request) -> Response:
        body = await _read_body(request)
        if body is None:
            return problem(413, "body-too-large", f"a submission is at most {MAX_BODY_BYTES // 1024} KiB",
                           request.url.path)
        try:
            line = await run_in_threadpool(witness.add_checkpoint, body)
        except StaleSize as e:
            # Exactly this content type (no charset): clients match it to tell this 409 from a fork's.
            return Response(f"{e.size}\n", status_code=409, headers={"Content-Type": SIZE_MEDIA_TYPE})
        except WitnessRefusal as e:
            if e.status in (409, 422):
                log.warning("refused a checkpoint: %s", e.detail)
            return problem(e.status, e.code, e.detail, request.url.path)
        return PlainTextResponse(line, media_type="text/plain; charset=utf-8")

    async def about(request: Request) -> Response:
        lines = [f"tlog-witness {witness.signer.verifier}", *(f"log {key}" for keys in witness.logs.values()
                                                              for key in keys)]
        return PlainTextResponse("\n".join(lines) + "\n")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "witness": str(witness.signer.verifier),
                             "logs": [str(key) for keys in witness.logs.values() for key in keys]})

    async def http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):  # a fault of the witness itself (its state file, say)
            log.error("add-checkpoint failed", exc_info=exc)
            return problem(500, "internal-error", f"the witness failed ({type(exc).__name__}); nothing was "
                           "cosigned, and its operator's log says why", request.url.path)
        detail = {404: "the witness serves POST /add-checkpoint, GET / and GET /healthz",
                  405: "add-checkpoint takes POST; / and /healthz take GET"}.get(
                      exc.status_code, http.HTTPStatus(exc.status_code).phrase)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "error")
        return problem(exc.status_code, code, detail, request.url.path)

    return Starlette(
        routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"]), Route("/", about, methods=["GET"]),
                Route("/healthz", healthz, methods=["GET"])],
        exception_handlers={HTTPException: http_error, Exception: http_error},
    )

