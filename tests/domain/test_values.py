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


def test_a_claim_ref_is_tried_as_an_id_first_then_as_a_key_a_uuid_shaped_key_too() -> None:
    from uuid import UUID

    from domain.values import claim_id_for_key, claim_ids_for_ref

    dashed = "0b9e3f6a-7f2d-4c1e-9a55-3f8e2d1c0b7a"
    assert claim_ids_for_ref(dashed) == (UUID(dashed), claim_id_for_key(dashed))
    assert claim_ids_for_ref("putin-phoned-elton-john") == (claim_id_for_key("putin-phoned-elton-john"),)
    # Other spellings of an id name the same claim; they are not keys (not slugs).
    assert claim_ids_for_ref("{" + dashed.upper() + "}") == (UUID(dashed),)
    assert claim_ids_for_ref("urn:uuid:" + dashed + "-" * 200) == (UUID(dashed),)
    for nothing in ("", "Not A Key", "-leading-dash", "a" * 121, "nul\x00"):
        assert claim_ids_for_ref(nothing) == ()
