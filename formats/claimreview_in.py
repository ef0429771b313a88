"""Fact-checks in: ClaimReview JSON-LD and Google Fact Check Tools answers, as ledger acts.

Three shapes are read (docs/formats.md, "Importing ClaimReview"):

- a JSON-LD array of ClaimReview objects, or one ClaimReview;
- a schema.org `DataFeed` whose `dataFeedElement`s are ClaimReviews or `DataFeedItem`s wrapping
  them in `item` (the Data Commons fact-check feed; also what `claims export --format
  claimreview` writes, whose Claims carry the ledger's whole history in `ledger:act`);
- an answer of Google's Fact Check Tools `claims:search`: `{"claims": [{text, claimant,
  claimDate, claimReview: [{publisher, url, title, reviewDate, textualRating, languageCode}]}]}`.

Each element of the array, `dataFeedElement` or `claims` is one *item*, numbered from 1 in
errors (`file:item N: what is wrong`). An item becomes fixture lines (the shapes of
fixtures/replay.py): a registration, the claimant's assertion, one review per ClaimReview, so
the import is the fixture import's, atomic and rule for rule. Keys and act ids are derived
deterministically (`claim_key`, `act_id_for`): importing the same file again records nothing,
and the same claim reviewed by two publishers is one claim with two reviews.

Input is hostile until shown otherwise: it is parsed by the one I-JSON parser, bounded in
size and depth, every value's type is checked before use, and properties the mapping does not
know are ignored and counted (`Conversion.ignored`).
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from domain import ijson
from domain.errors import InvalidInput, InvalidJson
from domain.values import SLUG, key_from_statement
from formats.vocab import LEDGER, OP_OF_CLASS, SCHEMA

Json = dict[str, Any]

MAX_BYTES = 256 * 1024 * 1024  # a feed larger than this is refused before it is parsed
MAX_DEPTH = 32  # ClaimReview documents nest a dozen levels at most
SCHEMA_PREFIXES = ("schema:", SCHEMA, "http://schema.org/")
MAX_IGNORED_NAMES = 1_000  # distinct names counted; a hostile file may invent millions
QUOTES = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb\u201e"  # straight and typographic quotation marks

# What the mapping reads of each kind of node; anything else is ignored and counted.
KNOWN_REVIEW = {
    "claimReviewed", "itemReviewed", "author", "reviewRating", "url", "datePublished", "reviewBody",
    "inLanguage", "identifier", "ledger:recordedAt",
}
KNOWN_CLAIM = {
    "text", "name", "author", "appearance", "firstAppearance", "datePublished", "identifier", "inLanguage",
    "keywords", "ledger:act", "ledger:registeredAt",
}
DERIVED_PROPERTIES = {  # what the ledger's export states and the import works out again itself
    "ledger:status", "ledger:assertedBy", "ledger:deniedBy", "ledger:withdrawnBy", "ledger:version",
    "ledger:retractedBy", "ledger:voidedBy", "ledger:eventHash", "ledger:claim",
}
ENVELOPE = {"@context", "@type", "@id"}


class ClaimReviewError(InvalidInput):
    """An item of a ClaimReview file that cannot be imported; nothing of the file is written."""

    code = "claimreview-error"
    title = "Bad ClaimReview item"

    def __init__(self, name: str, item: int | None, message: str) -> None:
        where = f"{name}:item {item}" if item is not None else name
        super().__init__(f"{where}: {message}")
        self.name = name
        self.item = item
        self.message = message


@dataclass
class Conversion:
    """A file's items as fixture lines, each with its item number, and what was ignored."""

    lines: list[Json] = field(default_factory=list)
    items_of_lines: list[int] = field(default_factory=list)
    items: int = 0
    claims: int = 0
    reviews: int = 0
    ignored: Counter[str] = field(default_factory=Counter)


# Reading values.
def _term(name: str) -> str:
    """A property name as the mapping knows it: schema.org terms bare, the ledger's as `ledger:x`."""
    if ":" not in name:  # bare (the context's vocabulary) or a keyword: the common case
        return name
    for prefix in SCHEMA_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    if name.startswith(LEDGER):
        return "ledger:" + name[len(LEDGER):]
    return name


