"""The remote commands (`claims --url URL show|list|history|party|assert|deny|retract|void|
tail|watch`) against a real `claims serve`: human output, `--json` equal to what the API
answers, exit 1 on a refusal with the server's detail, exit 2 on bad usage."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import cli.audit  # adds `audit` to the app
import cli.remote  # noqa: F401  # adds the remote commands to the app
from cli.main import app
from tests.api import story
from tests.client.conftest import Served, seed, serve
from tests.conftest import new_database_url

Json = dict[str, Any]
runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("cli-remote")
    for running in serve(new_database_url("sqlite", workdir), workdir):
        seed(running)
        yield running


def claims(served: Served | None, *args: str, role: str | None = "auditor", stdin: str | None = None,
           **env: str) -> Any:
    """`claims *args` in this process, LEDGER_URL and LEDGER_TOKEN set for `served` and `role`."""
    environment = {"LEDGER_URL": None, "LEDGER_TOKEN": None, "COLUMNS": "200", **env}
    if served is not None:
        environment["LEDGER_URL"] = served.base
        if role is not None:
            environment["LEDGER_TOKEN"] = served.tokens[role]
    return runner.invoke(app, list(args), env=environment, input=stdin)


def json_out(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_show_prints_the_claim_for_people_and_its_json_for_scripts(served: Served) -> None:
    shown = claims(served, "show", story.KEY)
    assert shown.exit_code == 0, shown.output
    for text in (story.KEY, "disputed", "version 3", story.STATEMENT, "Elton John", "Dmitry Peskov", "denies",
                 "peskov-tass"):
        assert text in shown.stdout
    assert json_out(claims(served, "show", story.KEY, "--json")) == served.raw_json(f"/v1/claims/{story.KEY}")
    for flags, params in ((["--version", "2"], {"version": 2}), (["--said-as-of", "2015-09-14"], {"said_as_of": "2015-09-14"}),
                          (["--recorded-as-of", "2100-01-01"], {"recorded_as_of": "2100-01-01"})):
        assert json_out(claims(served, "show", story.KEY, *flags, "--json")) == served.raw_json(
            f"/v1/claims/{story.KEY}", **params)


def test_the_status_is_in_colour_on_a_terminal(served: Served) -> None:
    shown = claims(served, "show", story.KEY, FORCE_COLOR="1")
    assert shown.exit_code == 0 and "\x1b[33mdisputed\x1b[0m" in shown.stdout


def test_list_history_and_party_print_tables_and_json(served: Served) -> None:
    listed = claims(served, "list", "--status", "disputed", "--party", "vladimir-putin")
    assert listed.exit_code == 0 and story.KEY in listed.stdout and "disputed" in listed.stdout
    assert json_out(claims(served, "list", "--json", "--limit", "1")) == served.raw_json("/v1/claims", limit=1)
    assert json_out(claims(served, "list", "--all", "--limit", "1", "--json"))["items"] == served.raw_json(
        "/v1/claims")["items"]
    assert "no claims match" in claims(served, "list", "--search", "zeppelin").stderr

    history = served.raw_json(f"/v1/claims/{story.KEY}/history")
    printed = claims(served, "history", story.KEY)
    assert printed.exit_code == 0
    assert all(e["hash"][:12] in printed.stdout for e in history["events"]) and "Dmitry Peskov for Vladimir Putin" in printed.stdout
    assert json_out(claims(served, "history", story.KEY, "--json")) == history
    assert json_out(claims(served, "history", story.KEY, "--version", "1", "--json")) == served.raw_json(
        f"/v1/claims/{story.KEY}/history", version=1)

    party = claims(served, "party", "dmitry-peskov")
    assert party.exit_code == 0 and "spoken for others" in party.stdout and "Vladimir Putin" in party.stdout
    assert json_out(claims(served, "party", "vladimir-putin", "--json")) == served.raw_json("/v1/parties/vladimir-putin")


def test_acts_from_flags_and_from_a_json_file_are_recorded(served: Served, tmp_path: Path) -> None:
    key = f"cli-acts-{uuid.uuid4().hex[:8]}"
    assert served.raw("POST", "/v1/claims", "recorder", json={"statement": f"A claim for {key}", "key": key}).status_code == 201
    asserted = claims(served, "assert", key, "--party", "elton-john", "--party-name", "Elton John", "--said-at",
                      "2015-09-14", "--source-url", "https://www.instagram.com/p/7r0fHKSsBC/", "--source-outlet",
                      "Instagram", "--quote", "Thank you", "--act-id", "elton", role="recorder")
    assert asserted.exit_code == 0, asserted.output
    assert asserted.stdout.strip() == f"assert: act elton recorded on {key}: version 2, log position " + str(
        served.raw_json(f"/v1/claims/{key}/history")["events"][1]["position"])
    body = tmp_path / "denial.json"
    body.write_text(json.dumps(story.peskov_denies(act_id="peskov")))
    denied = json_out(claims(served, "deny", key, "--json", str(body), "--print-json", role="recorder"))
    assert denied["act_id"] == "peskov" and denied["version"] == 3
    retracted = json_out(claims(served, "retract", key, "elton", "--party", "elton-john", "--party-name", "Elton John",
                                "--reason", "misread", "--act-id", "elton-back", "--print-json", role="recorder"))
    voided = json_out(claims(served, "--token", served.tokens["editor"], "void", key, "peskov", "--reason", "in error",
                             "--if-match", "4", "--print-json", role="recorder"))
    stdin = claims(served, "assert", key, "--json", "-", "--print-json", role="recorder",
                   stdin=json.dumps({"party": story.PUTIN, "act_id": "putin"}))
    reviewed = json_out(claims(served, "review", key, "--reviewer", "fact-checkers", "--reviewer-name", "Fact Checkers",
                               "--rating", "False", "--url", "https://www.example.org/fact-checks/1", "--print-json",
                               role="recorder"))
    events = served.raw_json(f"/v1/claims/{key}/history")["events"]
    assert [(e["type"], e["act_id"]) for e in events] == [
        ("ClaimRegistered", None), ("Asserted", "elton"), ("Denied", "peskov"), ("Retracted", "elton-back"),
        ("ActVoided", voided["act_id"]), ("Asserted", json_out(stdin)["act_id"]), ("Reviewed", reviewed["act_id"]),
    ]
    assert events[-1]["rating"] == {"text": "False"} and events[-1]["reviewer"]["id"] == "fact-checkers"
    shown = claims(served, "show", key)
    assert "reviews" in shown.stdout and "Fact Checkers" in shown.stdout and "https://www.example.org/fact-checks/1" in shown.stdout
    assert events[1]["source"]["outlet"] == "Instagram" and events[2]["on_behalf_of"] == story.PUTIN
    assert retracted["version"] == 4 and voided["version"] == 5


def test_a_refused_act_exits_1_with_the_servers_detail_and_changes_nothing(served: Served) -> None:
    before = served.raw_json(f"/v1/claims/{story.KEY}/history")
    void = claims(served, "void", story.KEY, "elton-instagram", "--reason", "no", role="recorder")
    assert void.exit_code == 1
    assert void.stderr.startswith("error: 403 Forbidden: this operation needs role editor or above")
    assert "request id" in void.stderr
    twice = claims(served, "retract", story.KEY, "no-such-act", "--party", "elton-john", "--party-name", "Elton John",
                   role="recorder")
    assert twice.exit_code == 1 and "error: 404" in twice.stderr and "no-such-act" in twice.stderr
    bad = claims(served, "assert", story.KEY, "--party", "Elton", "--party-name", "Elton John", role="recorder")
    assert bad.exit_code == 1 and "error: 422" in bad.stderr and "party.id" in bad.stderr
    unknown = claims(served, "show", "no-such-claim")
    assert unknown.exit_code == 1 and "no claim has the id or key 'no-such-claim'" in unknown.stderr
    anonymous = claims(served, "tail", "--after", "0", role=None)
    assert anonymous.exit_code == 1 and "error: 401" in anonymous.stderr
    assert served.raw_json(f"/v1/claims/{story.KEY}/history") == before


@pytest.mark.parametrize(("args", "says"), [
    (["show", story.KEY], "`claims show` talks to a ledger over HTTP: give its address with --url"),
    (["--url", "ftp://example.org", "show", story.KEY], "is not an HTTP URL"),
    (["--url", "http://127.0.0.1:9", "assert", story.KEY, "--party", "elton-john"], "--party and --party-name go together"),
    (["--url", "http://127.0.0.1:9", "assert", story.KEY], "say who asserts it"),
    (["--url", "http://127.0.0.1:9", "void", story.KEY, "x"], "claims void CLAIM ACT_ID --reason TEXT"),
    (["--url", "http://127.0.0.1:9", "retract", story.KEY, "--json", "body.json", "--reason", "r"],
     "--json FILE gives the whole body; leave out --reason"),
    (["--url", "http://127.0.0.1:9", "deny", story.KEY, "--json", "missing.json"], "cannot read missing.json"),
    (["--url", "http://127.0.0.1:9", "deny", story.KEY, "--json", "-"], "is not a JSON object the ledger can take"),
])
def test_bad_usage_exits_2_saying_what_to_fix(args: list[str], says: str) -> None:
    result = claims(None, *args, stdin='{"party": 1, "party": 2}')
    assert result.exit_code == 2, result.output
    assert says in result.stderr


def test_tail_and_watch_follow_the_streams(served: Served) -> None:
    feed = served.raw_json("/v1/events", limit=1000)["items"]
    tailed = claims(served, "tail", "--after", "0", "--count", str(len(feed)), "--json")
    assert tailed.exit_code == 0, tailed.output
    assert [json.loads(line) for line in tailed.stdout.splitlines()] == feed
    human = claims(served, "tail", "--after", str(feed[-2]["position"]), "--count", "1")
    assert human.exit_code == 0 and f"{feed[-1]['position']}" in human.stdout and feed[-1]["hash"][:12] in human.stdout
    watched = claims(served, "watch", "--claim", story.KEY, "--after", "0", "--count", "1", "--json", role="reader")
    change = json.loads(watched.stdout)
    assert change["type"] == "claim" and change["claim"] == served.raw_json(f"/v1/claims/{story.KEY}")
    shown = claims(served, "watch", "--status", "disputed", "--after", "0", "--count", "1", role="reader")
    assert shown.exit_code == 0 and story.KEY in shown.stdout and "disputed" in shown.stdout


def test_claims_audit_takes_the_global_url_and_token(served: Served, tmp_path: Path) -> None:
    kept = tmp_path / "checkpoint.json"
    audited = claims(None, "--url", served.base, "--token", served.tokens["auditor"], "audit", "--checkpoint", str(kept))
    assert audited.exit_code == 0, audited.output
    assert "all checks hold; the new checkpoint is saved" in audited.stdout and kept.exists()
