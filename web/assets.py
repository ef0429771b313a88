"""The pages' static files (CSS, scripts), held in memory under one versioned URL prefix.

    /static/<version>/<name>

`version` is a digest of every file's bytes, so a changed file gets a new URL and the old
one may be cached for good (`Cache-Control: immutable`); an old version's URL answers 404.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str


@dataclass(frozen=True)
class Assets:
    version: str
    files: dict[str, Asset]

    @classmethod
    def load(cls, directory: Path = STATIC_DIR) -> Assets:
        files = {}
        digest = hashlib.sha256()
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            body = path.read_bytes()
            digest.update(path.name.encode() + b"\0" + body)
            media = MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            files[path.name] = Asset(body, media)
        return cls(digest.hexdigest()[:12], files)

    def url(self, name: str) -> str:
        if name not in self.files:
            raise KeyError(f"no static file {name!r} in {STATIC_DIR}")
        return f"/static/{self.version}/{name}"

    def get(self, version: str, name: str) -> Asset | None:
        return self.files.get(name) if version == self.version else None


ASSETS = Assets.load()
