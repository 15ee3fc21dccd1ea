"""Sealing on the 1,000,000-order book (SPEC section 6; issue 15's speed targets). Run by hand:

    python bench/seal.py [--source bench/out/tick-1000000-100000.db (the default)] [--rounds 3] [--json]

On a COPY of the book that `bench/tick.py` builds (schema 2: the copy is upgraded first, the
source is only read), each as a separate `coopctl` process:

1. the upgrade to schema 3 (any command: `list --limit 1`);
2. the first `seal` of every event: wall time and peak RSS (targets: < 60 s, < 256 MB);
3. `export 1` of a sealed order against `python -c "import sqlmodel"` (target: within 1.25x),
   medians over --rounds;
4. `tick --now T` applying the book's 100,000 due transitions, then the next `seal`
   (target: < 3 s), a seal with nothing new, and `seal --check` (a pass over the log);
5. unless --no-export-all: `export --all` of the sealed copy against an unsealed twin (the
   same copy, upgraded, never sealed), to a file under bench/out deleted afterwards (target: at
   most 15% slower; each takes minutes on this book).

The machine is shared: figures drift by tens of percent between runs; compare ratios measured
in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from tick import NOW, coopctl_argv, fresh_copy, timed  # noqa: E402

from coopctl.policy import iso  # noqa: E402
from timing import compiled  # noqa: E402

DEFAULT_SOURCE = HERE / "out" / "tick-1000000-100000.db"  # bench/tick.py builds it


def run(source: Path, rounds: int, export_all: bool, say=print) -> dict:
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="seal-", dir=out))
    db = fresh_copy(source, work, "book.db")
    key = work / "seal.key"
    env = {**os.environ, "COOPCTL_DB": str(db), "COOPCTL_SIGNING_KEY": str(key), "COOPCTL_OPERATOR": "bench"}
    cli = coopctl_argv()
    figures: dict = {"source": str(source)}

    def note(**found) -> None:
        figures.update(found)
        for k, v in found.items():
            say(f"{k:>26}: {v}", flush=True)

    timed([*cli, "keygen", "--out", str(key)], env)
    note(upgrade_s=round(timed([*cli, "list", "--limit", "1", "--json"], env)[0], 2))
    unsealed_db = None
    if export_all:  # an unsealed twin, upgraded the same way, for export --all unsealed vs sealed
        unsealed_db = fresh_copy(db, work, "unsealed.db")
    wall, rss, cpu, text = timed([*cli, "seal", "--now", iso(NOW - 3_600_000_000), "--json"], env)
    head = json.loads(text)
    note(events=head["size"], first_seal_s=round(wall, 2), first_seal_rss_mb=round(rss, 1), first_seal_cpu_s=round(cpu, 2))
    one, imports = [], []
    for _ in range(rounds):
        one.append(timed([*cli, "export", "1"], env)[0])
        imports.append(timed([sys.executable, "-c", "import sqlmodel"], env)[0])
    note(export_1_s=round(statistics.median(one), 3), import_sqlmodel_s=round(statistics.median(imports), 3),
         export_1_ratio=round(statistics.median(one) / statistics.median(imports), 3))
    tick = json.loads(timed([*cli, "tick", "--now", iso(NOW), "--json"], env)[3])
    if unsealed_db is not None:  # the twin gets the same tick: both then hold the same orders and events
        timed([*cli, "tick", "--now", iso(NOW), "--json"], {**env, "COOPCTL_DB": str(unsealed_db)})
    wall, rss, _, text = timed([*cli, "seal", "--now", iso(NOW + 60_000_000), "--json"], env)
    note(tick_applied=tick["applied"], seal_after_tick_s=round(wall, 2), seal_after_tick_rss_mb=round(rss, 1),
         size_after_tick=json.loads(text)["size"])
    wall, rss, _, _ = timed([*cli, "seal", "--now", iso(NOW + 120_000_000), "--json"], env)
    note(seal_nothing_new_s=round(wall, 2))
    wall, rss, _, _ = timed([*cli, "seal", "--check", "--json"], env)
    note(seal_check_s=round(wall, 2), seal_check_rss_mb=round(rss, 1))
    if unsealed_db is not None:
        dump = work / "all.json"
        at = iso(NOW + 365 * 86_400_000_000)
        walls: dict[str, list[float]] = {"unsealed": [], "sealed": []}
        for _ in range(max(1, rounds // 5)):
            for name, path in (("unsealed", unsealed_db), ("sealed", db)):
                walls[name].append(timed([*cli, "export", "--all", "--out", str(dump), "--at", at], {**env, "COOPCTL_DB": str(path)})[0])
                note(**{f"export_all_{name}_bytes": dump.stat().st_size})
                dump.unlink()
        unsealed, sealed = statistics.median(walls["unsealed"]), statistics.median(walls["sealed"])
        note(export_all_unsealed_s=round(unsealed, 1), export_all_sealed_s=round(sealed, 1), export_all_ratio=round(sealed / unsealed, 3))
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-export-all", action="store_true", help="skip export --all sealed vs unsealed (minutes each)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    compiled()  # bytecode first: see timing.compiled
    figures = run(args.source, args.rounds, not args.no_export_all, say=(lambda *a, **k: None) if args.json else print)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