def _node(value: object, what: str) -> Json:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object, not {_kind(value)}")
    return {_term(k): v for k, v in value.items()}


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null", dict: "an object"}.get(
        type(value), "a number"
    )


def _types(node: Json) -> set[str]:
    found = node.get("@type")
    names = found if isinstance(found, list) else [found] if found is not None else []
    return {_term(t) for t in names if isinstance(t, str)}


def _many(value: object) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text(node: Json, name: str, what: str, *, required: bool = False) -> str | None:
    value = node.get(name)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict) and "@value" in value:
        value = value["@value"]
    if value is None:
        if required:
            raise InvalidInput(f"{what}.{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what}.{name} must be a string, not {_kind(value)}")
    return value


def _url(node: Json, name: str, what: str) -> str | None:
    value = node.get(name)
    if isinstance(value, dict) and "@id" in value:
        value = value["@id"]
    return _text({name: value}, name, what)


def _language(node: Json, what: str, ignored: Counter[str]) -> str | None:
    """`inLanguage` as a language tag; schema.org also allows a `Language` object, which names a
    language rather than tagging it: left out, and counted."""
    value = node.get("inLanguage")
    if value is None or isinstance(value, str):
        return value
    ignored[f"{what}.inLanguage (not a language tag)"] += 1
    return None


def _number(value: object, what: str) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a number, not a boolean")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}(\.\d{1,6})?", value.strip()):
        number = float(value)
        return int(number) if number.is_integer() else number
    raise InvalidInput(f"{what} must be a number (got {value!r:.40})")


def _count_unknown(node: Json, known: set[str], kind: str, ignored: Counter[str]) -> None:
    for name in node:
        if name not in known and name not in ENVELOPE and name not in DERIVED_PROPERTIES:
            key = f"{kind}.{name:.100}"
            if len(ignored) >= MAX_IGNORED_NAMES and key not in ignored:
                key = "(other properties)"
            ignored[key] += 1


