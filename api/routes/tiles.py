"""The C2SP tlog-tiles read API (docs/auditing.md#tiles-c2sp-tlog-tiles): the Merkle log as tiles.

    GET /tile/<L>/<N>[.p/<W>]      hash tiles: 256 (or W) hashes of tree level 8·L, 32 bytes each
    GET /tile/entries/<N>[.p/<W>]  entry bundles: each event's 32-byte hash, uint16-length framed

`<N>` is written in 3-digit groups, all but the last prefixed with "x" (1234067 is
`x001/x234/067`), exactly as Go's golang.org/x/mod/sumdb/tlog writes tile paths (without the
height element, which C2SP fixes at 8). The bytes come from the projections' stored Merkle log
(`projections.merkle.MerkleLog.tile` / `entries`), never recomputed: a full tile is one stored
row, a partial one a range of stored hashes. A path that is not the canonical spelling of a
tile is a 400 problem saying how to write it (422 past 64 characters, longer than any tile's);
a tile the log has not reached (yet) a 404. Tiles carry hashes only, so they are open to all,
whatever LEDGER_READ_TOKENS_REQUIRED says (docs/auditing.md#access-to-checkpoints-and-tiles).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam

from api.problems import Problem, problem_responses
from api.routes.deps import Services, ServicesDep, services, services_of
from api.routes.fast import fast_path
from projections.merkle import MAX_TILE_LEVEL, TILE_WIDTH, tile_data

router = APIRouter(tags=["audit"])

MEDIA_TYPE = "application/octet-stream"
# A tile of a given width never changes (the log only grows, and a partial tile is the first W
# hashes of the full one): every tile and bundle the log serves is cached as immutable.
IMMUTABLE = "public, max-age=31536000, immutable"
NOT_YET = "no-store"  # a 404 for a tile the log has not reached: it may exist a moment later

# The longest tile path: level 63, N near 2^63 (seven groups), width 255, is 42 characters.
MAX_PATH = 64
_GROUP = re.compile(r"x[0-9]{3}")
_LAST = re.compile(r"[0-9]{3}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class TileRef(NamedTuple):
    """A tile: `level` None for an entry bundle; `width` 256 for a full tile."""

    level: int | None
    number: int  # N
    width: int = TILE_WIDTH


def tile_path(tile: TileRef) -> str:
    """The tile's canonical path, e.g. ``/tile/0/x001/x234/067.p/5``."""
    n, groups = tile.number, [f"{tile.number % 1000:03d}"]
    while n >= 1000:
        n //= 1000
        groups.insert(0, f"x{n % 1000:03d}")
    level = "entries" if tile.level is None else str(tile.level)
    partial = "" if tile.width == TILE_WIDTH else f".p/{tile.width}"
    return f"/tile/{level}/{'/'.join(groups)}{partial}"


def _invalid(path: str, why: str, meant: TileRef | None = None) -> Problem:
    hint = f" (did you mean {tile_path(meant)}?)" if meant is not None else ""
    return Problem(
        400, f"/tile/{path} is not a tile path: {why}{hint}. Tiles are /tile/<L>/<N>[.p/<W>] and "
        "/tile/entries/<N>[.p/<W>] (C2SP tlog-tiles)",
        code="invalid-tile-path", title="Invalid tile path",
    )


def parse_tile_path(path: str) -> TileRef:
    """The tile named by what follows ``/tile/``; a 400 Problem naming the fault otherwise."""
    parts = path.split("/")
    if len(parts) < 2 or not parts[0]:
        raise _invalid(path, "it needs a level (0..63, or 'entries') and an index N")
    head, groups = parts[0], parts[1:]
    level: int | None = None
    if head != "entries":
        if not _DECIMAL.fullmatch(head):
            raise _invalid(path, f"the level {head!r} is not 'entries' or a decimal 0..{MAX_TILE_LEVEL} "
                                 "without leading zeros")
        level = int(head)
        if level > MAX_TILE_LEVEL:
            raise _invalid(path, f"the level {level} is above {MAX_TILE_LEVEL}, the highest a tile can have")
    width = TILE_WIDTH
    if len(groups) >= 2 and groups[-2].endswith(".p"):
        given = groups[-1]
        if not _DECIMAL.fullmatch(given) or not 1 <= int(given) < TILE_WIDTH:
            raise _invalid(path, f"the width W of a partial tile is 1..{TILE_WIDTH - 1} without leading zeros "
                                 f"(got {given!r}); a full tile has no .p/ suffix")
        width = int(given)
        groups = [*groups[:-2], groups[-2][:-2]]
    if all(_GROUP.fullmatch(g) for g in groups[:-1]) and _LAST.fullmatch(groups[-1]):
        index = 0
        for group in groups:
            index = index * 1000 + int(group.removeprefix("x"))
        found = TileRef(level, index, width)
        if tile_path(found) == f"/tile/{path}":
            return found
        raise _invalid(path, "the index N has a leading group of zeros", found)
    raise _invalid(path, "the index N is written in 3-digit groups, zero-padded, all but the last prefixed "
                         "with 'x' (1234067 is x001/x234/067)", _meant(level, groups, width))


