"""Timing helpers shared by the benchmarks, so that every figure is taken the same way: the machine load
stated (and a loaded machine refused), both sides of a comparison warmed up and run in alternation
(A B A B ...), and each figure reported as its median with the min-max spread."""
from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def load_average() -> float:
    """The 1-minute load average divided by nothing: compare it with ``usable_cores()``."""
    return os.getloadavg()[0]


def check_load(limit: float, allow: bool) -> float:
    """State the load; refuse to measure above ``limit`` (figures taken on a busy machine measure the other
    jobs) unless ``allow``, in which case warn loudly and mark the run."""
    load = load_average()
    print(f"load average at start: {load:.2f} on {usable_cores()} usable cores (limit {limit})", file=sys.stderr)
    if load > limit:
        if not allow:
            sys.exit(f"error: load average {load:.2f} is above {limit}: the figures would measure the other jobs "
                     "on this machine. Wait for a quiet machine, or pass --allow-load to measure anyway "
                     "(the table is then marked as taken under load).")
        print(f"WARNING: load average {load:.2f} > {limit}: these figures are taken under load and must not "
              "be published", file=sys.stderr)
    return load


def command_line() -> str:
    """The command as typed, for the header of the table (a figure is quoted beside the command that made it)."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


class Stat:
    """Median and spread of a list of samples (seconds), printed in a chosen unit."""

    def __init__(self, samples):
        self.samples = list(samples)
        self.median = statistics.median(self.samples)
        self.min, self.max = min(self.samples), max(self.samples)

    @property
    def spread(self) -> float:
        """max / min: 1 for a steady measure; above 2 the measure is not to be trusted."""
        return self.max / self.min if self.min > 0 else float("inf")

    def fmt(self, scale: float = 1e3, digits: int = 2) -> str:
        return f"{self.median * scale:.{digits}f} ({self.min * scale:.{digits}f}-{self.max * scale:.{digits}f})"


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def alternate(sides: dict, rounds: int, warmup: int = 3, inner: int = 1) -> dict:
    """Warm every side up, then run them in turn ``rounds`` times (A B A B ...); each sample is the mean of
    ``inner`` back-to-back calls. Returns name -> Stat of seconds per call."""
    for fn in sides.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t) / inner)
    return {name: Stat(v) for name, v in samples.items()}


def run_process(argv, env=None) -> tuple[float, int, int, str]:
    """Run ``argv`` to completion: (wall seconds, exit status, peak resident memory in bytes, stderr tail)."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
    return wall, proc.returncode, usage.ru_maxrss * 1024, tail[0]


def alternate_processes(commands: dict, rounds: int, warmup: int = 1, env=None) -> dict:
    """Whole-process timing of each command, alternating; returns name -> (Stat of seconds, peak bytes),
    or name -> error text when a command fails."""
    out, failed = {name: [] for name in commands}, {}
    peak = {name: 0 for name in commands}
    for r in range(warmup + rounds):
        for name, argv in commands.items():
            if name in failed:
                continue
            wall, code, rss, tail = run_process(argv, env)
            if code != 0:
                failed[name] = f"exit {code}: {tail[:120]}"
                continue
            if r >= warmup:
                out[name].append(wall)
                peak[name] = max(peak[name], rss)
    return {name: failed[name] if name in failed else (Stat(out[name]), peak[name]) for name in commands}


class Table:
    """Rows of (measure, value, target, met) printed as aligned text and kept for JSON."""

    def __init__(self):
        self.rows = []

    def add(self, measure: str, value: str, target: str = "", met=None):
        self.rows.append({"measure": measure, "value": value, "target": target,
                          "met": None if met is None else bool(met)})

    def print(self, header: str):
        print(header)
        cols = [("measure", "measure"), ("value: median (min-max)", "value"), ("target", "target"), ("met", "met")]
        cells = [[r[key] if key != "met" else ("" if r["met"] is None else "met" if r["met"] else "MISSED")
                  for _, key in cols] for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip([c for c, _ in cols], *cells)]
        for line in [[c for c, _ in cols], ["-" * w for w in widths], *cells]:
            print("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())