# Keys, parties and act ids.
def normalised_text(text: str) -> str:
    """The text a claim's key is derived from: NFKC, case-folded, whitespace collapsed,
    surrounding quotation marks dropped."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return folded.strip(QUOTES + " ")


def claim_key(text: str) -> str:
    """The key of a claim imported without one of the ledger's: from its normalised text alone
    (who said it is an act on the claim, not part of it)."""
    return key_from_statement(normalised_text(text))


@functools.lru_cache(maxsize=65_536)  # the same publishers and speakers come back item after item
def slug_of(name: str, prefix: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:100].strip("-")
    if words:
        return words
    return f"{prefix}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def act_id_for(kind: str, *parts: object) -> str:
    digest = hashlib.sha256("\n".join("" if p is None else str(p) for p in parts).encode()).hexdigest()[:12]
    return f"{kind}-{digest}"


def _party(value: object, what: str, ignored: Counter[str]) -> Json:
    """A Person or Organization (or a plain name) as a ledger party: its identifier when it is
    a slug (the ledger's own exports), else a slug of its name."""
    if isinstance(value, list):
        if not value:
            raise InvalidInput(f"{what} is an empty array; give a Person or Organization")
        if len(value) > 1:
            ignored[f"{what} (beyond the first)"] += len(value) - 1
        value = value[0]
    if isinstance(value, str):
        name = value
        identifier = None
    else:
        node = _node(value, what)
        name = _text(node, "name", what, required=True) or ""
        identifier = node.get("identifier")
    if not name.strip():
        raise InvalidInput(f"{what}.name must not be blank")
    party_id = identifier if isinstance(identifier, str) and SLUG.fullmatch(identifier) else slug_of(name, "party")
    return {"id": party_id, "name": name}


def _work(value: object, what: str) -> Json:
    """A CreativeWork as a ledger source: url, outlet (its publisher's name), title, published_at."""
    if isinstance(value, str):
        return {"url": value}
    node = _node(value, what)
    source: Json = {}
    url = _url(node, "url", what)
    if url is not None:
        source["url"] = url
    title = _text(node, "name", what) or _text(node, "headline", what)
    if title is not None:
        source["title"] = title
    publisher = node.get("publisher")
    if isinstance(publisher, list) and publisher:
        publisher = publisher[0]
    if isinstance(publisher, str):
        source["outlet"] = publisher
    elif publisher is not None:
        outlet = _text(_node(publisher, f"{what}.publisher"), "name", f"{what}.publisher")
        if outlet is not None:
            source["outlet"] = outlet
    published = _text(node, "datePublished", what)
    if published is not None:
        source["published_at"] = published
    return source


def _rating(value: object, what: str, ignored: Counter[str]) -> Json:
    node = _node(value, what)
    text = _text(node, "alternateName", what) or _text(node, "name", what)
    if text is None:
        raise InvalidInput(f"{what}.alternateName is required: the rating as published, such as \"False\"")
    rating: Json = {"text": text}
    numbers = {
        name: _number(node.get(term), f"{what}.{term}")
        for name, term in (("value", "ratingValue"), ("best", "bestRating"), ("worst", "worstRating"))
    }
    if numbers["best"] is not None and numbers["worst"] is not None:
        rating.update((name, number) for name, number in numbers.items() if number is not None)
    else:  # a number without both ends of its scale says nothing the ledger can keep
        for name, number in numbers.items():
            if number is not None:
                ignored[f"{what}.{name} (without bestRating and worstRating)"] += 1
    _count_unknown(node, {"alternateName", "name", "ratingValue", "bestRating", "worstRating"}, "Rating", ignored)
    return rating


# Items.
@dataclass
class _Claim:
    statement: str
    key: str
    language: str | None = None
    subjects: list[str] = field(default_factory=list)
    registered_at: str | None = None
    acts: list[Json] = field(default_factory=list)
    act_ids: set[str] = field(default_factory=set)


class _Converter:
    def __init__(self, name: str) -> None:
        self.name = name
        self.out = Conversion()
        self.statements: dict[str, str] = {}  # key -> the statement first seen in this file

    def claim(self, text: str, node: Json | None, ignored: Counter[str]) -> _Claim:
        identifier = node.get("identifier") if node is not None else None
        if isinstance(identifier, str) and SLUG.fullmatch(identifier):
            key = identifier
        else:
            if not text.strip():
                raise InvalidInput("the claim's text is blank")
            key = claim_key(text)
        statement = self.statements.setdefault(key, " ".join(text.split()) if key != identifier else text)
        claim = _Claim(statement, key)
        if node is not None:
            claim.language = _language(node, "Claim", ignored)
            claim.subjects = [s for s in _many(node.get("keywords")) if isinstance(s, str)]
            claim.registered_at = _text(node, "ledger:registeredAt", "Claim")
            _count_unknown(node, KNOWN_CLAIM, "Claim", ignored)
        return claim

    def emit(self, item: int, claim: _Claim) -> None:
        lines = self.out.lines
        register: Json = {"op": "register", "key": claim.key, "statement": claim.statement}
        if claim.language:
            register["language"] = claim.language
        if claim.subjects:
            register["subjects"] = claim.subjects
        if claim.registered_at:
            register["recorded_at"] = claim.registered_at
        lines.append(register)
        for act in claim.acts:
            lines.append({**act, "claim": claim.key})
        self.out.items_of_lines.extend([item] * (1 + len(claim.acts)))
        self.out.claims += 1
        self.out.reviews += sum(1 for act in claim.acts if act["op"] == "review")

    # schema.org ClaimReview and Claim nodes.
    def claims_of_nodes(self, nodes: list[Any], what: str) -> list[_Claim]:
        ignored = self.out.ignored
        claims: dict[str, _Claim] = {}
        order: list[_Claim] = []
        parsed = [_node(n, f"{what}[{i}]") for i, n in enumerate(nodes)]
        for node in parsed:
            if "Claim" in _types(node):
                claim = self.claim(_text(node, "text", "Claim") or _text(node, "name", "Claim", required=True) or "",
                                   node, ignored)
                claim.acts.extend(self.ledger_acts(node))
                claim.act_ids.update(a["act_id"] for a in claim.acts)
                if not claim.acts:
                    claim.acts.extend(self.claimant_acts(claim, node))
                claims[str(node.get("@id") or claim.key)] = claim
                order.append(claim)
        for node in parsed:
            types = _types(node)
            if "ClaimReview" not in types:
                if "Claim" not in types:
                    ignored[f"node of type {'/'.join(sorted(types)) or '(none)'}"] += 1
                continue
            _count_unknown(node, KNOWN_REVIEW, "ClaimReview", ignored)
            reviewed = node.get("itemReviewed")
            reviewed_node = _node(reviewed, "ClaimReview.itemReviewed") if reviewed is not None else None
            target = claims.get(str(reviewed_node.get("@id"))) if reviewed_node and "@id" in reviewed_node else None
            if target is None:
                text = _text(node, "claimReviewed", "ClaimReview")
                if text is None and reviewed_node is not None:
                    text = _text(reviewed_node, "text", "ClaimReview.itemReviewed") or _text(
                        reviewed_node, "name", "ClaimReview.itemReviewed")
                if text is None:
                    raise InvalidInput("ClaimReview.claimReviewed is required: the text of the claim reviewed")
                target = self.claim(text, reviewed_node, Counter())
                existing = next((c for c in order if c.key == target.key), None)
                if existing is None:
                    target.acts.extend(self.claimant_acts(target, reviewed_node))
                    target.act_ids.update(a["act_id"] for a in target.acts)
                    order.append(target)
                else:
                    target = existing
                if target.language is None:
                    target.language = _language(node, "ClaimReview", self.out.ignored)
            review = self.review(target, node)
            if review["act_id"] not in target.act_ids:  # the ledger's export lists it in ledger:act too
                target.acts.append(review)
                target.act_ids.add(review["act_id"])
        return order

    def claimant_acts(self, claim: _Claim, node: Json | None) -> list[Json]:
        """The claimant's assertion, from a Claim's author, datePublished and (first) appearance."""
        if node is None or node.get("author") is None:
            return []
        party = _party(node["author"], "Claim.author", self.out.ignored)
        said_at = _text(node, "datePublished", "Claim")
        appearance = node.get("firstAppearance") or next(iter(_many(node.get("appearance"))), None)
        source = _work(appearance, "Claim.appearance") if appearance is not None else None
        act: Json = {"op": "assert", "party": party}
        if said_at is not None:
            act["said_at"] = said_at
        if source:
            act["source"] = source
        act["act_id"] = act_id_for("claimant", claim.key, party["id"], said_at, (source or {}).get("url"))
        return [act]

    def review(self, claim: _Claim, node: Json) -> Json:
        author = node.get("author")
        if author is None:
            raise InvalidInput("ClaimReview.author is required: the fact-checking organisation")
        reviewer = _party(author, "ClaimReview.author", self.out.ignored)
        rating = node.get("reviewRating")
        if rating is None:
            raise InvalidInput("ClaimReview.reviewRating is required, with alternateName (the verdict)")
        url = _url(node, "url", "ClaimReview")
        act: Json = {
            "op": "review", "reviewer": reviewer, "rating": _rating(rating, "ClaimReview.reviewRating", self.out.ignored),
            "url": url, "reviewed_at": _text(node, "datePublished", "ClaimReview"),
        }
        summary = _text(node, "reviewBody", "ClaimReview")
        if summary is not None:
            act["summary"] = summary
        identifier = node.get("identifier")
        act["act_id"] = (
            identifier if isinstance(identifier, str) and SLUG.fullmatch(identifier)
            else act_id_for("review", claim.key, reviewer["id"], url)
        )
        recorded = _text(node, "ledger:recordedAt", "ClaimReview")
        if recorded is not None:
            act["recorded_at"] = recorded
        return act

    def ledger_acts(self, claim_node: Json) -> list[Json]:
        """The acts of the ledger's own export (`ledger:act`), in version order."""
        nodes = [_node(n, "Claim.ledger:act[]") for n in _many(claim_node.get("ledger:act"))]
        ids = {str(n.get("@id")): n.get("identifier") for n in nodes if "@id" in n}

        def act_ref(node: Json, name: str) -> str | None:
            value = node.get(name)
            if value is None:
                return None
            ref = value.get("@id") if isinstance(value, dict) else value
            target = ids.get(str(ref))
            if not isinstance(target, str):
                raise InvalidInput(f"ledger:act {node.get('identifier')!r:.60}: {name} names no act of this claim")
            return target

        acts = []
        for node in sorted(nodes, key=_version):
            kinds = [t.removeprefix("ledger:") for t in _types(node) if t.removeprefix("ledger:") in OP_OF_CLASS]
            if len(kinds) != 1:
                raise InvalidInput(
                    f"ledger:act {node.get('identifier')!r:.60} must have one of the types "
                    f"{', '.join('ledger:' + k for k in OP_OF_CLASS)}"
                )
            op = OP_OF_CLASS[kinds[0]]
            act: Json = {"op": op, "act_id": node.get("identifier")}
            recorded = _text(node, "ledger:recordedAt", "ledger:act")
            if recorded is not None:
                act["recorded_at"] = recorded
            if op == "review":
                review = self.review(_Claim("", ""), node)
                act.update({k: v for k, v in review.items() if k not in ("op", "act_id", "recorded_at")})
                acts.append(act)
                continue
            if node.get("ledger:party") is not None:
                act["party"] = _party(node["ledger:party"], "ledger:act.ledger:party", self.out.ignored)
            if node.get("ledger:onBehalfOf") is not None:
                act["on_behalf_of"] = _party(node["ledger:onBehalfOf"], "ledger:act.ledger:onBehalfOf", self.out.ignored)
            for name, term in (("said_at", "ledger:saidAt"), ("quote", "ledger:quote"), ("note", "ledger:note"),
                               ("reason", "ledger:reason")):
                value = _text(node, term, "ledger:act")
                if value is not None:
                    act[name] = value
            if node.get("ledger:source") is not None:
                act["source"] = _work(node["ledger:source"], "ledger:act.ledger:source")
            if node.get("ledger:reportedVia") is not None:
                act["reported_via"] = [_work(w, "ledger:act.ledger:reportedVia[]") for w in _many(node["ledger:reportedVia"])]
            for name in ("retracts", "voids"):
                target = act_ref(node, f"ledger:{name}")
                if target is not None:
                    act[name] = target
            acts.append(act)
        return acts

    # Google Fact Check Tools: claims:search.
    def google_claim(self, value: object) -> _Claim:
        node = _node(value, "claims[]")
        ignored = self.out.ignored
        _count_unknown(node, {"text", "claimant", "claimDate", "claimReview"}, "claims[]", ignored)
        text = _text(node, "text", "claims[]", required=True) or ""
        claim = self.claim(text, None, ignored)
        claimant = _text(node, "claimant", "claims[]")
        if claimant is not None and claimant.strip():
            party = _party(claimant, "claims[].claimant", ignored)
            said_at = _text(node, "claimDate", "claims[]")
            act: Json = {"op": "assert", "party": party}
            if said_at is not None:
                act["said_at"] = said_at
            act["act_id"] = act_id_for("claimant", claim.key, party["id"], said_at, None)
            claim.acts.append(act)
        reviews = node.get("claimReview")
        if not isinstance(reviews, list | type(None)):
            raise InvalidInput(f"claims[].claimReview must be an array, not {_kind(reviews)}")
        for i, raw in enumerate(reviews or []):
            what = f"claims[].claimReview[{i}]"
            review = _node(raw, what)
            _count_unknown(review, {"publisher", "url", "title", "reviewDate", "textualRating", "languageCode"},
                           "claimReview[]", ignored)
            publisher = review.get("publisher")
            if publisher is None:
                raise InvalidInput(f"{what}.publisher is required: the fact-checking organisation")
            publisher_node = _node(publisher, f"{what}.publisher")
            name = _text(publisher_node, "name", f"{what}.publisher") or _text(publisher_node, "site", f"{what}.publisher")
            if name is None:
                raise InvalidInput(f"{what}.publisher needs a name or a site")
            reviewer = _party(name, f"{what}.publisher", ignored)
            rating = _text(review, "textualRating", what, required=True)
            url = _text(review, "url", what)
            act = {
                "op": "review", "reviewer": reviewer, "rating": {"text": rating}, "url": url,
                "reviewed_at": _text(review, "reviewDate", what),
                "act_id": act_id_for("review", claim.key, reviewer["id"], url),
            }
            title = _text(review, "title", what)
            if title is not None:
                act["summary"] = title
            language = _text(review, "languageCode", what)
            if claim.language is None and language is not None:
                claim.language = language
            claim.acts.append(act)
        return claim


def _version(node: Json) -> int:
    version = node.get("ledger:version")
    return version if isinstance(version, int) else 0


def items_of(document: object, name: str) -> tuple[str, list[Any]]:
    """The shape of a parsed file and its items."""
    if isinstance(document, list):
        return "array", document
    if not isinstance(document, dict):
        raise ClaimReviewError(name, None, f"expected a JSON object or array, not {_kind(document)}")
    node = {_term(k): v for k, v in document.items()}
    if "claims" in node and "@type" not in node:
        if not isinstance(node["claims"], list):
            raise ClaimReviewError(name, None, f"claims must be an array, not {_kind(node['claims'])}")
        return "google", node["claims"]
    if "DataFeed" in _types(node):
        elements = node.get("dataFeedElement")
        if not isinstance(elements, list):
            raise ClaimReviewError(name, None, f"DataFeed.dataFeedElement must be an array, not {_kind(elements)}")
        return "feed", elements
    if "@graph" in node:
        return "array", [node["@graph"]]
    if _types(node) & {"ClaimReview", "Claim"}:
        return "array", [node]
    raise ClaimReviewError(
        name, None,
        "not a ClaimReview file: expected an array of ClaimReview objects, a DataFeed of them, a JSON-LD "
        "document with @graph, or a Fact Check Tools answer {\"claims\": [...]}",
    )


def _check_depth(value: object, name: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH (objects and arrays; the parser bounds it at 254)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if type(value) in (dict, list) else []
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ClaimReviewError(name, None, f"nesting deeper than {MAX_DEPTH} levels; no ClaimReview needs as many")
        for child in current.values() if type(current) is dict else current:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))


