"""Tamper evidence over HTTP (docs/auditing.md): checkpoints as C2SP signed notes, RFC 9162 proofs, the key.

    GET /checkpoint               the tlog-tiles checkpoint: the signed note, text/plain (open to all)
    GET /v1/audit/checkpoint      the same note in JSON, with its size, root, origin and cosignatures (open)
    GET /v1/audit/public-key      the raw key, its verifier key and the origin (open)
    GET /v1/audit/proofs/...      RFC 9162 inclusion and consistency proofs (role auditor)

Everything is answered from the projections' Merkle log in one read snapshot, so a
checkpoint's size and root, or a proof's hashes, always belong to the same tree. The note is
signed once per tree head (audit/signing.py CheckpointSigner), with every key that signs now:
the current key, and during the overlap after a rotation the previous one too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from api.problems import problem_responses
from api.routes.deps import Services, ServicesDep, consistent_read, require
from audit.signing import CheckpointSigner, checkpoint_signer, key_document
from domain.errors import InvalidInput, NotFound
from domain.ijson import MAX_SAFE_INTEGER
from domain.note import Checkpoint as TreeHead
from domain.note import Note, Signature
from store.tokens import Role

router = APIRouter(tags=["audit"])

HEX_HASH = r"^[0-9a-f]{64}$"
NOTE_MEDIA_TYPE = "text/plain; charset=utf-8"
# A checkpoint changes whenever the log grows: caches may keep it a few seconds, no longer.
CHECKPOINT_CACHE = "public, max-age=5"


class Cosignature(BaseModel):
    """A witness's C2SP tlog-cosignature of this checkpoint."""

    name: str = Field(description="The witness's key name.")
    key_id: str = Field(pattern=r"^[0-9a-f]{8}$", description="Its 4-byte key ID, hex.")
    timestamp: int = Field(description="When it cosigned, seconds since the epoch.")
    signature: str = Field(description="The signature line as the note carries it.")


class Checkpoint(BaseModel):
    """The current tree as a C2SP tlog-checkpoint in a signed note, with what the note says."""

    origin: str = Field(description="The log's origin: the note's first line and its key name.")
    tree_size: int = Field(ge=0, description="Events in the tree: the first tree_size events of the feed.")
    root_hash: str = Field(pattern=HEX_HASH, description="RFC 9162 root hash of that tree, hex (base64 in the note).")
    note: str = Field(description="The signed note, as GET /checkpoint serves it: verify this, not the fields above.")
    cosignatures: list[Cosignature] = Field(description="The witnesses' cosignatures the note carries.")


class InclusionProof(BaseModel):
    position: int = Field(description="The event's log position.")
    leaf_index: int = Field(description="Its leaf in the tree (0-based; the events in log order).")
    tree_size: int
    audit_path: list[str] = Field(description="RFC 9162 §2.1.3 inclusion proof, hex hashes, leaf upwards.")


class ConsistencyProof(BaseModel):
    from_size: int
    to_size: int
    proof: list[str] = Field(description="RFC 9162 §2.1.4 consistency proof, hex hashes.")


class PreviousKey(BaseModel):
    public_key: str = Field(pattern=HEX_HASH, description="The key a rotation replaced, hex.")
    verifier_key: str = Field(description="Its verifier key.")
    signs_until: str = Field(description="It signs each checkpoint beside the current key until then (RFC 3339).")


class PublicKey(BaseModel):
    algorithm: Literal["ed25519"] = "ed25519"
    public_key: str = Field(pattern=HEX_HASH, description="The raw 32-byte Ed25519 public key, hex. Pin it.")
    verifier_key: str = Field(
        description="The same key as a C2SP signed-note verifier key, <origin>+<key ID hex>+<base64(0x01 ‖ key)>.",
    )
    origin: str = Field(description="The log's origin: the first line of its checkpoints and its key name.")
    previous: PreviousKey | None = Field(
        default=None, description="During the overlap after a key rotation: the previous key, which signs too.",
    )


class UnknownPosition(NotFound):
    code = "unknown-position"
    title = "No event at this position"


def signer(svc: Services) -> CheckpointSigner:
    """The process's checkpoint signer (its key made on first use)."""
    return checkpoint_signer(svc.runtime.database)


def cosignatures_of(svc: Services, size: int, root_hash: bytes) -> list[Signature]:
    """The witnesses' cosignatures kept for the tree, when the process submits to witnesses."""
    witnessing = getattr(svc, "witnessing", None)
    cosignatures = getattr(witnessing, "cosignatures", None)
    return list(cosignatures(size, root_hash)) if callable(cosignatures) else []


def current_note(svc: Services) -> tuple[Note, list[Signature]]:
    """The signed note of the current tree, with the witnesses' cosignatures of it."""
    size, root = svc.runtime.tree_head()
    cosignatures = cosignatures_of(svc, size, root)
    return svc.runtime.sign_checkpoint(size, root).with_signatures(*cosignatures), cosignatures


def _beyond(field: str, size: int, log_size: int) -> InvalidInput:
    return InvalidInput(
        f"{field} {size} is beyond the log, which holds {log_size} events; ask for at most {log_size}", field
    )


