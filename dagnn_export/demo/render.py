"""What the demo shows on the terminal: stage headers and timings, the example tables, and the ``dagnn``
commands to paste afterwards. The demo's console output is its interface, so it lives here and not in
the library modules it calls."""
from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path


class Stages:
    """Prints a header per stage, times it and keeps the timings for the summary and the report."""

    def __init__(self, console, total: int):
        self.console, self.total, self.done = console, total, []

    @contextmanager
    def stage(self, name: str, what: str):
        number = len(self.done) + 1
        self.console.rule(f"[bold][{number}/{self.total}] {name}[/bold] — {what}", align="left")
        record = {"name": name, "seconds": 0.0, "cpu_seconds": 0.0, "detail": ""}
        start, cpu = time.perf_counter(), time.process_time()
        yield record
        record["seconds"] = time.perf_counter() - start
        record["cpu_seconds"] = time.process_time() - cpu
        self.done.append(record)
        detail = f" — {record['detail']}" if record["detail"] else ""
        self.console.print(f"[green]✓[/green] {name} in {record['seconds']:.1f} s{detail}")


def dagnn_command() -> str:
    """How to call ``dagnn`` from this shell: plain ``dagnn`` when PATH finds this install, else the script
    beside this interpreter (e.g. ``.venv/bin/dagnn`` after ``scripts/demo.sh``)."""
    beside = Path(sys.executable).parent / "dagnn"
    on_path = shutil.which("dagnn")
    if on_path and (not beside.is_file() or Path(on_path).resolve() == beside.resolve()):
        return "dagnn"
    if beside.is_file():
        return shell_path(beside)
    return f"{shell_path(Path(sys.executable))} -m dagnn_cli"


def shell_path(path: Path) -> str:
    """A path to paste into a shell from the current directory: relative when below it, else absolute."""
    path = Path(path).resolve()
    try:
        text = os.path.relpath(path)
        if text.startswith(".."):
            text = str(path)
    except ValueError:  # another drive (Windows)
        text = str(path)
    return shlex.quote(text)


def results_table(title: str, results: list, query_labels):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("item")
    table.add_column("labels")
    table.add_column("shares a label", justify="center")
    for rank, r in enumerate(results, 1):
        item = Path(r["image"]).name if r.get("image") else ", ".join(r["tags"])
        if r.get("image") and r["tags"]:
            item += f"  ({', '.join(r['tags'][:6])})"
        shared = bool(set(r["labels"]) & set(query_labels))
        table.add_row(str(rank), f"{r['score']:.3f}", item, ", ".join(r["labels"]) or "—",
                      "[green]yes[/green]" if shared else "[red]no[/red]")
    return table


def hits_line(results: list, query_labels) -> str:
    n = sum(bool(set(r["labels"]) & set(query_labels)) for r in results)
    return f"{n}/{len(results)} share a label with the query"


def tagging_table(tagging: dict):
    from rich.table import Table

    true = set(tagging["true"])
    table = Table(title=f"Tagging: held-out photo {Path(tagging['image']).name} (true labels: "
                        f"{', '.join(tagging['true'])})", title_justify="left")
    table.add_column("predicted label")
    table.add_column("score", justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("true label?", justify="center")
    for p in tagging["predicted"]:
        table.add_row(p["label"], f"{p['score']:.3f}", f"{p['threshold']:.3f}",
                      "[green]yes[/green]" if p["label"] in true else "[red]no[/red]")
    missed = [name for name in tagging["true"] if name not in {p["label"] for p in tagging["predicted"]}]
    if missed:
        table.caption = f"true labels not predicted: {', '.join(missed)}"
    return table


def metrics_table(rows: dict, n_test: int):
    from rich.table import Table

    table = Table(title=f"Test mAP ({n_test} test pairs)", title_justify="left")
    for col in ("", "Image2Text", "Text2Image", "average"):
        table.add_column(col, justify="right" if col else "left")
    for name, m in rows.items():
        table.add_row(name, f"{m['i2t']:.4f}", f"{m['t2i']:.4f}", f"{m['avg']:.4f}")
    return table


def timing_table(stages: list, total: float):
    from rich.table import Table

    table = Table(title="Time per stage", title_justify="left")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("CPU seconds", justify="right")
    table.add_column("what it did")
    for s in stages:
        table.add_row(s["name"], f"{s['seconds']:.1f}", f"{s['cpu_seconds']:.1f}", s["detail"])
    table.add_row("[bold]total[/bold]", f"[bold]{total:.1f}[/bold]", f"{time.process_time():.1f}",
                  "(CPU: all threads of this process, since it started)")
    return table
