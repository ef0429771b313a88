"""Value shapes of the claims world, validated and normalised to plain JSON.

Events store these normalised dicts, so the same input always produces the same
event body (and therefore the same hash).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import re
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlsplit

from domain.errors import InvalidInput

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,119}")
# BCP 47, the common subset: language, optional script/region/variants.
LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
ABSOLUTE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+$")
PARTY_FIELDS = frozenset({"id", "name"})
SOURCE_FIELDS = frozenset({"url", "outlet", "title", "published_at"})
RATING_FIELDS = frozenset({"text", "value", "best", "worst"})
WEB_SCHEMES = frozenset({"http", "https"})
DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)
# DATE_TIME texts that datetime.fromisoformat reads as they are (UTC, at most microseconds).
UTC_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
# UTC_DATE_TIME texts that are already what format_instant writes, when they are real instants.
NORMAL_DATE_TIME = re.compile(r"[1-9]\d{3}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.(?!000000)\d{6})?Z")

# Claim ids are UUID v5 of the key under this fixed namespace (never change it).
CLAIM_NAMESPACE = uuid.UUID("6f1c1f0e-4b8a-5c5e-9a3d-2f6c1e0a7b10")

MAX_STATEMENT = 2000
MAX_NAME = 200
MAX_TEXT = 10_000
MAX_URL = 2048
MAX_SUBJECTS = 50
MAX_REPORTED_VIA = 20
MAX_RATING = 200  # a rating's text as published: "False", "Pants on Fire", "Unproven"
MAX_RATING_NUMBER = 1e9  # bounds a rating's numbers far beyond any published scale
MAX_CACHED_REF = 128  # longer than any key, and than an id in its usual forms

Json = dict[str, Any]


@functools.lru_cache(maxsize=65_536)
def claim_id_for_key(key: str) -> uuid.UUID:
    return uuid.uuid5(CLAIM_NAMESPACE, key)


def claim_ids_for_ref(ref: str) -> tuple[uuid.UUID, ...]:
    """The ids of the claims a reference may name, in the order to try them: the reference
    read as a UUID, then the id of the key it spells (a UUID-shaped key too). The first
    that names a claim is the one meant; none at all, and no claim has that id or key."""
    # Worked out once per reference: the same refs come back write after write, and a key
    # read as a UUID raises. Longer refs (no key is) are not kept.
    return _ids_for_ref(ref) if len(ref) <= MAX_CACHED_REF else _ids_for_ref.__wrapped__(ref)


@functools.lru_cache(maxsize=65_536)
def _ids_for_ref(ref: str) -> tuple[uuid.UUID, ...]:
    ids = []
    with contextlib.suppress(ValueError):
        ids.append(uuid.UUID(ref))
    if SLUG.fullmatch(ref):
        ids.append(claim_id_for_key(ref))
    return tuple(ids)


def check_slug(value: object, field: str) -> str:
    if not isinstance(value, str) or not SLUG.fullmatch(value):
        raise InvalidInput(
            f"{field} must be a slug: lowercase letters, digits and '-', starting with a "
            f"letter or digit, 1-120 characters (got {value!r:.80})",
            field,
        )
    return value


def check_text(
    value: object, field: str, *, max_len: int, min_len: int = 0, optional: bool = True
) -> str | None:
    if value is None:
        if optional:
            return None
        raise InvalidInput(f"{field} is required", field)
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field)
    if "\x00" in value:
        raise InvalidInput(f"{field} must not contain NUL characters", field)
    if len(value) > max_len:
        raise InvalidInput(f"{field} is {len(value)} characters; at most {max_len}", field)
    if min_len and (len(value.strip()) < min_len if min_len > 1 else not value or value.isspace()):
        raise InvalidInput(f"{field} must have at least {min_len} non-blank characters", field)
    return value


def key_from_statement(statement: str) -> str:
    """A stable key for a statement registered without one."""
    ascii_text = unicodedata.normalize("NFKD", statement).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:80].strip("-")
    digest = hashlib.sha256(statement.encode()).hexdigest()[:10]
    return f"{words}-{digest}" if words else f"claim-{digest}"


def check_language(value: object) -> str:
    if value is None:
        return "en"
    if not isinstance(value, str) or len(value) > 35 or not LANGUAGE.fullmatch(value):
        raise InvalidInput(
            f"language must be a BCP 47 tag such as 'en' or 'pt-BR' (got {value!r:.40})",
            "language",
        )
    return value


def check_subjects(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InvalidInput("subjects must be a list of strings", "subjects")
    if len(value) > MAX_SUBJECTS:
        raise InvalidInput(f"subjects holds {len(value)} items; at most {MAX_SUBJECTS}", "subjects")
    out: list[str] = []
    for s in value:
        text = check_text(s, "subjects[]", max_len=MAX_NAME, min_len=1, optional=False)
        assert text is not None
        if text not in out:
            out.append(text)
    return out


def check_party(value: object, field: str, *, optional: bool = False) -> Json | None:
    if value is None:
        if optional:
            return None
        raise InvalidInput(f"{field} is required: an object {{\"id\": slug, \"name\": text}}", field)
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidInput(f"{field} must be an object {{\"id\": slug, \"name\": text}}", field)
    if not PARTY_FIELDS.issuperset(value):
        extra = value.keys() - PARTY_FIELDS
        raise InvalidInput(f"{field} has unknown fields {sorted(extra)}; allowed: id, name", field)
    party_id = check_slug(value.get("id"), f"{field}.id")
    name = check_text(value.get("name"), f"{field}.name", max_len=MAX_NAME, min_len=1, optional=False)
    return {"id": party_id, "name": name}


def check_source(value: object, field: str) -> Json | None:
    if value is None:
        return None
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidInput(f"{field} must be an object with url, outlet, title, published_at", field)
    if not SOURCE_FIELDS.issuperset(value):
        extra = value.keys() - SOURCE_FIELDS
        raise InvalidInput(
            f"{field} has unknown fields {sorted(extra)}; allowed: url, outlet, title, published_at",
            field,
        )
    # Absent fields are None, as check_text says; only present ones are checked.
    url = value.get("url")
    if url is not None:
        url = check_text(url, f"{field}.url", max_len=MAX_URL)
        if not ABSOLUTE_URL.match(url):  # type: ignore[arg-type]
            raise InvalidInput(f"{field}.url must be an absolute URL such as https://…", field)
    outlet = value.get("outlet")
    if outlet is not None:
        outlet = check_text(outlet, f"{field}.outlet", max_len=MAX_NAME)
    title = value.get("title")
    if title is not None:
        title = check_text(title, f"{field}.title", max_len=MAX_NAME * 5)
    published = value.get("published_at")
    if published is not None:
        published = check_said_at(published, f"{field}.published_at")
    return {"url": url, "outlet": outlet, "title": title, "published_at": published}


def check_sources(value: object, field: str) -> list[Json]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a list of sources", field)
    if len(value) > MAX_REPORTED_VIA:
        raise InvalidInput(f"{field} holds {len(value)} items; at most {MAX_REPORTED_VIA}", field)
    out = []
    for i, item in enumerate(value):
        source = check_source(item, f"{field}[{i}]")
        if source is None:
            raise InvalidInput(f"{field}[{i}] must be a source object, not null", field)
        out.append(source)
    return out


def check_web_url(value: object, field: str) -> str:
    """An absolute http(s) URL with a host, at most MAX_URL characters."""
    text = check_text(value, field, max_len=MAX_URL, optional=False)
    assert text is not None
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 (reading it checks it: a port must be a number up to 65535)
    except ValueError:  # e.g. an unclosed IPv6 bracket or a port that is not a number
        parts, host = None, None
    if (
        parts is None or parts.scheme.lower() not in WEB_SCHEMES or not host
        or any(c.isspace() for c in text)
    ):
        raise InvalidInput(
            f"{field} must be an absolute http or https URL with a host, such as "
            f"https://www.example.org/fact-check/1 (got {text!r:.80})",
            field,
        )
    return text


def check_rating(value: object, field: str = "rating") -> Json:
    """A review's rating: ``{text, value?, best?, worst?}``.

    ``text`` is the verdict as published (1-200 characters). The numbers place it on the
    reviewer's scale: ``best`` and ``worst`` come together or not at all (a scale has two
    ends, and they differ); ``value`` needs them (a number on an unknown scale says nothing)
    and lies between them, inclusive. Either end may be the larger (some scales count down).
    Only the members given are kept; an integral number is kept as an integer.
    """
    if value is None:
        raise InvalidInput(
            f"{field} is required: an object {{\"text\": the verdict as published, \"value\"?, \"best\"?, "
            "\"worst\"?}",
            field,
        )
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidInput(f"{field} must be an object {{\"text\", \"value\"?, \"best\"?, \"worst\"?}}", field)
    if not RATING_FIELDS.issuperset(value):
        extra = value.keys() - RATING_FIELDS
        raise InvalidInput(f"{field} has unknown fields {sorted(extra)}; allowed: text, value, best, worst", field)
    text = check_text(value.get("text"), f"{field}.text", max_len=MAX_RATING, min_len=1, optional=False)
    rating: Json = {"text": text}
    numbers = {name: _rating_number(value.get(name), f"{field}.{name}") for name in ("value", "best", "worst")}
    best, worst, number = numbers["best"], numbers["worst"], numbers["value"]
    if (best is None) != (worst is None):
        raise InvalidInput(
            f"{field}.best and {field}.worst come together: give both ends of the reviewer's scale, or neither",
            f"{field}.{'worst' if worst is None else 'best'}",
        )
    if best is not None and best == worst:
        raise InvalidInput(f"{field}.best and {field}.worst must differ (both are {best})", f"{field}.best")
    if number is not None:
        if best is None or worst is None:
            raise InvalidInput(
                f"{field}.value needs {field}.best and {field}.worst: a number says nothing without its scale",
                f"{field}.value",
            )
        if not min(best, worst) <= number <= max(best, worst):
            raise InvalidInput(
                f"{field}.value {number} is outside the scale from worst {worst} to best {best}", f"{field}.value"
            )
    for name in ("value", "best", "worst"):
        if numbers[name] is not None:
            rating[name] = numbers[name]
    return rating


def _rating_number(value: object, field: str) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{field} must be a number (got {value!r:.40})", field)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{field} must be a finite number", field)
        if value.is_integer():
            value = int(value)
    if abs(value) > MAX_RATING_NUMBER:
        raise InvalidInput(f"{field} must lie between -{MAX_RATING_NUMBER:,.0f} and {MAX_RATING_NUMBER:,.0f}", field)
    return value


def format_instant(moment: datetime) -> str:
    """RFC 3339 in UTC with a 'Z'; microseconds only when there are some."""
    if moment.tzinfo is UTC and type(moment) is datetime and moment.year >= 1000:
        return moment.isoformat()[:-6] + "Z"  # what _instant_text writes, without its cache lookup
    if moment.tzinfo is None:
        raise InvalidInput("date-times must carry a UTC offset (e.g. 'Z' or '+03:00')")
    return _instant_text(moment)


# Keyed by the instant (equal instants in any zone are one key, with one text): an
# event's time is formatted when it is hashed, and again whenever its body is read.
@functools.lru_cache(maxsize=4096)
def _instant_text(moment: datetime) -> str:
    # isoformat pads the year to four digits (strftime's %Y does not below 1000) and
    # writes microseconds only when there are some.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def parse_instant(value: str, field: str = "time") -> datetime:
    """An RFC 3339 date-time with an offset, as an aware UTC datetime."""
    found = _instant_from_text(value) if isinstance(value, str) else None
    if isinstance(found, datetime):
        return found
    if found is None:
        raise InvalidInput(
            f"{field} must be an RFC 3339 date-time with an offset, e.g. 2015-09-14T18:00:00Z "
            f"(got {value!r:.60})",
            field,
        )
    raise InvalidInput(f"{field} is not a real date-time: {found}", field)


# Keyed by the text alone: the same instants are read again and again under different
# field names (a fixture's recorded_at, then the claim's last event), and an import
# checks a chunk of 2,000 lines (up to four instants each) before it folds them.
@functools.lru_cache(maxsize=16_384)
def _instant_from_text(value: str) -> datetime | str | None:
    """The instant; None when the text is not shaped like one; why, when it is not a real one."""
    if UTC_DATE_TIME.fullmatch(value):  # the common shape: read as it is
        try:
            return datetime.fromisoformat(value)
        except ValueError:  # the general path says why
            pass
    if not DATE_TIME.fullmatch(value):
        return None
    text = value.replace("z", "Z").replace("t", "T").replace(" ", "T")
    if "." in text:  # Python keeps microseconds only: cut extra digits.
        head, rest = text.split(".", 1)
        digits = re.match(r"\d+", rest)
        assert digits is not None
        text = head + "." + digits.group()[:6].ljust(6, "0") + rest[digits.end():]
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError as e:
        return str(e)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00, which is in the year 10000 in UTC
        return "it falls outside the years 1 to 9999 once converted to UTC"


def check_said_at(value: object, field: str = "said_at") -> str | None:
    """A date ('2015-09-14') or an RFC 3339 date-time, normalised; None when unknown."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a date or an RFC 3339 date-time string", field)
    size = len(value)  # what the patterns below can match: 20 or 27, and 10 characters
    if (  # already normal, if it is a real instant
        (size == 20 or size == 27) and NORMAL_DATE_TIME.fullmatch(value)
        and isinstance(_instant_from_text(value), datetime)
    ):
        return value
    if size == 10 and DATE_ONLY.fullmatch(value):
        try:
            return _date_text(value)
        except ValueError as e:
            raise InvalidInput(f"{field} is not a real date: {e}", field) from None
    return format_instant(parse_instant(value, field))


@functools.lru_cache(maxsize=4096)
def _date_text(value: str) -> str:
    """A DATE_ONLY text, normalised (sources' publication days recur from act to act)."""
    return date.fromisoformat(value).isoformat()


@functools.lru_cache(maxsize=65_536)
def instant_of(said_or_recorded: str, *, end_of_day: bool = False) -> datetime:
    """The moment a normalised time string stands for on the time axis.

    A date-only value counts from the start of its day (the act was said on that
    day), or up to its end when used as an "as of" bound.
    """
    if DATE_ONLY.fullmatch(said_or_recorded):
        day = date.fromisoformat(said_or_recorded)
        return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
    return parse_instant(said_or_recorded)


def parse_as_of(value: str, field: str) -> datetime:
    """A time-travel bound: a date means the end of that day (UTC)."""
    normalised = check_said_at(value, field)
    assert normalised is not None
    return instant_of(normalised, end_of_day=True)
