"""Values are normalised so the same input always makes the same event bytes."""

from __future__ import annotations


def test_said_at_before_the_year_1000_keeps_four_year_digits_and_folds() -> None:
    from domain.fold import fold_claim
    from domain.values import check_said_at, format_instant, parse_instant

    said = check_said_at("0999-06-01T12:00:00+01:00")
    assert said == "0999-06-01T11:00:00Z"
    assert format_instant(parse_instant(said)) == said
    body = {"claim_id": "c", "version": 1, "type": "ClaimRegistered", "recorded_at": "2026-01-01T00:00:00Z",
            "prev_hash": "0" * 64, "data": {"statement": "s", "key": "k", "language": "en", "subjects": []}}
    act = {**body, "version": 2, "type": "Asserted",
           "data": {"act_id": "a", "party": {"id": "p", "name": "P"}, "said_at": said}}
    assert fold_claim([body, act])["status"] == "asserted"  # type: ignore[index]
