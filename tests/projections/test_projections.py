"""The projection engine on both backends: exactly once, crash-safe, gap-tolerant, rebuildable."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.commands import RecordAct, RegisterClaim
from fixtures.generator import generate, write_fixture
from fixtures.replay import import_fixture
from projections import engine as engine_module
from projections.engine import ProjectionEngine
from service.runtime import Runtime
from store.db import Cursor
from tests.conftest import drop_schema, new_database_url
from tests.story import CLAIM_KEY, ELTON, PESKOV, PUTIN, STATEMENT, elton_asserts, peskov_denies

TABLES = {
    "rm_claims": "claim_id", "rm_subjects": "subject, claim_id", "rm_stances": "holder_id, claim_id",
    "rm_history": "position", "rm_merkle_leaves": "leaf_index", "rm_merkle_nodes": "level, idx",
    "rm_reviews": "reviewer_id, claim_id",
}
REVIEWERS = [{"id": "northvale-fact-check", "name": "Northvale Fact Check"},
             {"id": "coastline-verify", "name": "Coastline Verify"}]


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.open(database_url)
    yield rt
    rt.close()


def snapshot(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model row, in key order (the Merkle tables included)."""
    with rt.store.reading() as cur:
        rows = {name: cur.execute(f"SELECT * FROM {name} ORDER BY {order}").fetchall()
                for name, order in TABLES.items()}
        rows["search"] = _search_rows(cur)
    return rows


def _search_rows(cur: Cursor) -> list[tuple[Any, ...]]:
    if cur.backend == "sqlite":
        return cur.execute("SELECT claim_id, statement FROM rm_search ORDER BY claim_id").fetchall()
    return cur.execute("SELECT claim_id, statement, tsv::text FROM rm_search ORDER BY claim_id").fetchall()


def seed_story(rt: Runtime) -> None:
    rt.ledger.register_claim(STATEMENT, key=CLAIM_KEY, subjects=["Vladimir Putin", "Elton John"])
    rt.ledger.assert_claim(CLAIM_KEY, **elton_asserts())
    rt.ledger.deny_claim(CLAIM_KEY, **peskov_denies())


def test_the_seed_story_projects_as_disputed_with_both_stances(runtime: Runtime) -> None:
    seed_story(runtime)
    assert runtime.engine.catch_up() == 3
    view = runtime.read.claim(CLAIM_KEY)
    assert view is not None
    assert view["status"] == "disputed"
    assert view["counts"] == {"assertions": 1, "denials": 1, "retractions": 0, "voids": 0, "reviews": 0}
    assert [(s["holder"]["id"], s["stance"]) for s in view["stances"]] == [
        ("elton-john", "asserts"), ("vladimir-putin", "denies")]
    assert runtime.read.claim(view["id"]) == view
    history = runtime.read.history(CLAIM_KEY)
    assert history is not None
    assert [e["type"] for e in history["events"]] == ["ClaimRegistered", "Asserted", "Denied"]
    denial = history["events"][2]
    assert denial["party"] == PESKOV and denial["on_behalf_of"] == PUTIN
    assert denial["prev_hash"] == history["events"][1]["hash"]
    putin = runtime.read.party("vladimir-putin")
    assert putin is not None and putin["stances"][0]["stance"] == "denies"
    peskov = runtime.read.party("dmitry-peskov")
    assert peskov is not None and peskov["spoken_for_others"][0]["holder"] == PUTIN


