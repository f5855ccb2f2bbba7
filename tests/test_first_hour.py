"""A newcomer's first hour (issue 25): install advice that works, help that is not cut, no work done before a
missing extra is noticed.

Every "needs the [x] extra" message gets its command from ``dagnn_runtime.errors.install_hint``; these tests
collect the extras those messages name (by scanning the program's source for the helper's uses), check each
is an extra of pyproject.toml, and that the hint's command, run with ``--dry-run``, resolves them from a
fresh copy of the source tree. The docs' `pip install` commands are held to the same wording.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bundle_factory import build_bundle, build_dataset
from dagnn_runtime import errors

REPO = Path(__file__).resolve().parents[1]
PROGRAM = ("runtime", "cli", "dagnn_export")
EXTRAS = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
HINT_CALL = re.compile(r"""install_hint\(\s*["']([\w,-]+)["']\s*\)""")
LITERAL = re.compile(r"pip install")
# A distribution each extra brings, to see in the resolver's report that the extra was resolved.
BRINGS = {"serve": "uvicorn", "plots": "matplotlib", "milvus": "pymilvus", "ray": "ray", "train": "torch",
          "gpu": "onnxruntime-gpu", "dev": "pytest"}
NETWORK_TROUBLE = ("Failed to establish a new connection", "Temporary failure in name resolution",
                   "Could not fetch URL", "Network is unreachable", "ConnectTimeoutError", "ReadTimeoutError",
                   "ProxyError", "No matching distribution found for setuptools")


def program_files():
    for top in PROGRAM:
        for path in sorted((REPO / top).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), path.read_text(encoding="utf-8")


def literal_hints() -> dict[str, list[int]]:
    """Files of the program (but the helper's own) that spell a `pip install` command themselves."""
    found = {}
    for rel, text in program_files():
        if rel == "runtime/errors.py":
            continue
        lines = [n for n, line in enumerate(text.splitlines(), 1) if LITERAL.search(line)]
        if lines:
            found[rel] = lines
    return found


def hinted_extras() -> dict[str, set[str]]:
    """extra → the files whose messages name it through ``install_hint``."""
    found: dict[str, set[str]] = {}
    for rel, text in program_files():
        for match in HINT_CALL.finditer(text):
            for extra in match.group(1).split(","):
                found.setdefault(extra, set()).add(rel)
    return found


def test_hints_come_from_the_helper():
    stray = literal_hints()
    assert not stray, f"spell install commands with dagnn_runtime.errors.install_hint, not by hand: {stray}"


def test_every_hinted_extra_exists():
    hinted = hinted_extras()
    assert {"train", "plots", "milvus", "ray"} <= set(hinted), f"the scan lost hints: {sorted(hinted)}"
    unknown = {extra: sorted(files) for extra, files in hinted.items() if extra not in EXTRAS}
    assert not unknown, f"hints name extras pyproject.toml does not have: {unknown}"


def doc_files():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_docs_install_commands_work_from_the_source_folder():
    """The docs say `pip install '.[x]'` (in the dagnn source folder), never `dagnn[x]`, which no index has."""
    bad = []
    for doc in doc_files():
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for command in re.findall(r"pip install [^`\n|]*", line):
                where = f"{doc.relative_to(REPO)}:{n}: {command.strip()}"
                if "dagnn[" in command:
                    bad.append(f"{where} (dagnn is not on a package index)")
                for extras in re.findall(r"\.\[([\w,-]+)\]", command):
                    bad += [f"{where} (no extra {e!r})" for e in extras.split(",") if e not in EXTRAS]
    assert not bad, "\n".join(bad)


def test_install_hint_names_the_folder_dagnn_came_from(tmp_path, monkeypatch):
    source = tmp_path / "my src"
    source.mkdir()
    monkeypatch.setattr(errors, "_source_folder", lambda: str(source))
    monkeypatch.chdir(tmp_path)
    words = shlex.split(errors.install_hint("serve"))
    assert words[1:4] == ["-m", "pip", "install"] and words[4] == f"{source}[serve]"
    assert os.path.samefile(shutil.which(words[0]) or words[0], sys.executable)
    monkeypatch.chdir(source)
    assert shlex.split(errors.install_hint("plots"))[4] == ".[plots]"
    monkeypatch.setattr(errors, "_source_folder", lambda: None)
    assert errors.install_hint("ray") == "pip install '.[ray]' in the dagnn source folder"


def test_source_folder_is_this_checkout_when_installed_from_it():
    """scripts/demo.sh and scripts/test.sh install from this folder: pip recorded it, and the hint names it."""
    folder = errors._source_folder()
    if folder is None:
        pytest.skip("dagnn was not installed from a source folder here (no direct_url.json)")
    assert (Path(folder) / "pyproject.toml").is_file()


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The source tree as a fresh clone has it: the files git tracks or would track, nothing built."""
    out = tmp_path_factory.mktemp("clone") / "dagnn"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files a clone has")
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, out / name)
    return out


def pip(args: list[str], timeout: float = 150) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip took over {timeout:.0f} s (a slow or unreachable package registry)")
    if done.returncode != 0 and any(s in done.stdout + done.stderr for s in NETWORK_TROUBLE):
        pytest.skip("the package registry cannot be reached: " + (done.stderr.strip().splitlines() or ["?"])[-1])
    return done


def test_hinted_extras_resolve_from_a_fresh_clone(clone, tmp_path, monkeypatch):
    """The hint's own command, with --dry-run, resolves every hinted extra (and those the docs name) from a
    copy of the source tree, dependencies included, as if nothing were installed."""
    import json

    extras = sorted((set(hinted_extras()) | {"serve", "plots", "milvus", "ray", "train", "dev"}) & EXTRAS)
    monkeypatch.setattr(errors, "_source_folder", lambda: str(clone))
    command = shlex.split(errors.install_hint(",".join(extras)))
    report = tmp_path / "report.json"
    done = pip([*command[:4], "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
                *command[4:]])
    assert done.returncode == 0, done.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    names = {item["metadata"]["name"].lower().replace("_", "-") for item in installs}
    dagnn = next(item for item in installs if item["metadata"]["name"] == "dagnn")
    assert set(extras) <= set(dagnn["metadata"].get("provides_extra", [])), dagnn["metadata"].get("provides_extra")
    assert {BRINGS[e] for e in extras if e in BRINGS} <= names, sorted(names)


def test_installing_prints_no_packaging_warning(clone, tmp_path):
    """setuptools once warned at every install that dagnn_runtime.server.static was not a listed package."""
    done = pip([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "wheel"), str(clone)])
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in (done.stdout + done.stderr).splitlines()
                if re.search(r"(BuildBackend|Setuptools|SetuptoolsDeprecation|UserWarning)Warning|Package would be ignored",
                             line)]
    assert not warnings, "\n".join(warnings)
    wheel = next((tmp_path / "wheel").glob("dagnn-*.whl"))
    import zipfile

    shipped = set(zipfile.ZipFile(wheel).namelist())
    page = {p.name for p in (REPO / "runtime" / "server" / "static").iterdir()}
    assert {f"dagnn_runtime/server/static/{name}" for name in page} <= shipped


# ---- help that is not cut, and the [plots] extra checked before the work

def dagnn(*args: str, env_drop=("COLUMNS",)) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    return subprocess.run([sys.executable, "-m", "dagnn_cli", *args], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", [["index", "build"], ["train"], ["serve"], ["query"], ["embed"]])
def test_piped_help_shows_every_option_in_full(command):
    """`dagnn index build --help | cat`: stdout is no terminal, and rich used to fall back to 80 columns and
    cut long option names ("--label-embeddi…")."""
    from dagnn_cli.main import app
    import typer.main

    group = typer.main.get_command(app)
    cmd = group
    for name in command:
        cmd = cmd.commands[name]
    done = dagnn(*command, "--help")
    assert done.returncode == 0, done.stderr
    names = [opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")]
    missing = [name for name in names if not re.search(re.escape(name) + r"(?![\w-])", done.stdout)]
    assert not missing, f"`dagnn {' '.join(command)} --help | cat` cuts {missing}:\n{done.stdout}"


def test_help_names_the_extras():
    """rich reads "[plots]" in a help text as markup and drops it unless escaped ("needs the  extra")."""
    done = dagnn("eval", "--help")
    assert "needs the [train] extra" in done.stdout and "[plots] extra" in done.stdout, done.stdout


def test_only_help_is_widened(monkeypatch):
    """The demo's own output and tables keep their width when piped; help (`dagnn`, `dagnn index`, any
    `--help`) gets the wider one."""
    from dagnn_cli import app as cli_app

    for args, widened in ((["demo"], False), (["query", "--text", "sky"], False), (["index"], True), ([], True),
                          (["index", "build", "--help"], True)):
        monkeypatch.setenv("COLUMNS", "")  # empty counts as unset; restored after the test
        monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
        cli_app.wide_help_when_piped(args)
        assert (os.environ.get("COLUMNS") == str(cli_app.HELP_WIDTH)) == widened, args


def test_help_keeps_the_width_the_user_set():
    done = subprocess.run([sys.executable, "-m", "dagnn_cli", "query", "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "90"})
    assert max(len(line) for line in done.stdout.splitlines()) <= 90


def test_eval_plots_without_the_extra_refuses_before_evaluating(tmp_path, monkeypatch):
    import importlib.util

    import dagnn_runtime
    from dagnn_cli.main import app

    bundle, data = build_bundle(tmp_path / "bundle"), build_dataset(tmp_path / "data")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("matplotlib", "sklearn") else real(name, *a))

    def evaluated(*args, **kwargs):
        raise AssertionError("evaluated although the figures could not be drawn")

    monkeypatch.setattr(dagnn_runtime, "evaluate_bundle", evaluated)
    result = CliRunner().invoke(app, ["eval", "--bundle", str(bundle), "--data", str(data), "--plots",
                                      str(tmp_path / "figures"), "--quiet"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, (result.stderr, result.exception)
    assert lines[0].startswith("error: --plots needs the [plots] extra") and "pip install" in lines[0]
    assert "[plots]" in shlex.split(lines[0].rsplit(": ", 1)[1])[-1]
    assert not (tmp_path / "figures").exists()
