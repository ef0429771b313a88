"""Fixtures in and out: atomic import on both backends, export back hash for hash, expected projections."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import Database, Ledger
from domain.canonical import canonical_bytes
from projections import fixtures
from projections.fixtures import (
    SEED_FIXTURE,
    FixtureError,
    assert_fixture,
    export_feed,
    export_fixture,
    fixture_projections,
    import_fixture,
)
from projections.generator import generate
from tests.conftest import drop_schema, new_database_url

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STORIES = [
    (SEED_FIXTURE, FIXTURES / "seed" / "expected"),
    (FIXTURES / "retraction" / "harbour-bridge.jsonl", FIXTURES / "retraction" / "expected"),
    (FIXTURES / "voids-and-time" / "skerry-point-lighthouse.jsonl", FIXTURES / "voids-and-time" / "expected"),
]
CLAIMS = [str(Path(sys.executable).parent / "claims")]
KEY = "putin-phoned-elton-john"
ELTON = {"id": "elton-john", "name": "Elton John"}
PESKOV = {"id": "dmitry-peskov", "name": "Dmitry Peskov"}


def line(**fields: Any) -> str:
    return json.dumps(fields)


def log(ledger: Ledger) -> list[tuple[int, str]]:
    """Every event as (position, hash): what "nothing was written" is checked against."""
    return [(position, event.hash) for position, event in ledger.all_events()]


@pytest.fixture
def seeded(ledger: Ledger) -> Ledger:
    import_fixture(ledger, SEED_FIXTURE)
    return ledger


# Import.
def test_the_seed_story_imports_with_its_recorded_times_and_is_disputed(ledger: Ledger) -> None:
    report = import_fixture(ledger, SEED_FIXTURE)
    assert (report.acts, report.events, report.unchanged) == (3, 3, 0)
    assert (report.first_position, report.last_position) == (1, 3)
    claim = ledger.get_claim(KEY)
    view = claim.fold.view()
    assert view["status"] == "disputed"
    assert view["registered_at"] == "2015-09-15T09:00:00Z"
    assert view["updated_at"] == "2015-09-15T14:30:00Z"
    assert [(s["holder"]["id"], s["stance"]) for s in view["stances"]] == [
        ("elton-john", "asserts"), ("vladimir-putin", "denies"),
    ]


def test_a_register_line_may_name_its_key_as_claim(ledger: Ledger) -> None:
    import_fixture(ledger, [line(op="register", claim="a-claim", statement="Something happened")])
    assert ledger.get_claim("a-claim").statement == "Something happened"


def test_blank_lines_are_skipped_and_still_counted_for_line_numbers(seeded: Ledger) -> None:
    lines = ["\n", "   \n", line(op="assert", claim=KEY, party=ELTON, act_id="a-2"), "", line(op="dance")]
    with pytest.raises(FixtureError) as failure:
        import_fixture(seeded, lines)
    assert failure.value.line == 5


BAD_LINES = [
    ("malformed JSON", '{"op": "assert", "claim": ', "malformed JSON"),
    ("a line that is not an object", '["assert", "putin-phoned-elton-john"]', "must be a JSON object, not an array"),
    ("a missing op", line(claim=KEY, party=ELTON), "op is missing"),
    ("an unknown op", line(op="endorse", claim=KEY, party=ELTON), "unknown op 'endorse'"),
    ("a missing claim", line(op="assert", party=ELTON), "claim is missing"),
    ("a claim that is not a string", line(op="assert", claim=7, party=ELTON), "claim must be a string"),
    ("a missing party", line(op="assert", claim=KEY), "party is required"),
    ("a wrong-typed party", line(op="deny", claim=KEY, party="Dmitry Peskov"), "party must be an object"),
    ("a wrong-typed said_at", line(op="assert", claim=KEY, party=ELTON, said_at=20150914), "said_at must be"),
    ("an unknown field", line(op="assert", claim=KEY, party=ELTON, mood="happy"), "does not take mood"),
    ("a bad recorded_at", line(op="assert", claim=KEY, party=ELTON, recorded_at="yesterday"),
     "recorded_at must be an RFC 3339 date-time"),
    ("a recorded_at before the claim's last event",
     line(op="assert", claim=KEY, party=ELTON, recorded_at="2015-09-15T10:00:00Z"), "is before the claim's previous"),
    ("an unknown claim", line(op="assert", claim="putin-phoned-freddie-mercury", party=ELTON), "no claim has the id or key"),
    ("an unknown act", line(op="retract", claim=KEY, retracts="no-such-act", party=ELTON), "holds no act 'no-such-act'"),
    ("a retraction by someone else",
     line(op="retract", claim="kremlin-confirms-call", retracts="peskov-confirms", party=ELTON),
     "cannot retract act 'peskov-confirms'"),
    ("a second void of one act", line(op="void", claim=KEY, voids="elton-john-instagram", reason="again"),
     "already voided"),
    ("a void of a void", line(op="void", claim=KEY, voids="void-1", reason="undo"), "voids cannot be voided"),
    ("a second retraction", line(op="retract", claim=KEY, retracts="peskov-tass-denial", party=PESKOV),
     "already retracted"),
    ("a key holding another statement", line(op="register", key=KEY, statement="Putin phoned Elton John twice"),
     "already names the claim"),
    ("an act id used for another act", line(op="deny", claim=KEY, act_id="elton-john-instagram", party=PESKOV),
     "already used on this claim"),
]


@pytest.mark.parametrize(("bad", "text", "message"), BAD_LINES, ids=[case[0] for case in BAD_LINES])
def test_a_bad_line_fails_the_whole_file_naming_the_line_and_nothing_is_written(
    seeded: Ledger, bad: str, text: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small chunks, so good lines before the bad one are already inserted in the transaction.
    monkeypatch.setattr(fixtures, "FLUSH_EVERY", 2)
    good = [
        line(op="register", key="kremlin-confirms-call", statement="The Kremlin confirmed a call to Elton John"),
        line(op="void", claim=KEY, act_id="void-1", voids="elton-john-instagram", reason="recorded twice",
             recorded_at="2015-09-16T08:00:00Z"),
        "",
        line(op="retract", claim=KEY, retracts="peskov-tass-denial", party=PESKOV, recorded_at="2015-09-16T09:00:00Z"),
        line(op="assert", claim="kremlin-confirms-call", act_id="peskov-confirms", party=PESKOV),
    ]
    path = tmp_path / "story.jsonl"
    path.write_text("\n".join([*good, text, line(op="assert", claim=KEY, party=ELTON)]) + "\n")
    before = log(seeded)

    with pytest.raises(FixtureError) as failure:
        import_fixture(seeded, path)

    assert failure.value.line == 6
    assert failure.value.path == str(path)
    assert str(failure.value).startswith(f"{path}:6: ")
    assert message in failure.value.message
    assert log(seeded) == before
    assert seeded.max_position() == 3
    with pytest.raises(LookupError):
        seeded.get_claim("kremlin-confirms-call")


def test_the_first_bad_line_is_reported_even_when_a_later_one_is_malformed(seeded: Ledger) -> None:
    lines = [
        line(op="retract", claim=KEY, retracts="elton-john-instagram", party=PESKOV),
        line(op="assert", claim=KEY, party=ELTON, act_id="fine"),
        "{not json",
    ]
    with pytest.raises(FixtureError) as failure:
        import_fixture(seeded, lines)
    assert failure.value.line == 1
    assert "cannot retract" in failure.value.message


def test_importing_the_same_file_twice_records_each_act_once(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "story.jsonl"
    # No act ids: the importer makes the same ones from the same lines.
    lines = [
        line(op="register", key="bridge-closes", statement="The bridge closes in March",
             recorded_at="2024-01-10T08:00:00Z"),
        line(op="assert", claim="bridge-closes", party={"id": "council", "name": "Council"},
             recorded_at="2024-01-10T09:00:00Z"),
        line(op="deny", claim="bridge-closes", party={"id": "contractor", "name": "Contractor"},
             recorded_at="2024-01-11T09:00:00Z"),
    ]
    path.write_text("\n".join(lines) + "\n")
    first = import_fixture(ledger, path)
    events = log(ledger)
    again = import_fixture(ledger, path)
    assert (first.events, again.events, again.unchanged) == (3, 0, 3)
    assert log(ledger) == events
    act_ids = [str(e.data.get("act_id")) for _, e in ledger.all_events()]
    assert act_ids[1].startswith("assert-") and act_ids[2].startswith("deny-")


def test_claims_forgotten_between_chunks_are_read_again_inside_the_transaction(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = [orjson.dumps(item).decode() for item in generate(60, seed=5)]
    reference = Ledger(Database.from_url(f"sqlite:///{tmp_path / 'reference.db'}"))
    import_fixture(reference, lines)
    monkeypatch.setattr(fixtures, "FLUSH_EVERY", 7)
    monkeypatch.setattr(fixtures, "KEEP_CLAIMS", 3)
    ledger = Ledger(Database.from_url(database_url))
    try:
        report = import_fixture(ledger, lines)
        assert report.events == len(lines)
        assert log(ledger) == log(reference)
    finally:
        ledger.close()
        reference.close()


def test_progress_is_reported_in_bytes_of_the_file(ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixtures, "FLUSH_EVERY", 1)
    calls: list[tuple[int, int, int | None]] = []
    import_fixture(ledger, SEED_FIXTURE, progress=lambda *args: calls.append(args))
    size = SEED_FIXTURE.stat().st_size
    assert [c[0] for c in calls] == [1, 2, 3]
    assert calls[-1] == (3, size, size)


# Export.
def test_export_then_import_into_an_empty_ledger_gives_identical_events(
    ledger: Ledger, backend: str, tmp_path: Path,
) -> None:
    import_fixture(ledger, SEED_FIXTURE)
    import_fixture(ledger, [orjson.dumps(item).decode() for item in generate(40, seed=11)])
    out = io.StringIO()
    assert export_fixture(ledger, out) == ledger.max_position()

    # Into the other backend too: the fixture carries everything the hashes cover.
    other_url = new_database_url("postgres" if backend == "sqlite" else "sqlite", tmp_path)
    copy = Ledger(Database.from_url(other_url))
    try:
        import_fixture(copy, out.getvalue().splitlines())
        assert log(copy) == log(ledger)
        assert [e.body() for _, e in copy.all_events()] == [e.body() for _, e in ledger.all_events()]
    finally:
        copy.close()
        drop_schema(other_url)


def test_export_after_a_position_names_claims_registered_before_it(seeded: Ledger) -> None:
    out = io.StringIO()
    assert export_fixture(seeded, out, after=2) == 1
    (only,) = [json.loads(text) for text in out.getvalue().splitlines()]
    assert (only["op"], only["claim"], only["act_id"]) == ("deny", KEY, "peskov-tass-denial")
    assert only["recorded_at"] == "2015-09-15T14:30:00Z"


def test_the_feed_export_serves_each_body_exactly_as_hashed(seeded: Ledger) -> None:
    out = io.StringIO()
    assert export_feed(seeded, out, after=1) == 2
    items = [json.loads(text) for text in out.getvalue().splitlines()]
    assert [item["position"] for item in items] == [2, 3]
    for item in items:
        assert set(item) == {"position", "hash", "body"}
        assert hashlib.sha256(rfc8785.dumps(item["body"])).hexdigest() == item["hash"]
    assert items[1]["body"]["prev_hash"] == items[0]["hash"]


# Expected projections.
@pytest.mark.parametrize(("story", "expected"), STORIES, ids=[s[0].stem for s in STORIES])
def test_each_story_projects_to_its_expected_files(story: Path, expected: Path) -> None:
    assert_fixture(story, expected)


def test_the_seed_story_is_disputed_between_elton_john_and_vladimir_putin() -> None:
    projections = fixture_projections(SEED_FIXTURE)
    view = projections[f"claims/{KEY}.json"]
    assert view["status"] == "disputed"
    assert projections["parties/dmitry-peskov.json"]["spoken_for_others"][0]["holder"]["id"] == "vladimir-putin"


def test_a_differing_projection_fails_with_a_readable_diff(tmp_path: Path) -> None:
    expected = tmp_path / "expected"
    shutil.copytree(FIXTURES / "seed" / "expected", expected)
    view_file = expected / "claims" / f"{KEY}.json"
    view = json.loads(view_file.read_text())
    view["status"] = "asserted"
    view_file.write_text(json.dumps(view, indent=2))
    (expected / "parties" / "elton-john.json").unlink()

    with pytest.raises(AssertionError) as failure:
        assert_fixture(SEED_FIXTURE, expected)

    text = str(failure.value)
    assert f'--- expected/claims/{KEY}.json' in text
    assert '-  "status": "asserted",' in text and '+  "status": "disputed",' in text
    assert "--- /dev/null\n+++ actual/parties/elton-john.json" in text


def test_fixtures_checked_against_expected_files_must_fix_every_recorded_at(tmp_path: Path) -> None:
    path = tmp_path / "loose.jsonl"
    path.write_text(line(op="register", key="a-claim", statement="Something happened") + "\n")
    with pytest.raises(FixtureError, match=r"loose\.jsonl:1: recorded_at is missing"):
        fixture_projections(path)


# The canonical encoding the import relies on for speed.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**60), max_value=2**60) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_the_fast_canonical_encoding_is_rfc8785_byte_for_byte(value: Any) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as refused:
        with pytest.raises(type(refused)):
            canonical_bytes(value)
        return
    assert canonical_bytes(value) == expected


@pytest.mark.parametrize("text", ["\x00\x1f\x7f\"\\/", "\u2028\u2029", "\ue000", "😀", "日本語"])
def test_keys_and_strings_beyond_ascii_encode_as_rfc8785_does(text: str) -> None:
    value: dict[str, Any] = {text: text, "a": [text], "\U0001f600": 1, "\uffff": 2}
    assert canonical_bytes(value) == rfc8785.dumps(value)


# The command line, as a real process.
@pytest.fixture
def cli_env(database_url: str) -> Iterator[dict[str, str]]:
    yield {**os.environ, "LEDGER_DATABASE_URL": database_url}


def claims(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLAIMS, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)


def test_cli_import_reports_acts_per_second_and_a_bad_file_exits_1_with_its_line(
    cli_env: dict[str, str], tmp_path: Path,
) -> None:
    done = claims(cli_env, "import", str(SEED_FIXTURE))
    assert done.returncode == 0, done.stderr
    assert "imported 3 acts" in done.stderr and "acts/s" in done.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text(line(op="assert", claim=KEY, party=ELTON, act_id="x") + "\n" + line(op="assert", claim="nope") + "\n")
    failed = claims(cli_env, "import", str(bad))
    assert failed.returncode == 1
    assert f"{bad}:2:" in failed.stderr and "nothing was written" in failed.stderr

    piped = claims(cli_env, "import", "-", stdin=line(op="assert", claim=KEY, party=ELTON, act_id="y") + "\n")
    assert piped.returncode == 0, piped.stderr


def test_cli_export_writes_a_fixture_or_the_feed(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert claims(cli_env, "demo").returncode == 0
    fixture = claims(cli_env, "export")
    assert fixture.returncode == 0
    assert [json.loads(t)["op"] for t in fixture.stdout.splitlines()] == ["register", "assert", "deny"]
    out = tmp_path / "feed.jsonl"
    feed = claims(cli_env, "export", "--format", "feed", "--after", "1", "--out", str(out))
    assert feed.returncode == 0 and feed.stdout == ""
    assert [json.loads(t)["position"] for t in out.read_text().splitlines()] == [2, 3]
    assert claims(cli_env, "export", "--format", "xml").returncode == 2


def test_cli_demo_loads_the_seed_story_once(cli_env: dict[str, str], database_url: str) -> None:
    first = claims(cli_env, "demo", "--if-empty")
    assert first.returncode == 0, first.stderr
    second = claims(cli_env, "demo", "--if-empty")
    assert second.returncode == 0 and "already holds events" in second.stderr
    again = claims(cli_env, "demo")
    assert again.returncode == 0 and "0 new events, 3 already recorded" in again.stderr
    ledger = Ledger(Database.from_url(database_url))
    try:
        assert ledger.max_position() == 3
        assert ledger.get_claim(KEY).fold.view()["status"] == "disputed"
    finally:
        ledger.close()


def test_cli_fixtures_run_exits_0_when_equal_1_with_a_diff_when_not(tmp_path: Path) -> None:
    env = dict(os.environ)
    equal = claims(env, "fixtures", "run", str(SEED_FIXTURE), "--expect", str(FIXTURES / "seed" / "expected"))
    assert equal.returncode == 0, equal.stdout + equal.stderr

    expect = tmp_path / "expected"
    written = claims(env, "fixtures", "run", str(SEED_FIXTURE), "--expect", str(expect), "--update")
    assert written.returncode == 0
    assert sorted(p.relative_to(expect).as_posix() for p in expect.rglob("*.json")) == [
        f"claims/{KEY}.json", f"history/{KEY}.json", "parties/dmitry-peskov.json",
        "parties/elton-john.json", "parties/vladimir-putin.json",
    ]
    (expect / "parties" / "elton-john.json").write_text("{}\n")
    differs = claims(env, "fixtures", "run", str(SEED_FIXTURE), "--expect", str(expect))
    assert differs.returncode == 1
    assert "--- expected/parties/elton-john.json" in differs.stdout
    assert "1 of 5 projections differ" in differs.stderr


def test_cli_generate_writes_the_same_fixture_for_the_same_seed(tmp_path: Path) -> None:
    env = dict(os.environ)
    out = tmp_path / "synthetic.jsonl"
    done = claims(env, "generate", "--claims", "20", "--seed", "3", "--out", str(out))
    assert done.returncode == 0
    to_stdout = claims(env, "generate", "--claims", "20", "--seed", "3")
    assert to_stdout.stdout == out.read_text()
