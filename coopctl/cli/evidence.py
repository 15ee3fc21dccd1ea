"""Evidence files: `coopctl evidence ORDER` lists them, `--get SHA256 --out FILE` writes one out
(SPEC section 1, "Evidence files"). Attaching them is `--evidence-file` on the actions."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from coopctl.cli.base import (
    FormatOpt,
    JsonOpt,
    OrderArg,
    WideOpt,
    command,
    emit_json,
    output_format,
    runtime,
)


@command()
def evidence(
    ctx: typer.Context,
    order: OrderArg,
    get: Annotated[Optional[str], typer.Option("--get", metavar="SHA256", help="Write out the file with this SHA-256 (or a unique prefix of 8+ hex digits); needs --out.", show_default=False)] = None,
    out: Annotated[Optional[str], typer.Option("--out", metavar="FILE", help="Where --get writes the file (atomically, mode 0600).", show_default=False)] = None,
    fmt: FormatOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List an order's evidence files (event, name, size, SHA-256, held here or not), or write one out.

    Exit 3 for a SHA-256 the order does not name, 1 for a file recorded but not held here (it came
    in through an export without --with-evidence).

    Example: coopctl evidence 12      coopctl evidence 12 --get 3f2a9c0d1e4b5a67 --out proof.png
    """
    from coopctl import render
    from coopctl.errors import InvalidInput
    from coopctl.service import evidence_content, evidence_of_order

    rt = runtime(ctx)
    if get is None:
        if out is not None:
            raise InvalidInput("--out goes with --get SHA256 (which file to write out)")
        fmt = output_format(fmt, as_json)
        rows, checked = evidence_of_order(rt.service, order)  # the chain and the row, checked as they are read
        render.evidence_list((render.evidence_json(order, e, f, held, rt.tz) for e, f, held in rows), rt.tz, wide=wide, fmt=fmt)
        refusal = checked.refusal()
        if refusal is not None:  # printed what the events say, then: they are not what was recorded (exit 1)
            sys.stdout.flush()
            raise refusal
        return
    if out is None:
        raise InvalidInput("--get needs --out FILE (where to write it; --out /dev/stdout to pipe it)")
    if out == "":
        raise InvalidInput("--out is empty; give a file name")
    if fmt is not None:
        raise InvalidInput("--format goes with the list, not with --get")
    file, content = evidence_content(rt.service, order, get)
    from coopctl.exchange import _in_place, atomic_file

    to_stream = _in_place(out)  # a FIFO or /dev/stdout: written in place, nothing else said on stdout
    with atomic_file(out) as handle:
        handle.flush()
        handle.buffer.write(content)
    if to_stream:
        return
    if as_json:
        emit_json({"order": order, "file": out, **file.to_json()})
    else:
        render.evidence_written(out, file, order)
