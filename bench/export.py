"""`export --all` on the 1,000,000-order book, unsealed and sealed, before and after (issues 14
and 15). Run by hand:

    python bench/export.py [--source bench/out/tick-1000000-100000.db] \
        [--before /work/main/.venv/bin/coopctl] [--work DIR] [--rounds 5] [--json]

On a COPY of the book (`bench/tick.py`'s fresh_copy; the source is only read), each command as a
separate process, `--at` fixed so that both sides write the same document:

1. `export --all --out FILE` with the code given by --before (another checkout's coopctl, e.g.
   main's) and with this checkout's: wall time, peak RSS, CPU, MB/s of the file; the two files
   must be byte-identical (their SHA-256 is compared; each file is deleted once hashed);
2. `keygen` and `seal` of the copy, then the same two exports of the sealed book (the sealed
   export against the unsealed one of the same code: the target is at most 1.15x);
3. `export 1` of the sealed book against `python -c "import sqlmodel"`, medians of --rounds
   (target: within 1.25x);
4. the copy and the files are deleted at the end.

The machine is shared: compare the ratios of one run, not figures across runs (the load average
is printed with them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from tick import coopctl_argv, fresh_copy, timed  # noqa: E402
from timing import compiled  # noqa: E402

DEFAULT_SOURCE = HERE / "out" / "tick-1000000-100000.db"
DEFAULT_BEFORE = Path("/work/main/.venv/bin/coopctl")
AT = "2027-06-01T00:00:00+00:00"  # after every event of the book


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def run(source: Path, before: list[str], work: Path, rounds: int, say=print) -> dict:
    work = Path(tempfile.mkdtemp(prefix="export-", dir=work))
    figures: dict = {"source": str(source), "load_at_start": load()}
    try:
        db = fresh_copy(source, work, "book.db")
        key = work / "seal.key"
        env = {**os.environ, "COOPCTL_DB": str(db), "COOPCTL_SIGNING_KEY": str(key), "COOPCTL_OPERATOR": "bench"}
        after = coopctl_argv()
        timed([*after, "list", "--limit", "1", "--json"], env)  # an upgrade, if the book is older, is not timed

        def export(name: str, cli: list[str]) -> tuple[float, str]:
            out = work / f"{name}.json"
            wall, rss, cpu, _ = timed([*cli, "export", "--all", "--at", AT, "--out", str(out)], env)
            size = out.stat().st_size
            found = {"s": round(wall, 1), "rss_mb": round(rss, 1), "cpu_s": round(cpu, 1),
                     "mb": round(size / 1e6), "mb_per_s": round(size / 1e6 / wall, 1), "load": load()}
            figures[name] = found
            say(f"{name:>16}: {found}", flush=True)
            text = digest(out)
            out.unlink()
            return wall, text

        for part in ("unsealed", "sealed"):
            if part == "sealed":
                timed([*after, "keygen", "--out", str(key)], env)
                wall, rss, _, _ = timed([*after, "seal", "--now", AT, "--json"], env)
                figures["first_seal"] = {"s": round(wall, 1), "rss_mb": round(rss, 1)}
                say(f"{'first seal':>16}: {figures['first_seal']}", flush=True)
            old, old_digest = export(f"{part}_before", before)
            new, new_digest = export(f"{part}_after", after)
            figures[f"{part}_identical"] = old_digest == new_digest
            figures[f"{part}_speed_up"] = round(old / new, 2)
            say(f"{part:>16}: {old / new:.2f}x faster, identical bytes: {old_digest == new_digest}", flush=True)
        for side in ("before", "after"):
            figures[f"sealed_vs_unsealed_{side}"] = round(figures[f"sealed_{side}"]["s"] / figures[f"unsealed_{side}"]["s"], 3)
        one, imports = [], []
        for _ in range(rounds):
            one.append(timed([*after, "export", "1"], env)[0])
            imports.append(timed([sys.executable, "-c", "import sqlmodel"], env)[0])
        figures["export_1_s"] = round(statistics.median(one), 3)
        figures["import_sqlmodel_s"] = round(statistics.median(imports), 3)
        figures["export_1_ratio"] = round(statistics.median(one) / statistics.median(imports), 3)
        figures["load_at_end"] = load()
        for name in ("sealed_vs_unsealed_before", "sealed_vs_unsealed_after", "export_1_ratio", "load_at_end"):
            say(f"{name:>16}: {figures[name]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--before", default=str(DEFAULT_BEFORE), help="the coopctl executable of the code before")
    parser.add_argument("--work", type=Path, default=HERE / "out", help="where the copy and the files go (GBs)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    compiled()  # bytecode first: see timing.compiled
    args.work.mkdir(exist_ok=True)
    figures = run(args.source, [args.before], args.work, args.rounds, say=(lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
