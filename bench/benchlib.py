"""Timing helpers shared by the benchmarks, so that every figure is taken the same way: the machine load
stated (and a loaded machine refused), both sides of a comparison warmed up and run in alternation
(A B A B ...), and each figure reported as its median with the min-max spread."""
from __future__ import annotations

import os
import resource
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


class OtherLoad:
    """CPU used by other processes while a benchmark runs, in cores on average. The load average at the end
    cannot say this: it counts the benchmark's own threads (two of them keep a 2-core machine at load ~2).
    Busy time of the whole machine (/proc/stat) minus this process's and its waited-for children's."""

    LIMIT = 0.25  # cores: above this the others took a share the figures would show

    def __init__(self):
        self.start = (time.monotonic(), self._busy(), self._own())

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    @staticmethod
    def _own() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def cores(self) -> float:
        t0, busy0, own0 = self.start
        return max(0.0, (self._busy() - busy0) - (self._own() - own0)) / max(time.monotonic() - t0, 1e-9)


def command_line() -> str:
    """The command as typed, for the header of the table (a figure is quoted beside the command that made it)."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def install_kind() -> str:
    """How dagnn is installed, for a whole-process figure's header: an editable install (``pip install -e``)
    runs its import hook at the start of every process, which a user's regular install does not."""
    if any(name.startswith("__editable___dagnn") for name in sys.modules):
        return "editable install (its import hook starts with every process; users run `pip install .`)"
    return "regular install"


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


def alternate(sides: dict, rounds: int, warmup: int = 3, inner: int = 1, inner_median: bool = False,
              settle: float = 0.0) -> dict:
    """Warm every side up, then run them in turn ``rounds`` times (A B A B ...); each sample is the mean of
    ``inner`` back-to-back calls, or their median with ``inner_median`` (then the first call after another
    side ran, slowed by what that side left in the caches, does not decide the sample). ``settle``: seconds
    of idling before each sample, so that the thread pool of the side that ran before has stopped spinning
    on the cores (onnxruntime's and OpenMP's workers busy-wait for a while after each call). Returns name ->
    Stat of seconds per call."""
    for fn in sides.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            time.sleep(settle)
            calls = []
            for _ in range(inner):
                t = time.perf_counter()
                fn()
                calls.append(time.perf_counter() - t)
            samples[name].append(statistics.median(calls) if inner_median else sum(calls) / inner)
    return {name: Stat(v) for name, v in samples.items()}


# A child's peak memory is read from its own /proc/self/status (VmHWM) at exit: getrusage's ru_maxrss of a
# child counts the parent's memory at fork, and this script's parent process holds torch and the models.
_HWM = ("def _dagnn_bench_hwm():\n"
        "    import sys\n"
        "    kb = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        "    sys.stderr.write(f'\\nBENCH_VMHWM_KB {kb[0] if kb else 0}\\n')\n"
        "import atexit; atexit.register(_dagnn_bench_hwm)\n")


def py_code(code: str) -> list:
    """A fresh interpreter running ``code`` (its peak memory reported at exit)."""
    return [sys.executable, "-c", _HWM + code]


def py_module(module: str, *args) -> list:
    """``python -m module args`` in a fresh interpreter (its peak memory reported at exit)."""
    code = _HWM + f"import runpy, sys; sys.argv = [{module!r}, *sys.argv[1:]]; " \
                  f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return [sys.executable, "-c", code, *map(str, args)]


def child_env(env=None) -> dict:
    """The environment of a timed child process. Children may write bytecode caches, which an installed
    package has: with PYTHONDONTWRITEBYTECODE set, every process of a source checkout would compile its
    modules again."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_process(argv, env=None) -> tuple[float, int, int, str]:
    """Run ``argv`` to completion: (wall seconds, exit status, peak resident memory in bytes or 0 when the
    command is not made by ``py_code``/``py_module``, last stderr line)."""
    t = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(env))
    wall = time.perf_counter() - t
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    peak = [int(x.split()[1]) * 1024 for x in lines if x.startswith("BENCH_VMHWM_KB ")]
    other = [x for x in lines if not x.startswith("BENCH_VMHWM_KB ") and x.strip()]
    return wall, proc.returncode, peak[-1] if peak else 0, other[-1] if other else ""


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