def test_search_filters_and_pages_answer_from_the_read_models(runtime: Runtime) -> None:
    seed_story(runtime)
    runtime.ledger.register_claim("Elton John met Vladimir Putin in Moscow", key="elton-met-putin",
                                  subjects=["Elton John"])
    for i in range(5):
        runtime.ledger.register_claim(f"Claim number {i} about gay rights in Russia", key=f"rights-{i}")
    runtime.engine.catch_up()
    read = runtime.read
    assert [c["key"] for c in read.list_claims(q="telephoned")[0]] == [CLAIM_KEY]
    assert {c["key"] for c in read.list_claims(q="Elton Putin")[0]} == {CLAIM_KEY, "elton-met-putin"}
    assert [c["key"] for c in read.list_claims(status="disputed")[0]] == [CLAIM_KEY]
    assert [c["key"] for c in read.list_claims(party="elton-john")[0]] == [CLAIM_KEY]
    assert len(read.list_claims(subject="Elton John")[0]) == 2
    page1, cursor = read.list_claims(limit=3)
    page2, cursor2 = read.list_claims(limit=3, cursor=cursor)
    page3, cursor3 = read.list_claims(limit=3, cursor=cursor2)
    assert [len(page1), len(page2), len(page3), cursor3] == [3, 3, 1, None]
    assert len({c["key"] for c in page1 + page2 + page3}) == 7


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    url = new_database_url("postgres", tmp_path)
    yield url
    drop_schema(url)


def test_tables_of_the_earlier_postgres_layout_are_upgraded_in_place(pg_url: str) -> None:
    """Before, PostgreSQL kept each statement's tsvector in `claims` (every rewrite of the row
    computed it again); starting on such tables moves it to `search`, and the same words find
    the same claims, with nothing to rebuild."""
    from audit.verify import verify_store

    rt = Runtime.open(pg_url)
    try:
        seed_story(rt)
        rt.ledger.register_claim("Elton John met Vladimir Putin in Moscow", key="elton-met-putin")
        rt.engine.catch_up()
        expected = snapshot(rt)
        with rt.store.transaction() as cur:  # the tables as the earlier version made them
            cur.execute("DROP TABLE rm_search")
            cur.execute("ALTER TABLE rm_claims ADD COLUMN tsv tsvector"
                        " GENERATED ALWAYS AS (to_tsvector('simple', statement)) STORED")
            cur.execute("CREATE INDEX ix_g0_rm_claims_tsv ON rm_claims USING GIN (tsv)")
            cur.execute("ALTER TABLE rm_claims ALTER COLUMN view SET COMPRESSION pglz")
            lz4 = cur.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                              " WHERE name = 'default_toast_compression'").fetchone() == (True,)
    finally:
        rt.close()
    rt = Runtime.open(pg_url)
    try:
        with rt.store.reading() as cur:
            assert cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                               "current_schema() AND table_name = 'rm_claims' AND column_name = 'tsv'"
                               ).fetchone() == (0,)
            assert cur.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema()"
                               " AND indexname = 'ix_g0_rm_search_tsv'").fetchone() == (1,)
            assert cur.execute("SELECT attcompression FROM pg_attribute WHERE attrelid = 'rm_claims'::regclass"
                               " AND attname = 'view'").fetchone() == ("l" if lz4 else "p",)
        assert snapshot(rt) == expected
        assert {c["key"] for c in rt.read.list_claims(q="Elton Putin")[0]} == {CLAIM_KEY, "elton-met-putin"}
        rt.ledger.register_claim("Putin telephoned the Kremlin choir", key="choir")
        rt.engine.catch_up()
        assert {c["key"] for c in rt.read.list_claims(q="telephoned")[0]} == {CLAIM_KEY, "choir"}
        assert verify_store(rt).ok
    finally:
        rt.close()


# Claims for the hostile queries below: each query has claims holding all its words, and decoys
# that only its syntax, if obeyed, would find (FTS5's NEAR, OR, NOT and * prefix; web search's
# - and or).
SEARCHED = {
    "unbalanced": "An unbalanced budget",
    "plan-a-and-b": "Plan a and plan b",
    "near-a-river": "Near a river, plan b",
    "a-or-b": "Plan a or plan b",
    "dinner-table": "They drop the table at dinner",
    "gay-rights": "A claim about gay rights in Russia",
    "rightsholders": "Rightsholders object",
    "elton-met-bernie": "Elton met Bernie",
    "elton-not-putin": "Elton did not phone Putin",
}


