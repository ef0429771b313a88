"""JSON texts written member by member, so that a test can give a member twice.

A dict cannot hold a name twice, so a document with a duplicated member is built as a tree
of `Obj` (an object's members as a list of pairs, in order) and written out by `write`.
`with_a_member_twice` takes any JSON value, picks one of its objects and one name in it
(with hypothesis' `draw`) and writes it with that member given twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Loc = tuple[str | int, ...]
Draw = Callable[[st.SearchStrategy[Any]], Any]


@dataclass
class Obj:
    """A JSON object as written: its members in order, a name possibly twice."""

    members: list[tuple[str, Any]]


@dataclass(frozen=True)
class Style:
    """How a text is written: separators, non-ASCII as escapes, colons in strings as \\u003a."""

    name: str
    item: str = ","
    key: str = ":"
    ascii: bool = False
    escaped_colons: bool = False


STYLES = [
    Style("compact"),
    Style("spaced", item=", ", key=": "),
    Style("ascii escapes", ascii=True),
    Style("escaped colons", item=" ,\n ", key=" :\t", escaped_colons=True),
]

SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
NAMES = st.text(max_size=6)


def objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Obj]:
    return st.lists(st.tuples(NAMES, children), max_size=5, unique_by=lambda member: member[0]).map(Obj)


JSON_VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4) | objects(children),
                           max_leaves=16)
JSON_OBJECTS = objects(JSON_VALUES)


def tree(value: Any) -> Any:
    """A parsed JSON value as a tree of `Obj`."""
    if isinstance(value, dict):
        return Obj([(name, tree(item)) for name, item in value.items()])
    if isinstance(value, list):
        return [tree(item) for item in value]
    return value


def python(value: Any) -> Any:
    """The value a tree stands for (with unique names)."""
    if isinstance(value, Obj):
        return {name: python(item) for name, item in value.members}
    if isinstance(value, list):
        return [python(item) for item in value]
    return value


def write(value: Any, style: Style = STYLES[0]) -> str:
    if isinstance(value, Obj):
        members = (f"{_string(name, style)}{style.key}{write(item, style)}" for name, item in value.members)
        return "{" + style.item.join(members) + "}"
    if isinstance(value, list):
        return "[" + style.item.join(write(item, style) for item in value) + "]"
    if isinstance(value, str):
        return _string(value, style)
    return json.dumps(value)


def _string(text: str, style: Style) -> str:
    written = json.dumps(text, ensure_ascii=style.ascii)
    # Inside a string json.dumps writes a colon as itself; \u003a is the same character.
    return written.replace(":", "\\u003a") if style.escaped_colons else written


def objects_in(value: Any, loc: Loc = ()) -> Iterator[tuple[Loc, Obj]]:
    """Every object of a tree with its place, in document order."""
    if isinstance(value, Obj):
        yield loc, value
        for name, item in value.members:
            yield from objects_in(item, (*loc, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from objects_in(item, (*loc, index))


def with_a_member_twice(value: Any, draw: Draw, style: Style = STYLES[0]) -> tuple[str, Loc]:
    """`value` (a parsed JSON value or a tree holding an object) written with one member of
    one of its objects given twice, and that member's place. The second one has the same
    value or another, before or after the first."""
    root = tree(python(value))  # a copy: the caller's value stays as it was
    places = list(objects_in(root))
    loc, obj = draw(st.sampled_from(places))
    names = [name for name, _ in obj.members]
    again = draw(st.sampled_from(names) if names else NAMES)
    if again not in names:
        obj.members.append((again, draw(JSON_VALUES)))
    first = next(item for name, item in obj.members if name == again)
    twice = (again, draw(st.just(first) | JSON_VALUES))
    obj.members.insert(draw(st.integers(0, len(obj.members))), twice)
    return write(root, style), (*loc, again)
