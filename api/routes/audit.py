"""Tamper evidence over HTTP (docs/auditing.md): signed checkpoints of the Merkle log, RFC 9162 proofs, the key.

Everything is answered from the projections' Merkle log in one read snapshot, so a
checkpoint's size and root, or a proof's hashes, always belong to the same tree.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.problems import problem_responses
from api.routes.deps import Services, ServicesDep, consistent_read, require
from audit.signing import key_path, load_or_create_key, public_key_hex, sign_checkpoint
from domain.errors import InvalidInput, NotFound
from domain.ijson import MAX_SAFE_INTEGER
from domain.values import format_instant
from store.tokens import Role

router = APIRouter(prefix="/v1/audit", tags=["audit"])

HEX_HASH = r"^[0-9a-f]{64}$"


class Checkpoint(BaseModel):
    """A signed statement of the tree of the first `tree_size` events."""

    tree_size: int = Field(ge=0, description="Events in the tree: the first tree_size events of the feed.")
    root_hash: str = Field(pattern=HEX_HASH, description="RFC 9162 root hash of that tree, hex.")
    timestamp: str = Field(description="When the checkpoint was signed, RFC 3339 UTC.")
    signature: str = Field(
        pattern=r"^[0-9a-f]{128}$",
        description="Ed25519 over the RFC 8785 canonical JSON of {tree_size, root_hash, timestamp}, hex.",
    )


class InclusionProof(BaseModel):
    position: int = Field(description="The event's log position.")
    leaf_index: int = Field(description="Its leaf in the tree (0-based; the events in log order).")
    tree_size: int
    audit_path: list[str] = Field(description="RFC 9162 §2.1.3 inclusion proof, hex hashes, leaf upwards.")


class ConsistencyProof(BaseModel):
    from_size: int
    to_size: int
    proof: list[str] = Field(description="RFC 9162 §2.1.4 consistency proof, hex hashes.")


class PublicKey(BaseModel):
    algorithm: Literal["ed25519"] = "ed25519"
    public_key: str = Field(pattern=HEX_HASH, description="The raw 32-byte Ed25519 public key, hex. Pin it.")


class UnknownPosition(NotFound):
    code = "unknown-position"
    title = "No event at this position"


@functools.lru_cache(maxsize=8)
def _key_at(path: str) -> Ed25519PrivateKey:
    return load_or_create_key(Path(path))


def signing_key(svc: Services) -> Ed25519PrivateKey:
    """The ledger's key (made on first use), loaded once per process."""
    return _key_at(str(key_path(svc.runtime.database)))


def _beyond(field: str, size: int, log_size: int) -> InvalidInput:
    return InvalidInput(
        f"{field} {size} is beyond the log, which holds {log_size} events; ask for at most {log_size}", field
    )


@router.get(
    "/checkpoint", response_model=Checkpoint, summary="A signed checkpoint of the current tree (role auditor)",
    dependencies=[Depends(require(Role.AUDITOR)), Depends(consistent_read)],
    responses=problem_responses(401, 403, 422, 503),
)
def get_checkpoint(svc: ServicesDep) -> Any:
    merkle = svc.runtime.engine.merkle
    with svc.runtime.store.reading() as cur:
        size = merkle.size(cur)
        root = merkle.root(cur, size)
    return sign_checkpoint(signing_key(svc), size, root.hex(), format_instant(datetime.now(UTC)))


@router.get(
    "/proofs/inclusion", response_model=InclusionProof,
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
    "/proofs/consistency", response_model=ConsistencyProof,
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


@router.get("/public-key", response_model=PublicKey, summary="The ledger's Ed25519 public key (open to all)")
def get_public_key(svc: ServicesDep) -> Any:
    return {"algorithm": "ed25519", "public_key": public_key_hex(signing_key(svc))}
