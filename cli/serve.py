"""`claims serve` (the whole ledger from one command) and `claims project` (the engine alone).

One process by default: uvicorn with the API and the projection engine thread. With
`--workers N`: N API worker processes sharing one listening socket, plus one projection
process; all are stopped together on SIGINT/SIGTERM, and when one dies the rest are
stopped too (a supervisor restarts the whole set, not a part of it).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Annotated

import typer

from cli.main import app, exit_on_errors
from domain.errors import StoreUnavailable
from store.settings import Database

log = logging.getLogger("claims.serve")

STOP_TIMEOUT_SECONDS = 15.0

# The cyclic garbage collector's thresholds in a serving process (Python's are 700, 10, 10).
# A writer caches claims and the engine their folds: objects that live on. With Python's
# thresholds, while those caches filled a full collection ran every few seconds and walked
# them all, and those pauses were the p99 write latency (docs/performance.md has the runs).
# Garbage without cycles is freed at once either way.
GC_THRESHOLDS = (20_000, 10, 100)

# How long a thread that wants the interpreter lock waits before it asks the running one to
# let go (Python's default: 5 ms). The group writer shares its process with the event loop,
# and comes back from each round trip to the database wanting the lock while the loop runs
# Python: each such wait stretched the serial commit cycle every request waits for. 0.5 ms
# beat 5, 1 and 0.2 ms in alternating runs (docs/performance.md).
SWITCH_INTERVAL_SECONDS = 0.0005


def tune_gc() -> None:
    """Collect once, freeze what the start made (modules, the app: never garbage, never
    walked again), and collect less often from now on; hand the interpreter lock between
    threads sooner (SWITCH_INTERVAL_SECONDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def _database() -> Database:
    with exit_on_errors():
        return Database.from_url()


def _announce(database: Database, host: str, port: int, workers: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    where = database.path if database.backend == "sqlite" else f"{database.host}/{database.dbname} schema {database.schema}"
    typer.echo(f"claims ledger ({database.backend}: {where}) serving http://{shown}:{port}  (API docs: /docs)")
    typer.echo(
        f"  {workers} API worker process(es) + 1 projection process" if workers > 1
        else "  one process: API and projection engine"
    )
    typer.echo("  make a token for writes:  claims token create --role recorder", nl=True)
    sys.stdout.flush()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="API worker processes (plus one projection process when > 1).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the HTTP API and run the projections, on LEDGER_DATABASE_URL."""
    database = _database()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if workers == 1:
        import uvicorn

        from web.app import create_app  # the API and the web pages

        _announce(database, host, port, workers)
        _exit_cleanly_on_signals()
        api = create_app()
        tune_gc()
        uvicorn.run(api, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
        return
    raise typer.Exit(supervise(database, host, port, workers, log_level))


@app.command()
def project() -> None:
    """Run the projection engine: follow the event log into the read models until interrupted."""
    _database()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise typer.Exit(run_projections())


def run_projections() -> int:
    """Follow the log until SIGINT/SIGTERM; 0 when stopped, 1 when the database cannot be opened."""
    from service.runtime import Runtime

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        runtime = Runtime.open()
    except (StoreUnavailable, OSError) as e:
        typer.echo(f"error: cannot open the ledger: {e}", err=True)
        return 1
    try:
        typer.echo(f"projecting from position {runtime.engine.position()}; Ctrl-C stops", err=True)
        tune_gc()
        runtime.engine.run(stop)
    finally:
        runtime.close()
    return 0


def _exit_cleanly_on_signals() -> None:
    """Until uvicorn takes over SIGINT/SIGTERM, they end the process at once; after its graceful
    shutdown uvicorn re-raises the signal to this handler, so the process ends with status 0."""

    def exit_cleanly(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGINT, exit_cleanly)
    signal.signal(signal.SIGTERM, exit_cleanly)


def _api_worker(sock: socket.socket, log_level: str, writer_socket: str, hosts_writer: bool) -> None:
    import uvicorn

    from web.app import worker_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _exit_cleanly_on_signals()
    config = uvicorn.Config(
        worker_app(writer_socket, hosts_writer), log_level=log_level, timeout_graceful_shutdown=10
    )
    tune_gc()
    uvicorn.Server(config).run(sockets=[sock])


def _projection_worker() -> None:
    sys.exit(run_projections())


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def prepare_database() -> None:
    """Make every table once, before the processes that share them start: on PostgreSQL,
    CREATE TABLE IF NOT EXISTS run by several processes at the same moment can fail."""
    from service.runtime import Runtime
    from service.witnessing import CosignatureTable
    from store.idempotency import IdempotencyStore
    from store.tokens import TokenStore

    runtime = Runtime.open(pool_size=1)
    try:
        TokenStore(runtime.store).ensure_table()
        IdempotencyStore(runtime.store).ensure_table()
        CosignatureTable(runtime.store).ensure_table()
    finally:
        runtime.close()


def supervise(database: Database, host: str, port: int, workers: int, log_level: str) -> int:
    """Run N API workers and one projection process; stop them all together."""
    try:
        prepare_database()
    except (StoreUnavailable, OSError) as e:
        typer.echo(f"error: cannot open the ledger: {e}", err=True)
        return 1
    try:
        sock = _listen(host, port)
    except OSError as e:
        typer.echo(f"error: cannot listen on {host}:{port}: {e}", err=True)
        return 1
    # Workers share their metrics through files, so any worker's /metrics reports them all.
    metrics_dir = tempfile.mkdtemp(prefix="claims-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Worker 1 serves its group writer to the others on a socket only this user can open
    # (mkdtemp makes the directory 0700): see service/forward.py.
    writer_dir = tempfile.mkdtemp(prefix="claims-writer-")
    writer_socket = os.path.join(writer_dir, "writer.sock")
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_projection_worker, name="projections")]
    children += [
        context.Process(target=_api_worker, args=(sock, log_level, writer_socket, i == 0), name=f"api-{i + 1}")
        for i in range(workers)
    ]
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    _announce(database, host, sock.getsockname()[1], workers)
    status = 0
    try:
        for child in children:
            child.start()
        while not stopping.is_set():
            ended = multiprocessing.connection.wait([c.sentinel for c in children], timeout=0.5)
            if ended:
                dead = [c for c in children if c.sentinel in ended]
                for child in dead:
                    child.join(1)
                typer.echo(
                    "stopping everything: " + ", ".join(f"{c.name} exited ({c.exitcode})" for c in dead), err=True
                )
                status = 1
                break
    finally:
        _stop_all(children)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(writer_dir, ignore_errors=True)
    return status


def _stop_all(children: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for child in children:
        if child.is_alive():
            child.terminate()  # SIGTERM: uvicorn finishes its requests, the engine its batch
    for child in children:
        if child.pid is not None:
            child.join(STOP_TIMEOUT_SECONDS)
        if child.is_alive():
            typer.echo(f"{child.name} did not stop in {STOP_TIMEOUT_SECONDS:g} s; killing it", err=True)
            child.kill()
            child.join()
