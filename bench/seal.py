"""Sealing on the 1,000,000-order book (SPEC section 6; issue 15's speed targets). Run by hand:

    python bench/seal.py [--source bench/out/tick-1000000-100000.db] [--rounds 3] [--json]

On a COPY of the book that `bench/tick.py` builds (schema 2: the copy is upgraded first, the
source is only read), each as a separate `coopctl` process:

1. the upgrade to schema 3 (any command: `list --limit 1`);
2. `export --all` before any seal (unsealed), to a file under bench/out (deleted afterwards);
3. the first `seal` of every event: wall time and peak RSS (targets: < 60 s, < 256 MB);
4. `export --all` sealed (target: at most 15% slower than unsealed);
5. `export 1` of a sealed order against `python -c "import sqlmodel"` (target: within 1.25x),
   medians over --rounds;
6. `tick --now T` applying the book's 100,000 due transitions, then the next `seal`
   (target: < 3 s).

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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from tick import NOW, coopctl_argv, fresh_copy, timed  # noqa: E402

from coopctl.policy import iso  # noqa: E402

DEFAULT_SOURCE = Path("/work/bench-before/bench/out/tick-1000000-100000.db")


def run(source: Path, rounds: int) -> dict:
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="seal-", dir=out))
    db = fresh_copy(source, work, "book.db")
    key = work / "seal.key"
    env = {**os.environ, "COOPCTL_DB": str(db), "COOPCTL_SIGNING_KEY": str(key), "COOPCTL_OPERATOR": "bench"}
    cli = coopctl_argv()
    figures: dict = {"source": str(source)}
    timed([*cli, "keygen", "--out", str(key)], env)
    figures["upgrade_s"] = round(timed([*cli, "list", "--limit", "1", "--json"], env)[0], 2)
    dump = work / "all.json"

    def export_all() -> float:
        wall = timed([*cli, "export", "--all", "--out", str(dump), "--at", iso(NOW + 365 * 86_400_000_000)], env)[0]
        size = dump.stat().st_size
        dump.unlink()
        figures.setdefault("export_bytes", []).append(size)
        return wall

    unsealed = export_all()
    wall, rss, cpu, text = timed([*cli, "seal", "--now", iso(NOW - 3_600_000_000), "--json"], env)
    head = json.loads(text)
    figures.update(first_seal_s=round(wall, 2), first_seal_rss_mb=round(rss, 1), first_seal_cpu_s=round(cpu, 2), events=head["size"])
    sealed = export_all()
    figures.update(export_all_unsealed_s=round(unsealed, 2), export_all_sealed_s=round(sealed, 2),
                   export_all_ratio=round(sealed / unsealed, 3))
    one, imports = [], []
    for _ in range(rounds):
        one.append(timed([*cli, "export", "1"], env)[0])
        imports.append(timed([sys.executable, "-c", "import sqlmodel"], env)[0])
    figures.update(export_1_s=round(statistics.median(one), 3), import_sqlmodel_s=round(statistics.median(imports), 3),
                   export_1_ratio=round(statistics.median(one) / statistics.median(imports), 3))
    tick = json.loads(timed([*cli, "tick", "--now", iso(NOW), "--json"], env)[3])
    wall, rss, _, text = timed([*cli, "seal", "--now", iso(NOW + 60_000_000), "--json"], env)
    figures.update(tick_applied=tick["applied"], seal_after_tick_s=round(wall, 2), seal_after_tick_rss_mb=round(rss, 1),
                   size_after_tick=json.loads(text)["size"])
    started = time.perf_counter()
    timed([*cli, "seal", "--check", "--json"], env)
    figures["seal_check_s"] = round(time.perf_counter() - started, 2)
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.source, args.rounds)
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