def _meant(level: int | None, groups: list[str], width: int) -> TileRef | None:
    """The tile a malformed index plainly names, if any: one run of digits (``1234067``), or
    3-digit groups missing their "x" (``001/234/067``)."""
    digits = [g.removeprefix("x") for g in groups]
    if len(digits) == 1 and digits[0].isascii() and digits[0].isdigit():
        return TileRef(level, int(digits[0]), width)
    if len(digits) > 1 and all(_LAST.fullmatch(d) for d in digits):
        return TileRef(level, int("".join(digits)), width)
    return None


def tile_bytes(svc: Services, path: str) -> bytes:
    """The bytes of the tile at ``/tile/<path>``, from the stored log in one read snapshot."""
    tile = parse_tile_path(path)
    merkle = svc.runtime.engine.merkle
    with svc.runtime.store.reading() as cur:
        if tile.level is None:
            data = merkle.entries(cur, tile.number, tile.width)
        else:
            data = merkle.tile(cur, tile.level, tile.number, tile.width)
        if data is None:
            size = merkle.size(cur)
    if data is None:
        raise _not_yet(tile, size)
    return data


def _not_yet(tile: TileRef, size: int) -> Problem:
    level = 0 if tile.level is None else tile.level
    what = "entry bundle" if tile.level is None else "tile"
    span = TILE_WIDTH ** level  # leaves under each hash of the tile
    needed = (tile.number * TILE_WIDTH + tile.width) * span
    return Problem(
        404, f"the log holds {size} leaves; {what} {tile_path(tile)} exists once it holds {needed} "
        f"(the current tree's partial tile at this level has width {(size // span) % TILE_WIDTH}; "
        "read the tree size from /checkpoint)",
        code="tile-not-found", title="Tile not found", headers={"Cache-Control": NOT_YET},
    )


def tile_response(data: bytes) -> Response:
    return Response(data, media_type=MEDIA_TYPE, headers={"Cache-Control": IMMUTABLE})


async def fast_tile(request: Request) -> Response | None:
    """The fast lane's handler (routes/fast.py) for hash tiles: a full tile's stored row, or a
    partial tile's range of hashes, read with one statement on the event loop
    (api/lookups.py) instead of in a worker thread. Anything else goes on to the route, which
    answers it in one read snapshot in a thread: a bad path, a tile the log does not hold, and
    entry bundles (256 history rows, too long a read for the loop)."""
    path = request.path_params["tile"]
    if len(path) > MAX_PATH:
        return None
    tile = parse_tile_path(path)
    if tile.level is None:
        return None
    svc = services_of(request)
    reads = svc.runtime.engine.merkle.tile_reads(tile.level, tile.number, tile.width)
    if not reads:
        return None
    data = tile_data(reads[0], await svc.lookups.rows(reads[0].sql, reads[0].params))
    return None if data is None else tile_response(data)


@router.get(
    "/tile/{tile:path}",
    summary="A C2SP tlog-tiles hash tile or entry bundle (open to all)",
    response_class=Response,
    responses={
        200: {"content": {MEDIA_TYPE: {}}, "description": "The tile's bytes; immutable."},
        **problem_responses(400, 404, 422, 503),
    },
)
@fast_path(fast_tile, path=["tile"], dependencies=[services])
def get_tile(
    svc: ServicesDep,
    tile: str = PathParam(
        max_length=MAX_PATH,
        description="<L>/<N>[.p/<W>] or entries/<N>[.p/<W>], N in x-prefixed 3-digit groups (at most 64 characters).",
    ),
) -> Any:
    return tile_response(tile_bytes(svc, tile))
