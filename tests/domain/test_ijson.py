"""The one JSON parser of every input (domain/ijson.py): I-JSON (RFC 7493) or a refusal naming the member."""

from __future__ import annotations

import json
import pickle
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import ijson
from domain.errors import (
    DuplicateMember,
    InexactNumber,
    InvalidInput,
    InvalidJson,
    LoneSurrogate,
    MalformedJson,
)
from tests.json_text import JSON_OBJECTS, JSON_VALUES, STYLES, Style, python, tree, with_a_member_twice, write

ACT = {
    "party": {"id": "dmitry-peskov", "name": "Dmitry Peskov"}, "on_behalf_of": {"id": "vladimir-putin", "name": "Putin"},
    "source": {"url": "https://tass.com/politics/821412", "outlet": "TASS"},
    "reported_via": [{"outlet": "Interfax"}, {"url": "https://www.themoscowtimes.com/", "outlet": "The Moscow Times"}],
    "said_at": "2015-09-15T10:00:00Z", "quote": "It is not true",
}


def refusal(text: str | bytes, kind: type[InvalidJson]) -> InvalidJson:
    with pytest.raises(kind) as refused:
        ijson.loads(text)
    return refused.value


# -- Duplicate member names ---------------------------------------------------------------------

DUPLICATES = [
    ('{"party":{"id":"z","name":"Z"},"quote":"one","quote":"two"}', ("quote",), "member quote appears twice"),
    ('{"party":{"id":"x","name":"X","id":"y"}}', ("party", "id"), "member party.id appears twice"),
    ('{"party":{"id":"x","name":"X"},"on_behalf_of":{"name":"P","id":"p","name":"Q"}}', ("on_behalf_of", "name"),
     "member on_behalf_of.name appears twice"),
    ('{"source":{"url":"https://a.example/","url":"https://b.example/"}}', ("source", "url"),
     "member source.url appears twice"),
    ('{"reported_via":[{"outlet":"A"},{"url":"https://a.example/","outlet":"B","url":"https://b.example/"}]}',
     ("reported_via", 1, "url"), "member reported_via[1].url appears twice"),
    ('{"quote":"same","quote":"same"}', ("quote",), "member quote appears twice"),
    ('[[{"a":{"b":[1,{"c":null,"c":null}]}}]]', (0, 0, "a", "b", 1, "c"), "member [0][0].a.b[1].c appears twice"),
    ('{"odd name":{"":1,"":2}}', ("odd name", ""), 'member ["odd name"][""] appears twice'),
    # A dropped member's colon made up for by a colon written as an escape: still found.
    ('{"quote":1,"quote":"\\u003a"}', ("quote",), "member quote appears twice"),
    ('{\n  "quote" : "one" ,\n  "quote" : "two"\n}', ("quote",), "member quote appears twice"),
]


@pytest.mark.parametrize(("text", "loc", "named"), DUPLICATES, ids=[
    "top level", "in party", "in on_behalf_of", "in source", "in reported_via[1]", "with the same value",
    "deep in arrays", "odd names", "behind an escaped colon", "pretty-printed",
])
def test_a_member_named_twice_at_any_depth_is_refused_naming_it(text: str, loc: tuple[str | int, ...],
                                                                 named: str) -> None:
    refused = refusal(text.encode(), DuplicateMember)
    assert refused.loc == loc
    assert str(refused).startswith(named)
    assert "I-JSON (RFC 7493) forbids duplicate member names" in str(refused)
    assert "send each member once" in str(refused)
    assert isinstance(refused, InvalidInput)  # answered 422 wherever a domain error is


def test_the_same_refusal_for_text_and_for_bytes() -> None:
    text = DUPLICATES[1][0]
    assert str(refusal(text, DuplicateMember)) == str(refusal(text.encode(), DuplicateMember))


def test_the_first_problem_in_the_document_is_the_one_named() -> None:
    refused = refusal(b'{"a":{"x":1,"x":2},"b":{"y":1,"y":2}}', DuplicateMember)
    assert refused.loc == ("a", "x")
    assert refusal(b'{"a":1e999,"a":2}', InexactNumber).loc == ("a",)


# -- Lone surrogates ----------------------------------------------------------------------------

SURROGATES = [
    (b'{"party":{"id":"x","name":"Elton \\ud800John"}}', ("party", "name")),
    (b'{"quote":"\\udc00"}', ("quote",)),
    (b'{"reported_via":[{"title":"a\\ud83d"}]}', ("reported_via", 0, "title")),
    (b'{"quote":"\\ude00\\ud83d"}', ("quote",)),  # a pair in the wrong order is two lone ones
    (b'{"quote":"\xed\xa0\x80"}', ("quote",)),  # a surrogate's own UTF-8 bytes
    ('{"quote":"\ud800"}', ("quote",)),  # text holding one
    (b'{"\\ud800":1}', ("\ud800",)),
]


@pytest.mark.parametrize(("text", "loc"), SURROGATES, ids=[repr(case[0]) for case in SURROGATES])
def test_a_lone_surrogate_in_a_string_or_name_is_refused_naming_the_member(
    text: bytes | str, loc: tuple[str | int, ...]
) -> None:
    refused = refusal(text, LoneSurrogate)
    assert refused.loc == loc
    assert "lone surrogate" in str(refused) and "I-JSON (RFC 7493) forbids them" in str(refused)
    str(refused).encode("utf-8")  # the message itself can be sent and logged


def test_a_surrogate_pair_is_one_character_and_accepted() -> None:
    assert ijson.loads(b'{"quote":"\\ud83d\\ude00 \xf0\x9f\x98\x80"}') == {"quote": "\U0001f600 \U0001f600"}


