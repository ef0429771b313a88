"""The claims ledger's domain: claims, acts, the stance/status fold, and the Ledger."""

from domain.claim import Claim
from domain.commands import RecordAct, RegisterClaim
from domain.errors import LedgerError
from domain.fold import ClaimFold, ClaimStatus, Stance, fold_claim
from domain.ledger import Ledger, Outcome

__all__ = [
    "Claim", "ClaimFold", "ClaimStatus", "Ledger", "LedgerError", "Outcome",
    "RecordAct", "RegisterClaim", "Stance", "fold_claim",
]
