"""The operations views: board and config (SPEC section 4)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from coopctl.cli.base import (
    Globals,
    JsonOpt,
    command,
    emit_json,
    instant,
    runtime,
)


@command()
def board(
    ctx: typer.Context,
    now: Annotated[Optional[str], typer.Option("--now", help="The instant the board is drawn for [default: now].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """The operations overview: orders by status and terms, what is overdue, what falls due in the
    next hour, day and week, disputes, the outbox, and the last tick. Only reads indexes.

    Example: coopctl board      coopctl board --json | jq .overdue
    """
    from coopctl import views

    rt = runtime(ctx)
    result = views.board(rt.service, instant(now, rt, "--now"))
    if as_json:
        emit_json(result.to_json(rt.tz))
    else:
        from coopctl.render_views import board_table

        board_table(result, rt.tz)


@command("config")
def config_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The settings in effect and where each came from (default, the file, env COOPCTL_…, option).
    Secrets are never printed: only whether they are set (a key file: its path).

    Example: coopctl config      coopctl --config prod.toml config --json
    """
    from pathlib import Path

    from coopctl import views
    from coopctl.config import DEFAULT_CONFIG

    rt = runtime(ctx)
    root = ctx.find_root()
    g: Globals = root.obj or Globals(None, None, None)
    explicit = g.config is not None and g.config != ""
    config_file = g.config if explicit else (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
    if g.db is not None:
        db_origin = _origin(root, "db", "COOPCTL_DB")
    elif rt.settings.db_url and not rt.db_from_default:
        db_origin = config_file
    else:
        db_origin = "default"
    origins = views.Origins(
        config_file=config_file,
        config_origin=_origin(root, "config", "COOPCTL_CONFIG") if explicit else "default",
        db=rt.service.store.location.display,
        db_origin=db_origin,
        operator=rt.service.operator,
        operator_origin=_origin(root, "operator", "COOPCTL_OPERATOR") if g.operator is not None else "default",
        file_keys=views.file_keys(config_file),
    )
    entries = views.settings_view(rt.settings, origins)
    if as_json:
        emit_json(views.settings_json(entries))
    else:
        from coopctl.render_views import config_table

        config_table(entries)


def _origin(root: typer.Context, name: str, variable: str) -> str:
    """'option' or 'env VARIABLE': how a root option got its value (the parser tells; by the name
    of its ParameterSource, which Typer may take from a click of its own)."""
    source = root.get_parameter_source(name)
    return f"env {variable}" if getattr(source, "name", None) == "ENVIRONMENT" else "option"
