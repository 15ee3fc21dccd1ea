"""The timing loop that bench/board.py and bench/listing_pages.py share.

Every command runs as its own process (stdout to a pipe that is read to the end, as a reader
would; stderr kept for the error message), round after round, interleaved, so that a load that
comes and goes on a shared machine hits every figure alike; medians are compared with the median
of a baseline (`python -c "import sqlmodel"`) measured in the same rounds. Quote ratios from one
run, never figures across runs.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path


def coopctl() -> str:
    """The coopctl beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "coopctl"
    return str(beside) if beside.exists() else "coopctl"


def timed(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child: user + system) of one run; exit != 0 stops the benchmark."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    cpu = _child_cpu()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode(errors='replace')[:300]}")
    return wall, cpu


_last_cpu = [0.0]


def _child_cpu() -> float:
    """CPU of the child just waited for: the growth of this process's children's total."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    spent, _last_cpu[0] = total - _last_cpu[0], total
    return spent


def interleaved(commands: dict[str, list[str]], env: dict, rounds: int, *, warm: bool = True,
                progress: bool = True) -> dict[str, dict[str, list[float]]]:
    """{name: {"wall": [...], "cpu": [...]}} of `rounds` interleaved rounds (after one warm-up
    round, which fills the page cache and the bytecode, when `warm`)."""
    if warm:
        for argv in commands.values():
            timed(argv, env)
    times = {name: {"wall": [], "cpu": []} for name in commands}
    for number in range(rounds):
        for name, argv in commands.items():
            wall, cpu = timed(argv, env)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
        if progress:
            print(f"round {number + 1}/{rounds}: " + ", ".join(f"{k} {v['wall'][-1]:.3f}s" for k, v in times.items()),
                  file=sys.stderr)
    return times


def summary(times: dict, baseline: str, limits: dict[str, float | None]) -> dict[str, dict]:
    """Per command: median wall and CPU (ms), the ratio of the medians to the baseline's, the
    limit and whether it is met (None for the baseline and commands without a limit)."""
    base = statistics.median(times[baseline]["wall"])
    base_cpu = statistics.median(times[baseline]["cpu"])
    found = {}
    for name, runs in times.items():
        wall, cpu = statistics.median(runs["wall"]), statistics.median(runs["cpu"])
        limit = limits.get(name)
        found[name] = {
            "wall_ms": round(wall * 1000, 1), "cpu_ms": round(cpu * 1000, 1), "ratio": round(wall / base, 2),
            "cpu_ratio": round(cpu / base_cpu, 2) if base_cpu else None, "limit": limit,
            "ok": None if limit is None else wall / base <= limit,
        }
    return found


def print_summary(title: str, found: dict[str, dict]) -> None:
    print(title)
    for name, row in found.items():
        verdict = "" if row["limit"] is None else f"  (limit {row['limit']}x: {'ok' if row['ok'] else 'NOT MET'})"
        print(f"  {name:44} {row['wall_ms']:>8.1f} ms  {row['ratio']:>5.2f}x  CPU {row['cpu_ms']:>7.1f} ms {row['cpu_ratio']}x{verdict}")


def compiled() -> None:
    """Compile the coopctl package to bytecode before anything is timed, as `pip install` does.
    An editable install run with PYTHONDONTWRITEBYTECODE=1 (set on the development machine)
    would otherwise compile every coopctl module from source in every process it starts, tick's
    helper included: about 0.1 to 0.2 s of each figure that no user of an installed coopctl pays."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "coopctl"), quiet=1)
