"""`coopctl demo`: play the scripted orders shipped with the package (coopctl/data/demo_orders.toml)
into a fresh database, then tick."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from coopctl import service
from coopctl.errors import InvalidInput, StorageError
from coopctl.lifecycle import Action, Order, Party
from coopctl.policy import InvalidValue, Policy, ReminderOffsets, parse_duration
from coopctl.service import Service

SCRIPT_NAME = "demo_orders.toml"
MADE_BY = "demo"

_ACTIONS = {
    "accept": Action.ACCEPT, "reject": Action.REJECT, "withdraw": Action.WITHDRAW,
    "cancel-request": Action.CANCEL_REQUEST, "cancel-confirm": Action.CANCEL_CONFIRM,
    "cancel-decline": Action.CANCEL_DECLINE, "go-live": Action.GO_LIVE, "deliver": Action.DELIVER,
    "review-pass": Action.REVIEW_PASS, "review-fail": Action.REVIEW_FAIL,
    "cancel-withdraw": Action.CANCEL_WITHDRAW, "extend-request": Action.EXTEND_REQUEST,
    "extend-confirm": Action.EXTEND_CONFIRM, "extend-decline": Action.EXTEND_DECLINE,
    "complain": Action.COMPLAIN, "arbitrate": Action.ARBITRATE, "appeal": Action.APPEAL,
}


def script_text() -> str:
    """The demo's script, read from the package (installed or a checkout alike: package data)."""
    from importlib.resources import files

    try:
        return files("coopctl").joinpath("data", SCRIPT_NAME).read_text(encoding="utf-8")
    except OSError as exc:  # a broken installation
        raise StorageError(f"cannot read the demo script coopctl/data/{SCRIPT_NAME} ({exc.strerror or exc}); reinstall coopctl") from None


def offset(text: str, now: int) -> int:
    """'-10d' or '+2d12h' relative to `now`."""
    sign = -1 if text.startswith("-") else 1
    try:
        return now + sign * parse_duration(text.lstrip("+-"))
    except InvalidValue as exc:
        raise InvalidInput(f"{SCRIPT_NAME}: {exc}") from None


def _fresh(svc: Service) -> None:
    """Start from an empty database; never touch one that the demo did not create."""
    store = svc.store
    if store.exists():
        path = store.location.path
        if path is not None and path.stat().st_size == 0:
            path.unlink()
        else:
            with store.read() as tx:
                state = tx.schema_state()
                made_by = tx.meta().get("made_by") if state == "coopctl" else None
            if state == "empty" and path is None:  # a new, empty server database (PostgreSQL)
                store.initialise(made_by=MADE_BY)
                return
            if made_by != MADE_BY:
                raise StorageError(
                    f"{store.location.display} exists and was not created by `coopctl demo`; "
                    "refusing to touch it (give another --db)"
                )
            store.dispose()
            if path is not None:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(str(path) + suffix).unlink(missing_ok=True)
            else:
                from coopctl.models import SQLModel

                SQLModel.metadata.drop_all(store.engine)
    store.initialise(made_by=MADE_BY)


def run_demo(svc: Service, *, now: int) -> list[Order]:
    """Build the demo database; returns every order after the final tick."""
    script = tomllib.loads(script_text())
    # The script's timings assume the default windows, whatever the local configuration says.
    svc = replace(svc, settings=replace(svc.settings, policy=Policy(), reminders=ReminderOffsets()))
    _fresh(svc)
    expected: dict[int, str] = {}
    for entry in script["orders"]:
        order, _ = service.create_order(
            svc,
            merchant=entry["merchant"], creator=entry["creator"], products=entry["products"],
            form=entry["form"], commission=entry["commission"], ad_budget=entry["ad_budget"],
            latest_start_at=offset(entry["latest_start"], now), note=entry.get("note"),
            at=offset(entry["created"], now),
        )
        for step in entry.get("steps", []):
            party = None if step["party"] == "platform" else Party(step["party"])  # the platform rules
            values = {key: step[key] for key in ("ruling", "amount") if key in step}
            if "latest_start" in step:  # an extension's proposal
                values["proposal"] = offset(step["latest_start"], now)
            service.perform(
                svc, order.id, _ACTIONS[step["action"]], party, None if party is None else order.party_id(party),
                offset(step["at"], now), reason=step.get("reason"), evidence=step.get("evidence"), **values,
            )
        expected[order.id] = entry["expect"]
    service.tick(svc, now)
    orders = service.list_orders(svc)
    for order in orders:
        if str(order.status) != expected[order.id]:
            raise StorageError(f"demo order {order.id} ended {order.status}, expected {expected[order.id]}")
    return orders