def words_of(text: str) -> set[str]:
    return {w.casefold() for w in re.findall(r"\w+", text)}


@pytest.mark.parametrize("q", [
    '"unbalanced', "NEAR(a b", "NEAR(a b)", "a OR", "'; DROP TABLE rm_claims; --", "rights*", "elton NOT putin",
    "elton -putin", "bernie or river",
])
def test_search_syntax_in_queries_is_searched_as_words(runtime: Runtime, q: str) -> None:
    seed_story(runtime)
    for key, statement in SEARCHED.items():
        runtime.ledger.register_claim(statement, key=key)
    runtime.engine.catch_up()
    before = snapshot(runtime)
    # The claims holding every word of the query (any case), and no other: worked out here
    # from the statements, not by the database.
    statements = {CLAIM_KEY: STATEMENT, **SEARCHED}
    expected = {key for key, statement in statements.items() if words_of(q) <= words_of(statement)}
    found, _ = runtime.read.list_claims(q=q, limit=100)
    assert {c["key"] for c in found} == expected
    assert len(found) == len(expected)
    assert snapshot(runtime) == before  # nothing written, dropped or changed by the query


def test_a_query_with_no_word_in_it_is_refused_as_invalid_input(runtime: Runtime) -> None:
    from domain.errors import InvalidInput

    seed_story(runtime)
    runtime.engine.catch_up()
    before = snapshot(runtime)
    for q in ("*", '"";--', "()"):
        with pytest.raises(InvalidInput, match="at least one word"):
            runtime.read.list_claims(q=q)
    assert snapshot(runtime) == before


def test_time_travel_replays_one_claims_history(runtime: Runtime) -> None:
    from domain.values import parse_as_of

    seed_story(runtime)
    runtime.ledger.retract_act(CLAIM_KEY, retracts="elton-instagram", party=ELTON, said_at="2015-09-20")
    runtime.engine.catch_up()
    read = runtime.read
    assert read.claim(CLAIM_KEY)["status"] == "denied"  # type: ignore[index]
    assert read.claim_at(CLAIM_KEY, version=2)["status"] == "asserted"  # type: ignore[index]
    assert read.claim_at(CLAIM_KEY, said_as_of=parse_as_of("2015-09-16", "t"))["status"] == "disputed"  # type: ignore[index]
    assert read.claim_at(CLAIM_KEY, version=99) is None
    history = read.history_at(CLAIM_KEY, version=3)
    assert history is not None and [e["version"] for e in history["events"]] == [1, 2, 3]


