"""`export --all` on the 1,000,000-order book, unsealed and sealed, before and after (issues 14
and 15). Run by hand:

    python bench/export.py [--source bench/out/tick-1000000-100000.db] \
        [--before /work/main/.venv/bin/coopctl | none] [--work DIR] [--rounds 5] [--export-rounds 3]
        [--sliced-rounds 0] [--null-rounds 0] [--json]

On two COPIES of the book (`bench/tick.py`'s fresh_copy; the source is only read), one left
unsealed and one given a key and its first `seal` (timed: wall and peak RSS), each command as a
separate process, `--at` fixed so that both sides write the same document:

1. `--export-rounds` rounds of `export --all --out FILE` of the unsealed and of the sealed copy,
   with the code given by --before (another checkout's coopctl, e.g. main's) and with this
   checkout's, in ABBA order (unsealed after, sealed after, sealed before, unsealed before, then
   the other way round), so that the machine's drift falls on both sides: wall time, peak RSS,
   CPU, MB/s of the file, as medians over the rounds; the sealed export against the unsealed one
   of the same code (target: at most 1.15x) is the median of each round's own ratio. Before each
   export the book's file is read once, untimed (`warm`). With
   `--before none`, only this checkout's two exports, in turn (AB, then BA). The files of
   the same copy must be byte-identical between the two codes and across rounds (their SHA-256 is
   compared; each file is deleted once hashed);
   With `--sliced-rounds N`, also N rounds of the two exports of this checkout run side by side
   in slices (`sliced`): each in turn runs for SLICE seconds while the other is stopped (SIGSTOP
   of its process group: the export and its helper), so both meet the same machine, second by
   second; each one's time is the sum of its slices. The ratio of a round is then not the drift
   of the machine between two runs of half a minute (up to 1.5x either way on this shared
   machine, for the same code), which the ABBA medians only average out. `--null-rounds N`
   runs the unsealed export against itself the same way: the method's own error;
2. `export 1` of the sealed book against `python -c "import sqlmodel"`, medians of --rounds
   (target: within 1.25x);
3. the copies and the files are deleted at the end.

The machine is shared: compare the ratios of one run, not figures across runs (the load average
is printed with them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
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


def warm(book: Path) -> None:
    """Read the book's file once, untimed, so that each export starts with it in the page cache
    (as on a server using it). This machine pages out file data left unread for a minute (DAMON
    reclaim: `kdamond`), so without this the first export after a switch of book read most of it
    from disk, a page at a time, and the ratio of two exports measured which one found its book
    evicted (up to 1.5x for the same code)."""
    for path in (book, Path(f"{book}-wal")):
        if path.exists():
            with open(path, "rb") as f:
                while f.readinto(_WARM_BUFFER):
                    pass


_WARM_BUFFER = bytearray(1 << 22)


SLICE = 0.5  # seconds each export of a sliced round runs before the other one's turn


def sliced(commands: list[tuple[list[str], dict]], slice_s: float = SLICE) -> list[tuple[float, float]]:
    """Run these commands side by side, one at a time: each in turn runs for `slice_s` seconds while
    the others are stopped (SIGSTOP to its process group, so that a helper it started stops with
    it), until each has ended. (running seconds, CPU seconds) of each: the sum of its slices, and
    its own CPU with that of the processes it waited for. Each starts stopped (a shell that stops
    itself, then runs the command), so that none runs outside its slices."""
    procs = [subprocess.Popen(["sh", "-c", 'kill -STOP $$; exec "$@"', "sh", *argv], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True) for argv, env in commands]
    running, usage, turn = [0.0] * len(procs), [None] * len(procs), 0
    try:
        for proc in procs:  # each has stopped itself before its command starts (Linux: its state is T)
            while _state(proc.pid) != "T":
                time.sleep(0.001)
        while None in usage:
            k = turn % len(procs)
            turn += 1
            if usage[k] is not None:
                continue
            pid = procs[k].pid
            started = time.perf_counter()
            os.killpg(pid, signal.SIGCONT)
            while True:
                done, status, use = os.wait4(pid, os.WNOHANG)
                now = time.perf_counter()
                if done:
                    running[k] += now - started
                    procs[k].returncode = os.waitstatus_to_exitcode(status)
                    usage[k] = use.ru_utime + use.ru_stime
                    if procs[k].returncode != 0:
                        raise SystemExit(f"{commands[k][0][0]} failed ({procs[k].returncode}): "
                                         f"{procs[k].stderr.read().decode(errors='replace')[-2000:]}")
                    break
                if now - started >= slice_s:
                    os.killpg(pid, signal.SIGSTOP)
                    running[k] += time.perf_counter() - started
                    break
                time.sleep(0.005)
    finally:
        for proc in procs:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
    return list(zip(running, usage))


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def run(source: Path, before: list[str], work: Path, rounds: int, export_rounds: int = 3, say=print, sliced_rounds: int = 0,
        null_rounds: int = 0) -> dict:
    work = Path(tempfile.mkdtemp(prefix="export-", dir=work))
    figures: dict = {"source": str(source), "load_at_start": load(), "export_rounds": export_rounds}
    after = coopctl_argv()
    try:
        key = work / "seal.key"
        books = {part: fresh_copy(source, work, f"{part}.db") for part in ("unsealed", "sealed")}
        envs = {part: {**os.environ, "COOPCTL_DB": str(db), "COOPCTL_SIGNING_KEY": str(key), "COOPCTL_OPERATOR": "bench"}
                for part, db in books.items()}
        for env in envs.values():
            timed([*after, "list", "--limit", "1", "--json"], env)  # an upgrade, if the book is older, is not timed
        timed([*after, "keygen", "--out", str(key)], envs["sealed"])
        wall, rss, _, _ = timed([*after, "seal", "--now", AT, "--json"], envs["sealed"])
        figures["first_seal"] = {"s": round(wall, 1), "rss_mb": round(rss, 1)}
        say(f"{'first seal':>16}: {figures['first_seal']}", flush=True)
        runs: dict[str, list[dict]] = {}
        digests: dict[str, set] = {"unsealed": set(), "sealed": set()}
        codes = {"before": before, "after": after} if before else {"after": after}

        def export(part: str, side: str) -> None:
            out = work / f"{part}-{side}.json"
            warm(books[part])
            wall, rss, cpu, _ = timed([*codes[side], "export", "--all", "--at", AT, "--out", str(out)], envs[part])
            size = out.stat().st_size
            found = {"s": wall, "rss_mb": rss, "cpu_s": cpu, "mb": size / 1e6, "load": load()}
            runs.setdefault(f"{part}_{side}", []).append(found)
            say(f"{part + '_' + side:>16}: {wall:.1f} s, {cpu:.1f} s CPU, {rss:.0f} MB, load {found['load']}", flush=True)
            digests[part].add(digest(out))
            out.unlink()

        order = [("unsealed", "after"), ("sealed", "after"), ("sealed", "before"), ("unsealed", "before")]
        order = [(part, side) for part, side in order if side in codes]
        for number in range(export_rounds):
            for part, side in order if number % 2 == 0 else reversed(order):
                export(part, side)
        for name, found in runs.items():
            figures[name] = {
                "s": round(statistics.median(r["s"] for r in found), 1),
                "cpu_s": round(statistics.median(r["cpu_s"] for r in found), 1),
                "rss_mb": round(max(r["rss_mb"] for r in found), 1),
                "mb": round(found[0]["mb"]),
                "mb_per_s": round(found[0]["mb"] / statistics.median(r["s"] for r in found), 1),
                "rounds_s": [round(r["s"], 1) for r in found],
            }
        for part in ("unsealed", "sealed"):
            if "before" in codes:
                figures[f"{part}_speed_up"] = round(figures[f"{part}_before"]["s"] / figures[f"{part}_after"]["s"], 2)
        for side in (side for side in codes if f"sealed_{side}" in runs):
            pairs = zip(runs[f"sealed_{side}"], runs[f"unsealed_{side}"])
            ratios = [(s["s"] / u["s"], s["cpu_s"] / u["cpu_s"]) for s, u in pairs]
            figures[f"sealed_vs_unsealed_{side}"] = round(statistics.median(r[0] for r in ratios), 3)
            figures[f"sealed_vs_unsealed_{side}_cpu"] = round(statistics.median(r[1] for r in ratios), 3)
            figures[f"sealed_vs_unsealed_{side}_rounds"] = [round(r[0], 3) for r in ratios]
        if sliced_rounds:
            found_rounds = []
            for number in range(sliced_rounds):
                parts = ("unsealed", "sealed") if number % 2 == 0 else ("sealed", "unsealed")
                outs = {part: work / f"{part}-sliced.json" for part in parts}
                for part in parts:
                    warm(books[part])
                result = dict(zip(parts, sliced([([*after, "export", "--all", "--at", AT, "--out", str(outs[part])], envs[part])
                                                 for part in parts])))
                for part in parts:
                    digests[part].add(digest(outs[part]))
                    outs[part].unlink()
                (u, u_cpu), (s_, s_cpu) = result["unsealed"], result["sealed"]
                found_rounds.append({"unsealed_s": round(u, 1), "sealed_s": round(s_, 1), "ratio": round(s_ / u, 3),
                                     "cpu_ratio": round(s_cpu / u_cpu, 3)})
                say(f"{'sliced round':>16}: unsealed {u:.1f} s ({u_cpu:.1f} CPU), sealed {s_:.1f} s ({s_cpu:.1f} CPU): "
                    f"{s_ / u:.3f}, load {load()}", flush=True)
            figures["sliced_rounds"] = found_rounds
            figures["sealed_vs_unsealed_sliced"] = round(statistics.median(r["ratio"] for r in found_rounds), 3)
            figures["sealed_vs_unsealed_sliced_cpu"] = round(statistics.median(r["cpu_ratio"] for r in found_rounds), 3)
        for number in range(null_rounds):  # the method's own error: the same export on both sides
            outs = [work / f"unsealed-null-{side}.json" for side in "ab"]
            warm(books["unsealed"])
            (a, a_cpu), (b, b_cpu) = sliced([([*after, "export", "--all", "--at", AT, "--out", str(out)], envs["unsealed"])
                                              for out in outs])
            for out in outs:
                digests["unsealed"].add(digest(out))
                out.unlink()
            figures.setdefault("null_rounds", []).append({"ratio": round(b / a, 3), "cpu_ratio": round(b_cpu / a_cpu, 3)})
            say(f"{'null round':>16}: the unsealed export twice, {a:.1f} s ({a_cpu:.1f} CPU) and {b:.1f} s ({b_cpu:.1f} CPU): "
                f"{b / a:.3f}, load {load()}", flush=True)
        for part in ("unsealed", "sealed"):  # every file of a copy, whichever kind of round wrote it
            figures[f"{part}_identical"] = len(digests[part]) == 1
        one, imports = [], []
        for _ in range(rounds):
            one.append(timed([*after, "export", "1"], envs["sealed"])[0])
            imports.append(timed([sys.executable, "-c", "import sqlmodel"], envs["sealed"])[0])
        figures["export_1_s"] = round(statistics.median(one), 3)
        figures["import_sqlmodel_s"] = round(statistics.median(imports), 3)
        figures["export_1_ratio"] = round(statistics.median(one) / statistics.median(imports), 3)
        figures["load_at_end"] = load()
        for name in ("unsealed_before", "unsealed_after", "sealed_before", "sealed_after", "unsealed_identical",
                     "sealed_identical", "sealed_vs_unsealed_before", "sealed_vs_unsealed_before_rounds",
                     "sealed_vs_unsealed_before_cpu", "sealed_vs_unsealed_after", "sealed_vs_unsealed_after_rounds",
                     "sealed_vs_unsealed_after_cpu", "sealed_vs_unsealed_sliced", "sealed_vs_unsealed_sliced_cpu",
                     "export_1_ratio", "load_at_end"):
            if name in figures:
                say(f"{name:>16}: {figures[name]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--before", default=str(DEFAULT_BEFORE),
                        help="the coopctl executable of the code before; none: only this checkout's, in ABBA rounds of its own")
    parser.add_argument("--work", type=Path, default=HERE / "out", help="where the copy and the files go (GBs)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of `export 1` and `import sqlmodel`")
    parser.add_argument("--export-rounds", type=int, default=3, help="ABBA rounds of the four whole exports")
    parser.add_argument("--sliced-rounds", type=int, default=0,
                        help="rounds of the two exports of this checkout run side by side in slices (`sliced`)")
    parser.add_argument("--null-rounds", type=int, default=0,
                        help="sliced rounds of the unsealed export against itself: the side-by-side method's own error")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    compiled()  # bytecode first: see timing.compiled
    args.work.mkdir(exist_ok=True)
    before = [] if args.before == "none" else [args.before]
    say = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    figures = run(args.source, before, args.work, args.rounds, args.export_rounds, say=say, sliced_rounds=args.sliced_rounds,
                  null_rounds=args.null_rounds)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