@router.get(
    "/checkpoint", response_class=Response,
    summary="The current checkpoint: a C2SP tlog-checkpoint in a signed note (open to all)",
    responses={200: {"content": {NOTE_MEDIA_TYPE: {}}, "description": "The signed note."},
               **problem_responses(503)},
)
def get_checkpoint_note(svc: ServicesDep) -> Response:
    note, _ = current_note(svc)
    return Response(str(note), media_type=NOTE_MEDIA_TYPE, headers={"Cache-Control": CHECKPOINT_CACHE})


@router.get(
    "/v1/audit/checkpoint", response_model=Checkpoint,
    summary="The current checkpoint, its signed note and its cosignatures (open to all)",
    dependencies=[Depends(consistent_read)], responses=problem_responses(422, 503),
)
def get_checkpoint(svc: ServicesDep) -> Any:
    note, cosignatures = current_note(svc)
    tree = TreeHead.parse(note.text)
    return {
        "origin": tree.origin,
        "tree_size": tree.size,
        "root_hash": tree.root_hash.hex(),
        "note": str(note),
        "cosignatures": [
            {"name": c.name, "key_id": c.key_id.hex(), "timestamp": c.timestamp, "signature": c.line().rstrip("\n")}
            for c in cosignatures
        ],
    }


@router.get(
    "/v1/audit/proofs/inclusion", response_model=InclusionProof,
    summary="Proof that the event at a position is in the tree of tree_size events (role auditor)",
    dependencies=[Depends(require(Role.AUDITOR))],
    responses=problem_responses(401, 403, 404, 422, 503),
)
def get_inclusion_proof(
    svc: ServicesDep,
    position: Annotated[int, Query(ge=1, le=MAX_SAFE_INTEGER, description="The event's log position.")],
    tree_size: Annotated[int | None, Query(
        ge=1, le=MAX_SAFE_INTEGER, description="The tree to prove inclusion in (a checkpoint's tree_size); default: now.",
    )] = None,
) -> Any:
    merkle = svc.runtime.engine.merkle
    with svc.runtime.store.reading() as cur:
        log_size = merkle.size(cur)
        size = log_size if tree_size is None else tree_size
        if size > log_size:
            raise _beyond("tree_size", size, log_size)
        leaf_index = merkle.leaf_index_of(cur, position)
        if leaf_index is None:
            raise UnknownPosition(
                f"no event at position {position} is in the log; positions are those the feed and writes give"
            )
        if leaf_index >= size:
            raise InvalidInput(
                f"the event at position {position} is leaf {leaf_index}, which a tree of {size} events does not "
                f"hold; ask with a tree_size of at least {leaf_index + 1}", "tree_size",
            )
        path = merkle.inclusion(cur, leaf_index, size)
    return {"position": position, "leaf_index": leaf_index, "tree_size": size, "audit_path": [h.hex() for h in path]}


@router.get(
    "/v1/audit/proofs/consistency", response_model=ConsistencyProof,
    summary="Proof that the tree of from_size events is a prefix of the tree of to_size (role auditor)",
    dependencies=[Depends(require(Role.AUDITOR))],
    responses=problem_responses(401, 403, 422, 503),
)
def get_consistency_proof(
    svc: ServicesDep,
    from_size: Annotated[int, Query(ge=0, le=MAX_SAFE_INTEGER, description="The older tree's size (a kept checkpoint's).")],
    to_size: Annotated[int | None, Query(ge=0, le=MAX_SAFE_INTEGER, description="The newer tree's size; default: now.")] = None,
) -> Any:
    merkle = svc.runtime.engine.merkle
    with svc.runtime.store.reading() as cur:
        log_size = merkle.size(cur)
        size = log_size if to_size is None else to_size
        if size > log_size:
            raise _beyond("to_size", size, log_size)
        if from_size == 0:
            raise InvalidInput(
                "from_size must be at least 1: an empty tree is a prefix of every tree and has no proof", "from_size"
            )
        if from_size > size:
            raise InvalidInput(
                f"from_size {from_size} is larger than to_size {size}; a tree is only consistent with later ones",
                "from_size",
            )
        proof = merkle.consistency(cur, from_size, size)
    return {"from_size": from_size, "to_size": size, "proof": [h.hex() for h in proof]}


@router.get("/v1/audit/public-key", response_model=PublicKey,
            summary="The ledger's Ed25519 public key and verifier key (open to all)")
def get_public_key(svc: ServicesDep) -> Any:
    checkpoints = signer(svc)
    return key_document(checkpoints.keyring(), checkpoints.clock())


class TreeRef(BaseModel):
    size: int
    root_hash: str = Field(description="The tree's root hash, hex.")


class Rollback(BaseModel):
    lost: TreeRef = Field(description="The largest tree the ledger had signed before the restore.")
    resumed: TreeRef = Field(description="The tree it resumed from: events past its size were lost.")
    acknowledged_at: str = Field(description="When an operator acknowledged it (`claims recover`).")
    note: str = Field(
        description="The statement as a signed note: origin, `rollback statement`, `signed <size> <root>`, "
        "`resumed <size> <root>`, `acknowledged <time>`, signed by the ledger's checkpoint key.",
    )


class Rollbacks(BaseModel):
    rollbacks: list[Rollback]


@router.get("/v1/audit/rollbacks", response_model=Rollbacks,
            summary="The ledger's signed statements of what restores of its database lost (open to all)")
def get_rollbacks(svc: ServicesDep) -> Any:
    guard = svc.runtime.guard
    return {"rollbacks": guard.statements() if guard is not None else []}