@st.composite
def act_batches(draw: st.DrawFn) -> list[list[RecordAct | RegisterClaim]]:
    keys = ["putin-phoned-elton-john", "elton-met-putin", "kremlin-denied-call"]
    parties = [ELTON, PUTIN, PESKOV]
    held: dict[str, list[tuple[str, dict[str, str]]]] = {k: [] for k in keys}
    batches: list[list[RecordAct | RegisterClaim]] = [[RegisterClaim.build({"statement": f"Statement {k}", "key": k,
                                                                          "subjects": ["Elton John"]})
                                                      for k in keys]]
    for b in range(draw(st.integers(1, 4))):
        batch: list[RecordAct | RegisterClaim] = []
        for i in range(draw(st.integers(1, 8))):
            key = draw(st.sampled_from(keys))
            op = draw(st.sampled_from(["assert", "deny", "retract", "void", "review"]))
            act_id = f"b{b}-{i}"
            if op == "review":
                reviewer = draw(st.sampled_from(REVIEWERS))
                reviewed = draw(st.one_of(st.none(), st.sampled_from(["2015-09-15", "2015-09-17T08:00:00Z"])))
                batch.append(RecordAct.build("review", key, {
                    "act_id": act_id, "reviewer": reviewer, "rating": {"text": draw(st.sampled_from(["False", "True"]))},
                    "url": f"https://checks.example/{act_id}", "reviewed_at": reviewed,
                }))
                held[key].append((act_id, reviewer))
            elif op in ("assert", "deny") or not held[key]:
                party = draw(st.sampled_from(parties))
                said = draw(st.one_of(st.none(), st.sampled_from(["2015-09-14", "2015-09-16T10:00:00Z"])))
                batch.append(RecordAct.build("deny" if op == "deny" else "assert", key,
                                             {"act_id": act_id, "party": party, "said_at": said}))
                held[key].append((act_id, party))
            elif op == "retract":
                target, party = draw(st.sampled_from(held[key]))
                batch.append(RecordAct.build("retract", key, {"act_id": act_id, "retracts": target, "party": party}))
            else:
                target, _ = draw(st.sampled_from(held[key]))
                batch.append(RecordAct.build("void", key, {"act_id": act_id, "voids": target, "reason": "error"}))
        batches.append(batch)
    return batches


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=act_batches())
def test_incremental_projection_equals_a_fresh_rebuild_row_for_row(
    backend: str, tmp_path_factory: pytest.TempPathFactory, batches: list[list[Any]]
) -> None:
    url = new_database_url(backend, tmp_path_factory.mktemp("p"))
    rt = Runtime.open(url)
    try:
        for batch in batches:
            rt.ledger.execute(batch)  # rule breaks fail alone, as over HTTP
            rt.engine.catch_up()
        incremental = snapshot(rt)
        rt.engine.rebuild()
        assert snapshot(rt) == incremental
        for view in rt.read.list_claims(limit=500)[0]:
            assert rt.read.claim_at(view["key"], version=view["version"]) == view
    finally:
        rt.close()
        drop_schema(url)


def test_a_crash_inside_a_batch_leaves_no_duplicate_and_no_missing_row(runtime: Runtime) -> None:
    seed_story(runtime)
    engine = runtime.engine
    original = ProjectionEngine._write_views
    calls = {"n": 0}

    def crash_once(self: ProjectionEngine, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("power cut mid-batch")
        original(self, *args)

    ProjectionEngine._write_views = crash_once  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError):
            engine.catch_up()
        assert engine.position() == 0
        assert runtime.read.feed(0, 10) == []
        assert engine.catch_up() == 3
    finally:
        ProjectionEngine._write_views = original  # type: ignore[method-assign]
    crashed = snapshot(runtime)
    runtime.engine.rebuild()
    assert snapshot(runtime) == crashed
    assert len(crashed["rm_history"]) == 3


def test_a_crash_between_batches_resumes_where_it_stopped(database_url: str) -> None:
    rt = Runtime.open(database_url)
    seed_story(rt)
    rt.engine.batch_size = 2
    rt.engine.process_batch()
    rt.close()
    again = Runtime.open(database_url)
    again.ledger.retract_act(CLAIM_KEY, retracts="elton-instagram", party=ELTON)
    assert again.engine.position() == 2
    assert again.engine.catch_up() == 2
    assert [e["version"] for e in again.read.history(CLAIM_KEY)["events"]] == [1, 2, 3, 4]  # type: ignore[index]
    again.close()


def test_two_engines_never_apply_an_event_twice(database_url: str) -> None:
    first, second = Runtime.open(database_url), Runtime.open(database_url)
    seed_story(first)
    first.engine.batch_size = second.engine.batch_size = 1
    for _ in range(6):
        first.engine.process_batch()
        second.engine.process_batch()
    assert len(first.read.feed(0, 100)) == 3
    first.close()
    second.close()