def convert(data: bytes, name: str) -> Conversion:
    """The fixture lines a ClaimReview file stands for; ClaimReviewError names the first bad item."""
    if len(data) > MAX_BYTES:
        raise ClaimReviewError(name, None, f"the file is {len(data):,} bytes; at most {MAX_BYTES:,}")
    try:
        document = ijson.loads(data)
    except InvalidJson as e:
        raise ClaimReviewError(name, None, f"not I-JSON: {e}") from None
    _check_depth(document, name)
    shape, items = items_of(document, name)
    converter = _Converter(name)
    if isinstance(document, dict):
        top = {_term(k) for k in document} - ENVELOPE - {"claims", "dataFeedElement", "@graph", "nextPageToken"}
        converter.out.ignored.update(f"(top).{t}" for t in top if t not in ("name", "dateModified"))
    for number, raw in enumerate(items, start=1):
        try:
            if shape == "google":
                claims = [converter.google_claim(raw)]
            else:
                claims = converter.claims_of_nodes(_unwrapped(raw), "item")
            if not claims:
                raise InvalidInput("holds no Claim or ClaimReview")
            for claim in claims:
                converter.emit(number, claim)
        except ClaimReviewError:
            raise
        except InvalidInput as e:
            raise ClaimReviewError(name, number, str(e)) from None
        converter.out.items += 1
    return converter.out


def _unwrapped(raw: object) -> list[Any]:
    """The nodes of one item: a DataFeedItem's `item`, a @graph, a list, or the node itself."""
    if isinstance(raw, list):
        return raw
    if not isinstance(raw, dict):
        raise InvalidInput(f"an item must be an object, not {_kind(raw)}")
    node = {_term(k): v for k, v in raw.items()}
    if "DataFeedItem" in _types(node):
        return _many(node.get("item"))
    if "@graph" in node:
        return _many(node["@graph"])
    return [raw]
