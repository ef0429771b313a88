"""The synthetic fixture generator: deterministic, realistic, and always importable."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import orjson

from domain import Ledger
from domain.values import DATE_ONLY, parse_instant
from projections.fixtures import import_fixture
from projections.generator import generate, write_fixture


def test_the_same_seed_gives_the_same_lines_and_another_seed_others() -> None:
    assert list(generate(50, seed=7)) == list(generate(50, seed=7))
    assert list(generate(50, seed=7)) != list(generate(50, seed=8))


def test_every_generated_line_imports_and_each_becomes_one_event(ledger: Ledger) -> None:
    lines = list(generate(120, seed=1))
    report = import_fixture(ledger, [orjson.dumps(item).decode() for item in lines])
    assert report.acts == report.events == len(lines)
    registered = [item for item in lines if item["op"] == "register"]
    assert len(registered) == 120
    statuses = Counter(ledger.get_claim(item["key"]).fold.view()["status"] for item in registered)
    assert {"asserted", "denied", "disputed"} <= set(statuses)


def test_histories_mix_every_kind_of_act_and_both_time_axes() -> None:
    lines = list(generate(300, seed=2))
    ops = Counter(item["op"] for item in lines)
    assert set(ops) == {"register", "assert", "deny", "retract", "void"}
    acts = [item for item in lines if item["op"] in ("assert", "deny")]
    said = [item["said_at"] for item in acts]
    assert None in said
    assert any(s and DATE_ONLY.fullmatch(s) for s in said)
    assert any(s and "T" in s for s in said)
    assert any("on_behalf_of" in item for item in acts)
    assert any(item.get("reported_via") for item in acts)
    # Said long before it was recorded: years, not hours.
    assert any(s and s[:4] < str(int(item["recorded_at"][:4]) - 1) for s, item in zip(said, acts, strict=True))


def test_most_histories_are_short_and_a_few_run_to_hundreds_of_acts() -> None:
    lengths = Counter(item.get("claim") for item in generate(300, seed=2) if item["op"] != "register")
    assert max(lengths.values()) >= 150
    assert sorted(lengths.values())[len(lengths) // 2] <= 8


def test_recorded_at_never_goes_back() -> None:
    times = [parse_instant(item["recorded_at"]) for item in generate(100, seed=4)]
    assert times == sorted(times)


def test_retractions_and_voids_only_name_acts_made_before_them() -> None:
    seen: dict[str, set[str]] = {}
    for item in generate(200, seed=6):
        if item["op"] == "register":
            seen[item["key"]] = set()
            continue
        held = seen[item["claim"]]
        target = item.get("retracts") or item.get("voids")
        if target is not None:
            assert target in held
        if item.get("act_id"):
            held.add(item["act_id"])


def test_write_fixture_writes_one_json_line_per_act_to_a_file_or_a_stream(tmp_path: Path) -> None:
    lines = list(generate(10, seed=3))
    path = tmp_path / "synthetic.jsonl"
    assert write_fixture(path, lines) == len(lines)
    stream = io.StringIO()
    assert write_fixture(stream, iter(lines)) == len(lines)
    assert stream.getvalue() == path.read_text(encoding="utf-8")
    assert [orjson.loads(text) for text in path.read_text().splitlines()] == lines
