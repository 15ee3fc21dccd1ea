"""Sealed histories: keygen, seal, verify (SPEC section 6)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from coopctl.cli.moving import ExportFileArg, verified
from coopctl.cli.base import (
    JsonOpt,
    command,
    emit_json,
    instant,
    report,
    runtime,
)


@command()
def keygen(
    ctx: typer.Context,
    out: Annotated[str, typer.Option("--out", help="The file to write the new private key to (PEM, mode 0600); never overwritten.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Make an Ed25519 signing key for `seal`; print its public key (publish that one).

    Example: coopctl keygen --out /srv/coop/seal.key    (then [evidence] signing_key = "seal.key")
    """
    from coopctl.seal import keygen as make_key

    public = make_key(out)
    if as_json:
        emit_json({"file": out, "public_key": public})
    else:
        sys.stdout.write(public + "\n")


@command()
def seal(
    ctx: typer.Context,
    now: Annotated[Optional[str], typer.Option("--now", help="The instant the tree head is signed at [default: now].", show_default=False)] = None,
    check: Annotated[bool, typer.Option("--check", help="Recompute the log from the stored events and check every stored tree head; writes nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add every event not yet sealed to the log and sign its tree head; cron runs it after tick.

    Exit 2 without a signing key ([evidence] signing_key or COOPCTL_SIGNING_KEY). With --check:
    exit 1 naming the first tree head that no longer matches the events (history rewritten).

    Example (crontab): * * * * * coopctl tick --json >> tick.log && coopctl seal --json >> seal.log
    """
    from coopctl.seal import check_seal, seal_log
    from coopctl.trust import shown

    rt = runtime(ctx)
    if check:
        from coopctl.errors import Refused

        result = check_seal(rt.service)
        if as_json:
            emit_json(result.to_json())
        elif result.problem is None:
            sys.stdout.write(f"ok: {result.heads} tree heads match the {result.size} sealed events\n")
        if result.problem is not None:
            raise Refused(f"{result.problem}; restore the database from a backup, and keep this one for inspection")
        return
    at = instant(now, rt, "--now")

    @report
    def done(result) -> None:
        if as_json:
            emit_json(result.to_json())
        else:
            h = result.head
            what = f"{result.added} new" if result.added else "nothing new: the last tree head"
            sys.stdout.write(shown(f"sealed {h.size} events ({what}) at {h.to_json()['sealed_at']}: root {h.root}") + "\n")

    seal_log(rt.service, at, rt.settings.signing_key_path, report=done)


@command()
def verify(
    ctx: typer.Context,
    file: ExportFileArg,
    public_key: Annotated[str, typer.Option("--public-key", help="The platform's public key: a file holding its base64, or the base64 itself.", show_default=False)],
    require_sealed: Annotated[bool, typer.Option("--require-sealed", help="Exit 1 unless every event of every order is sealed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check an export offline: hash chains, the tree head's signature, each order's inclusion proof.

    Exit 0 when all hold (printing up to which seq each order is sealed), 1 naming the tree head
    or the order and seq that fails, 2 when the file is not a coopctl export. Opens no database.

    Example: coopctl verify dispute-7.json --public-key coop.pub
    """
    from coopctl.seal import check_verification, parse_public_key, verify_lines
    from coopctl.trust import shown

    key = parse_public_key(public_key)
    result = verified(file, key)
    if as_json:
        emit_json(result.to_json())
    else:
        sys.stdout.write("".join(shown(line) + "\n" for line in verify_lines(result)))
    check_verification(result, require_sealed=require_sealed)