def test_engines_taking_turns_at_uneven_batches_leave_the_projections_a_rebuild_would(
    database_url: str,
) -> None:
    """Each engine starts a batch from where it committed last, which another engine may
    have moved on meanwhile: that batch must write nothing, and the engine go on from the
    position it finds (on PostgreSQL, the batch's first statement checks and moves it)."""
    from audit.verify import verify_store

    first, second = Runtime.open(database_url), Runtime.open(database_url)
    try:
        keys = [f"turns-{i}" for i in range(8)]
        first.ledger.execute([RegisterClaim.build({"statement": f"Proposition {i}", "key": k})
                              for i, k in enumerate(keys)])
        first.engine.batch_size, second.engine.batch_size = 3, 5
        for r in range(25):
            first.ledger.execute([
                RecordAct.build("assert", keys[(r + j) % len(keys)], {"party": ELTON, "act_id": f"t{r}-{j}"})
                for j in range(3)
            ])
            for engine in (first.engine, second.engine, first.engine) if r % 3 else (second.engine, first.engine):
                engine.process_batch()
        first.engine.catch_up()
        second.engine.catch_up()
        assert first.engine.position() == second.engine.position() == first.ledger.max_position()
        report = verify_store(first)
        assert report.ok, report
        assert len(first.read.feed(0, 1000)) == first.ledger.max_position()
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_gap_in_notification_ids_is_passed_and_a_late_commit_is_not_skipped(
    backend: str, database_url: str
) -> None:
    import psycopg

    from domain.claim import Claim
    from domain.values import claim_id_for_key

    rt = Runtime.open(database_url)
    try:
        # No clock decides here: the gap is held as long as the test needs (a minute), and the
        # test then ends the wait itself by setting gap_wait to 0.
        rt.engine.gap_wait = 60.0
        seed_story(rt)
        rt.engine.catch_up()
        schema = rt.database.schema
        with psycopg.connect(**rt.database.connect_kwargs(), autocommit=True) as conn:  # type: ignore[arg-type]
            seq = conn.execute(
                "SELECT pg_get_serial_sequence(%s, 'notification_id')", (f"{schema}.ledger_events",)
            ).fetchone()[0]
            late_id = conn.execute(f"SELECT nextval('{seq}')").fetchone()[0]  # taken by the late writer below
            lost_id = conn.execute(f"SELECT nextval('{seq}')").fetchone()[0]  # a rolled-back insert's id
        rt.ledger.register_claim("Elton John met Vladimir Putin", key="elton-met-putin")
        late = Claim.register(claim_id_for_key("late-claim"), statement="Late", key="late-claim",
                              language="en", subjects=[])
        stored = rt.ledger.mapper.to_stored_event(late.collect_events()[0])
        # The event with the lower id is inserted by a transaction held open (not committed)
        # while the engine runs its batch: the engine sees a gap where it is.
        with psycopg.connect(**rt.database.connect_kwargs()) as late_writer:  # type: ignore[arg-type]
            late_writer.execute(
                f'INSERT INTO "{schema}".ledger_events (originator_id, originator_version, topic, state,'
                " notification_id) VALUES (%s, %s, %s, %s, %s)",
                (stored.originator_id, stored.originator_version, stored.topic, stored.state, late_id),
            )
            assert rt.engine.process_batch() == (0, True)  # held at the gap: the later event waits
            assert rt.engine.position() == 3
            late_writer.commit()
        # It commits late: it must not be skipped. The engine then waits at the lost id's gap.
        assert rt.engine.process_batch() == (1, True)
        assert rt.engine.position() == late_id
        rt.engine.gap_wait = 0.0  # the lost id's wait runs out: the gap is passed
        assert rt.engine.catch_up() == 1
        assert rt.engine.position() == lost_id + 1
        keys = [e["body"]["data"].get("key") for e in rt.read.feed(3, 10)]
        assert keys == ["late-claim", "elton-met-putin"]
        assert rt.read.claim("late-claim") is not None
    finally:
        rt.close()