# -- Numbers ------------------------------------------------------------------------------------

INEXACT = [
    ("1e400", "is beyond the range of a double"),
    ("-1e400", "is beyond the range of a double"),
    ("9" * 400, "is beyond the range of a double"),
    ("1e-400", "is too small for a double, which reads it as 0"),
    ("3.141592653589793238462643383279", "has more digits than a double holds"),
    ("0.1000000000000000055511151231257827", "has more digits than a double holds"),
    ("9007199254740993", "has more digits than a double holds"),
    ("-9007199254740993", "has more digits than a double holds"),
    ("18446744073709551617", "has more digits than a double holds"),
    ("NaN", "is not JSON"),
    ("-Infinity", "is not JSON"),
]


@pytest.mark.parametrize(("number", "why"), INEXACT)
def test_a_number_a_double_does_not_hold_as_written_is_refused_naming_the_member(number: str, why: str) -> None:
    refused = refusal(f'{{"party":{{"id":"x","name":"X"}},"source":{{"title":{number}}}}}', InexactNumber)
    assert refused.loc == ("source", "title")
    assert str(refused).startswith(f"the number at source.title ({number[:40]}) {why}")


EXACT = ["0", "-0", "-0.0", "0.1", "1.5", "1E2", "1e23", "100000000000000000000000", "5e-324", "9007199254740991",
         "9007199254740992", "1152921504606846976", "-9223372036854775808", "1.7976931348623157e308"]


@pytest.mark.parametrize("number", EXACT)
def test_a_number_a_double_holds_as_written_is_accepted_as_that_double(number: str) -> None:
    value = ijson.loads(f"[{number}]".encode())[0]
    assert Decimal(number) in (Decimal(value), Decimal(repr(float(value))))


@settings(max_examples=300)
@given(st.integers(-(2**70), 2**70))
def test_an_integer_is_accepted_exactly_when_a_double_holds_it_as_written(number: int) -> None:
    double = float(number)
    held = Decimal(number) in (Decimal(double), Decimal(repr(double)))
    try:
        value = ijson.loads(str(number).encode())
    except InexactNumber:
        assert not held
    else:
        assert held and value == number


@pytest.mark.parametrize(("value", "field"), [(0, "after"), (2**53 - 1, "position")])
def test_a_count_version_or_position_may_be_any_integer_up_to_2_to_the_53_minus_1(value: int, field: str) -> None:
    assert ijson.safe_integer(value, field) == value


@pytest.mark.parametrize("value", [2**53, -1, True, 1.0, "1", None])
def test_a_count_version_or_position_past_2_to_the_53_minus_1_or_not_an_integer_is_refused(value: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        ijson.safe_integer(value, "position")
    assert refused.value.field == "position"
    assert str(refused.value).startswith("position must be an integer from 0 to 9007199254740991")


# -- Malformed input and nesting ----------------------------------------------------------------


@pytest.mark.parametrize("text", [b'{"op": "assert", "claim": ', b"", b"nul", b'{"a":1} {}', b'{"a":"\x01"}',
                                  b"\xef\xbb\xbf{}", b"{'a': 1}"])
def test_malformed_json_is_refused_saying_where(text: bytes) -> None:
    refused = refusal(text, MalformedJson)
    assert str(refused).startswith("malformed JSON: ") and "column" in str(refused)
    assert refused.loc == ()


def test_invalid_utf8_is_refused_naming_the_byte() -> None:
    assert str(refusal(b'{"quote":"caf\xe9"}', MalformedJson)).startswith("the JSON is not valid UTF-8 (byte 13)")


@pytest.mark.parametrize("style", STYLES, ids=[style.name for style in STYLES])
def test_nesting_is_taken_up_to_254_levels_and_refused_past_them(style: Style) -> None:
    def nested(depth: int) -> bytes:
        return (("{" + write("a", style) + style.key) * depth + write("x:y", style) + "}" * depth).encode()

    deepest: Any = "x:y"
    for _ in range(ijson.MAX_DEPTH):
        deepest = {"a": deepest}
    assert ijson.loads(nested(ijson.MAX_DEPTH)) == deepest
    for depth in (ijson.MAX_DEPTH + 1, 1024, 100_000):
        assert "nested more than 254 levels deep" in str(refusal(nested(depth), MalformedJson))


def test_a_refusal_survives_pickling_whole() -> None:
    refused = refusal(DUPLICATES[4][0], DuplicateMember)
    again = pickle.loads(pickle.dumps(refused))
    assert (type(again), str(again), again.loc, again.field) == (
        DuplicateMember, str(refused), refused.loc, "reported_via[1].url")


# -- Properties ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES, ids=[style.name for style in STYLES])
def test_an_act_body_written_any_way_is_read_as_it_is(style: Style) -> None:
    text = write(tree(ACT), style)
    assert ijson.loads(text.encode()) == ACT
    assert ijson.loads(text) == ACT


@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES, style=st.sampled_from(STYLES))
def test_any_i_json_document_is_read_as_every_reader_reads_it(value: Any, style: Style) -> None:
    text = write(value, style)
    expected = python(value)
    assert ijson.loads(text.encode()) == expected == json.loads(text) == orjson.loads(text)


@settings(max_examples=400, deadline=None)
@given(value=JSON_OBJECTS, style=st.sampled_from(STYLES), data=st.data())
def test_any_json_object_with_a_member_given_twice_anywhere_is_refused_naming_it(
    value: Any, style: Style, data: st.DataObject,
) -> None:
    text, loc = with_a_member_twice(value, data.draw, style)
    with pytest.raises(DuplicateMember) as refused:
        ijson.loads(text.encode())
    assert refused.value.loc == loc
