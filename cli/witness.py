"""`claims witness serve|key`: run a C2SP tlog-witness for any log, this ledger's or another's.

The witness's key is an Ed25519 key in a PEM file, made (mode 0600) on first use exactly as
the ledger's own signing key is (audit/signing.py). Its name and public key make its
verifier key, which `key` prints: logs and auditors configure the witness by that line.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Annotated

import typer

from audit.signing import SigningKeyError, load_or_create_key, public_bytes
from cli.main import app, exit_on_errors
from domain.errors import InvalidInput
from domain.note import COSIGNATURE_V1, NoteError, Signer, Verifier, check_key_name

witness_app = typer.Typer(help="A transparency-log witness (C2SP tlog-witness).", no_args_is_help=True)
app.add_typer(witness_app, name="witness")

KeyOption = Annotated[Path, typer.Option(help="The witness's Ed25519 key (PEM); made, mode 0600, when absent.")]
NameOption = Annotated[str | None, typer.Option(
    help="The witness's name, part of its verifier key (no spaces, no '+'). Default: "
    "claims-witness/<the first 8 hex digits of SHA-256 of its public key>, the same for the same key.",
    show_default=False,
)]


def default_name(public_key: bytes) -> str:
    """The name of a witness whose operator gave none: the same for the same key."""
    return f"claims-witness/{hashlib.sha256(public_key).hexdigest()[:8]}"


def witness_signer(key_file: Path, name: str | None) -> Signer:
    """The witness's cosigner: its key (made when absent) under its name."""
    if not key_file.exists():
        typer.echo(f"no witness key yet: making one at {key_file}", err=True)
    try:
        key = load_or_create_key(key_file)
    except SigningKeyError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    with exit_on_errors():
        return Signer(check_key_name(name) if name is not None else default_name(public_bytes(key)), key,
                      COSIGNATURE_V1)


def log_keys(texts: list[str]) -> list[Verifier]:
    """The logs' verifier keys given on the command line, each checked."""
    keys = []
    for text in texts:
        try:
            keys.append(Verifier.parse(text.strip()))
        except NoteError as e:
            raise InvalidInput(f"--log {text!r:.120}: {e}") from None
    return keys


@witness_app.command("key")
def key(key: KeyOption, name: NameOption = None) -> None:
    """Print the witness's verifier key (<name>+<key id>+<base64 key>), for logs and auditors to configure."""
    typer.echo(str(witness_signer(key, name).verifier))


@witness_app.command("serve")
def serve(
    key: KeyOption,
    log: Annotated[list[str], typer.Option(
        help="A log to witness, by its verifier key (<origin>+<key id>+<base64 key>; for a claims ledger, the "
        "`verifier key` line of `claims audit-key`); repeat for more logs, or for a log's next key.",
    )],
    name: NameOption = None,
    state: Annotated[Path | None, typer.Option(
        help="The SQLite file of what the witness cosigned. Default: witness-state.db beside the key.",
        show_default=False,
    )] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8300,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve POST /add-checkpoint: cosign each log's checkpoints that are consistent with the last."""
    import uvicorn

    from witness.app import Witness, create_witness_app
    from witness.state import WitnessState

    with exit_on_errors():
        logs = log_keys(log)
    signer = witness_signer(key, name)
    state_file = state if state is not None else key.parent / "witness-state.db"
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    witness = Witness(signer, logs, WitnessState(state_file))
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"witness {signer.verifier} serving http://{shown}:{port} (state: {state_file})")
    for verifier in logs:
        typer.echo(f"  follows {verifier.name}")
    uvicorn.run(create_witness_app(witness), host=host, port=port, log_level=log_level)