def test_rebuild_swaps_in_new_tables_while_reads_keep_answering_from_the_live_ones(runtime: Runtime) -> None:
    seed_story(runtime)
    runtime.engine.catch_up()
    before = runtime.read.claim(CLAIM_KEY)
    before_feed = runtime.read.feed(0, 10)
    # Recorded but not yet projected: the live tables do not show the retraction, the rebuilt
    # ones will, so a read tells which tables answered it.
    runtime.ledger.retract_act(CLAIM_KEY, retracts="elton-instagram", party=ELTON)
    mid_rebuild, read_done = threading.Event(), threading.Event()
    during: dict[str, Any] = {}

    def read_during_the_rebuild() -> None:  # another thread, as an API request would be
        try:
            if mid_rebuild.wait(30):
                during["claim"] = runtime.read.claim(CLAIM_KEY)
                during["feed"] = runtime.read.feed(0, 10)
                during["disputed"] = [c["key"] for c in runtime.read.list_claims(status="disputed")[0]]
        except Exception as e:  # shown by the assertion below
            during["error"] = repr(e)
        finally:
            read_done.set()

    reader = threading.Thread(target=read_during_the_rebuild, daemon=True)
    reader.start()
    progress: list[tuple[int, int]] = []

    def hold_the_rebuild_while_reading(done: int, total: int) -> None:
        # Called by the rebuild between its pages, the new tables half-filled: it goes on only
        # once the other thread's reads have been answered (or gave up).
        progress.append((done, total))
        if not mid_rebuild.is_set():
            mid_rebuild.set()
            assert read_done.wait(30), "reads did not answer during the rebuild"

    assert runtime.engine.rebuild(progress=hold_the_rebuild_while_reading) == 4
    reader.join(10)
    assert mid_rebuild.is_set(), "the rebuild reported no progress to read during"
    assert during == {"claim": before, "feed": before_feed, "disputed": [CLAIM_KEY]}
    assert progress[-1] == (4, 4)
    # Swapped in: the rebuilt tables answer, with the retraction.
    assert runtime.read.claim(CLAIM_KEY)["status"] == "denied"  # type: ignore[index]
    assert json.loads(json.dumps(runtime.read.feed(0, 10)))[3]["body"]["type"] == "Retracted"
    # And the engine follows the log on from them.
    runtime.ledger.register_claim("Elton John met Vladimir Putin", key="elton-met-putin")
    assert runtime.engine.catch_up() == 1
    assert runtime.read.claim("elton-met-putin") is not None
    assert runtime.engine.position() == 5


@pytest.mark.parametrize("batch_size", [7, 10_000])
def test_a_rebuild_folding_claims_in_a_second_process_equals_the_incremental_projection(
    runtime: Runtime, tmp_path: Path, batch_size: int
) -> None:
    """The parallel rebuild (the claims folded by a subprocess while this one writes the
    history), with pages that cut claims' histories in two (7) and whole ones (10,000)."""
    fixture = tmp_path / "generated.jsonl"
    write_fixture(fixture, generate(60, seed=7))
    events = import_fixture(runtime.ledger, fixture).events
    assert events > 500
    assert runtime.engine.catch_up() == events
    incremental = snapshot(runtime)
    runtime.engine.parallel_from = 1
    runtime.engine.batch_size = batch_size
    fresh_progress: list[tuple[int, int]] = []
    assert runtime.engine.rebuild(progress=lambda done, total: fresh_progress.append((done, total))) == events
    assert snapshot(runtime) == incremental
    assert runtime.engine.helper_peak_rss_mib > 10  # the second process reported its peak memory
    assert fresh_progress[-1] == (events, events)
    assert [done for done, _ in fresh_progress] == sorted(done for done, _ in fresh_progress)


def test_a_killed_second_process_fails_the_rebuild_and_leaves_the_live_tables(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_story(runtime)
    runtime.engine.catch_up()
    before = snapshot(runtime)
    runtime.engine.parallel_from = 1
    start = engine_module._ClaimFolder.__init__

    def start_then_kill(self: Any, *args: Any) -> None:  # as the OOM killer would
        start(self, *args)
        self._process.kill()

    monkeypatch.setattr(engine_module._ClaimFolder, "__init__", start_then_kill)
    with pytest.raises(RuntimeError, match="folding claims in a second process failed: it exited with code -9"):
        runtime.engine.rebuild()
    monkeypatch.undo()
    assert snapshot(runtime) == before
    assert runtime.engine.rebuild() == 3
    assert snapshot(runtime) == before
