"""Servers started by a test are killed when it ends, whatever happened."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.server import LedgerServer

StartServer = Callable[..., LedgerServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """start_server(url, *args, **fields): a running `claims serve --port P *args` on `url`."""
    started: list[LedgerServer] = []

    def start(database_url: str, *args: str, **fields: Any) -> LedgerServer:
        server = LedgerServer(database_url, tmp_path, args, **fields)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.kill()
        print(f"--- {server.log} (shown when the test fails) ---\n{server.logs()[-6000:]}")
