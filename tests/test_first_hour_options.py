"""The option walk (issue 25): every wrong or conflicting set of options a user can plausibly give
`dagnn index build`, `dagnn query` and `dagnn serve` ends with a non-zero exit and either exactly one line on
stderr starting with "error:" or typer's own usage error (its "Usage: …" box) — never a Python traceback.

The walk runs in-process (CliRunner); a few cases run as real processes too, since that is how a user meets
them. `dagnn serve` never starts serving here: reaching uvicorn's ``Server.run`` means the command accepted
options it should have refused, and counts as a failure.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bundle_factory import build_bundle, build_dataset
from dagnn_cli.main import app

runner = CliRunner()
FREE = "@FREE_PORT"   # replaced by a loopback port nothing listens on

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A folder holding a bundle, a second bundle of another embedding space, a data set, an index built
    with the first bundle, an empty folder and a plain file."""
    root = tmp_path_factory.mktemp("walk")
    build_bundle(root / "bundle")
    build_bundle(root / "other-bundle", seed=1)
    build_dataset(root / "data")
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a bundle, not an index\n")
    result = runner.invoke(app, ["index", "build", "--bundle", str(root / "bundle"), "--data", str(root / "data"),
                                 "--index", str(root / "index"), "--quiet"])
    assert result.exit_code == 0, result.output
    return root


def problem(result) -> str | None:
    """What is wrong with how a refused command ended, or None when it ended as it should."""
    err = result.stderr
    if result.exit_code == 0:
        return f"exit 0 (stdout {result.stdout[-300:]!r})"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"raised {type(result.exception).__name__}: {result.exception}"
    if "Traceback" in err or "Traceback" in result.stdout:
        return f"printed a traceback:\n{err[-2000:]}"
    lines = [line for line in err.splitlines() if line.strip()]
    if result.exit_code == 2 and lines and lines[0].startswith("Usage: dagnn") and "Error" in err:
        return None  # typer's usage error: a box naming the option
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"exit {result.exit_code}, stderr is not one 'error:' line:\n{err[-2000:]}"
    return None


def walk(place: Path, monkeypatch, args: list[str]):
    monkeypatch.chdir(place)
    return runner.invoke(app, [a.replace(FREE, str(free_port())) for a in args], prog_name="dagnn")


def _no_serving(monkeypatch):
    try:
        import uvicorn
    except ImportError:
        return  # base install: every serve case stops at the [serve] extra's one line

    def refuse(self, *args, **kwargs):
        raise AssertionError("dagnn serve started serving: it accepted options it should have refused")

    monkeypatch.setattr(uvicorn.Server, "run", refuse)


B, O, I, D = "--bundle", "--index", "--index", "--data"
UNREACHABLE = f"http://127.0.0.1:{FREE}"

INDEX_BUILD = {
    "no --bundle": ["--index", "index2", D, "data"],
    "no --index": [B, "bundle", D, "data"],
    "no source": [B, "bundle", O, "index2"],
    "--data and --images": [B, "bundle", O, "index2", D, "data", "--images", "data/images"],
    "--data and --texts": [B, "bundle", O, "index2", D, "data", "--texts", "data/tag_vocab.txt"],
    "--images and --texts": [B, "bundle", O, "index2", "--images", "data/images", "--texts", "data/tag_vocab.txt"],
    "--from-embeddings with --data": [B, "bundle", O, "index2", "--from-embeddings", "empty", D, "data"],
    "--from-embeddings, not shards": [B, "bundle", O, "index2", "--from-embeddings", "empty"],
    "--from-embeddings, missing": [B, "bundle", O, "index2", "--from-embeddings", "nothing-here"],
    "--modality text with --images": [B, "bundle", O, "index2", "--images", "data/images", "--modality", "text"],
    "--modality image with --texts": [B, "bundle", O, "index2", "--texts", "data/tag_vocab.txt", "--modality", "image"],
    "unknown --modality": [B, "bundle", O, "index2", D, "data", "--modality", "video"],
    "--threads 0": [B, "bundle", O, "index2", D, "data", "--threads", "0"],
    "--threads abc": [B, "bundle", O, "index2", D, "data", "--threads", "abc"],
    "--threads above the cores": [B, "bundle", O, "index2", D, "data", "--threads", "100000"],
    "--batch-size 0": [B, "bundle", O, "index2", D, "data", "--batch-size", "0"],
    "--M 1": [B, "bundle", O, "index2", D, "data", "--M", "1"],
    "missing bundle": [B, "no-bundle", O, "index2", D, "data"],
    "a file as bundle": [B, "notes.txt", O, "index2", D, "data"],
    "an empty folder as bundle": [B, "empty", O, "index2", D, "data"],
    "a bad --expect-digest": [B, "bundle", O, "index2", D, "data", "--expect-digest", "abc"],
    "another bundle's index": [B, "other-bundle", O, "index", D, "data"],
    "a file as index": [B, "bundle", O, "notes.txt", D, "data"],
    "an http:// index nothing listens on": [B, "bundle", O, UNREACHABLE, D, "data"],
    "missing --data": [B, "bundle", O, "index2", D, "no-data"],
    "a file as --data": [B, "bundle", O, "index2", D, "notes.txt"],
    "a photo folder as --data": [B, "bundle", O, "index2", D, "data/images"],
    "missing --images": [B, "bundle", O, "index2", "--images", "no-photos"],
    "no photos under --images": [B, "bundle", O, "index2", "--images", "empty"],
    "missing --texts": [B, "bundle", O, "index2", "--texts", "no-texts.txt"],
    "removed --backend/--uri": [B, "bundle", D, "data", "--backend", "milvus", "--uri", "./nodb"],
}

QUERY = {
    "no --bundle": [O, "index", "--text", "sky"],
    "no --index": [B, "bundle", "--text", "sky"],
    "neither --image nor --text": [B, "bundle", O, "index"],
    "both --image and --text": [B, "bundle", O, "index", "--image", "data/images/im0.jpg", "--text", "sky"],
    "unknown --target": [B, "bundle", O, "index", "--text", "sky", "--target", "video"],
    "a target the index lacks": [B, "bundle", O, "index/image", "--text", "sky", "--target", "text"],
    "a non-index folder": [B, "bundle", O, "data", "--text", "sky"],
    "an empty folder as index": [B, "bundle", O, "empty", "--text", "sky"],
    "a missing index folder": [B, "bundle", O, "no-index", "--text", "sky"],
    "a *.db path that does not exist": [B, "bundle", O, "missing.db", "--text", "sky"],
    "an http:// index nothing listens on": [B, "bundle", O, UNREACHABLE, "--text", "sky"],
    "a file as index": [B, "bundle", O, "notes.txt", "--text", "sky"],
    "another bundle's index": [B, "other-bundle", O, "index", "--text", "sky"],
    "--threads 0": [B, "bundle", O, "index", "--text", "sky", "--threads", "0"],
    "--threads -3": [B, "bundle", O, "index", "--text", "sky", "--threads", "-3"],
    "--threads above the cores": [B, "bundle", O, "index", "--text", "sky", "--threads", "100000"],
    "--k 0": [B, "bundle", O, "index", "--text", "sky", "--k", "0"],
    "--ef 0": [B, "bundle", O, "index", "--text", "sky", "--ef", "0"],
    "missing bundle": [B, "no-bundle", O, "index", "--text", "sky"],
    "a file as bundle": [B, "notes.txt", O, "index", "--text", "sky"],
    "an empty folder as bundle": [B, "empty", O, "index", "--text", "sky"],
    "a wrong --expect-digest": [B, "bundle", O, "index", "--text", "sky", "--expect-digest", "0" * 64],
    "a missing --image": [B, "bundle", O, "index", "--image", "no-photo.jpg"],
    "a folder as --image": [B, "bundle", O, "index", "--image", "data/images"],
    "a text file as --image": [B, "bundle", O, "index", "--image", "notes.txt"],
    "an empty --text": [B, "bundle", O, "index", "--text", ""],
    "--text with no known tag": [B, "bundle", O, "index", "--text", "zzzz qqqq"],
    "removed --backend": [B, "bundle", O, "index", "--text", "sky", "--backend", "milvus"],
}

SERVE = {
    "no --bundle": [O, "index"],
    "no --index": [B, "bundle"],
    "a non-loopback --host without --api-key": [B, "bundle", O, "index", "--host", "0.0.0.0"],
    "a LAN --host without --api-key": [B, "bundle", O, "index", "--host", "192.168.1.20"],
    "an IPv6 any --host without --api-key": [B, "bundle", O, "index", "--host", "::"],
    "--port 70000": [B, "bundle", O, "index", "--port", "70000"],
    "--port -1": [B, "bundle", O, "index", "--port", "-1"],
    "--port abc": [B, "bundle", O, "index", "--port", "abc"],
    "missing bundle": [B, "no-bundle", O, "index"],
    "a non-index folder": [B, "bundle", O, "data"],
    "a missing index folder": [B, "bundle", O, "no-index"],
    "a *.db path that does not exist": [B, "bundle", O, "missing.db"],
    "an http:// index nothing listens on": [B, "bundle", O, UNREACHABLE],
    "--threads 0": [B, "bundle", O, "index", "--threads", "0"],
    "unknown --log-level": [B, "bundle", O, "index", "--log-level", "loud"],
    "--max-batch 0": [B, "bundle", O, "index", "--max-batch", "0"],
    "--max-upload-mb 0": [B, "bundle", O, "index", "--max-upload-mb", "0"],
    "removed --uri": [B, "bundle", "--uri", "./nodb"],
}

# Refused only after the server has started (the bundle is loaded in the background; the rest by uvicorn):
SERVE_LATE = {
    "a file as bundle": [B, "notes.txt", O, "index"],
    "an empty folder as bundle": [B, "empty", O, "index"],
    "--threads above the cores": [B, "bundle", O, "index", "--threads", "100000"],
    "a file as --uploads": [B, "bundle", O, "index", "--uploads", "notes.txt"],
    "a --host that does not resolve": [B, "bundle", O, "index", "--host", "no such host", "--api-key", "k"],
}


@pytest.mark.parametrize("case", INDEX_BUILD)
def test_index_build_refuses_in_one_line(place, monkeypatch, case):
    result = walk(place, monkeypatch, ["index", "build", *INDEX_BUILD[case]])
    assert problem(result) is None, f"dagnn index build, {case}: {problem(result)}"
    assert not (place / "index2").exists(), "a refused build left an index behind"


@pytest.mark.parametrize("case", QUERY)
def test_query_refuses_in_one_line(place, monkeypatch, case):
    result = walk(place, monkeypatch, ["query", *QUERY[case]])
    assert problem(result) is None, f"dagnn query, {case}: {problem(result)}"
    assert not (place / "missing.db").exists(), "a query created the Milvus Lite database it was to read"


@pytest.mark.parametrize("case", SERVE)
def test_serve_refuses_in_one_line(place, monkeypatch, case):
    _no_serving(monkeypatch)
    result = walk(place, monkeypatch, ["serve", *SERVE[case]])
    assert problem(result) is None, f"dagnn serve, {case}: {problem(result)}"


@pytest.mark.parametrize("case", SERVE_LATE)
def test_serve_refuses_before_serving(place, monkeypatch, case):
    pytest.importorskip("uvicorn", reason="needs the [serve] extra")
    _no_serving(monkeypatch)
    result = walk(place, monkeypatch, ["serve", *SERVE_LATE[case]])
    assert problem(result) is None, f"dagnn serve, {case}: {problem(result)}"


# ---- as a user meets them: real processes, stderr as the terminal gets it

def dagnn(place: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGNN_DEBUG", "COLUMNS")}
    return subprocess.run([sys.executable, "-m", "dagnn_cli", *args], cwd=place, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def process_problem(done: subprocess.CompletedProcess) -> str | None:
    class Result:  # the fields ``problem`` reads
        exit_code, stdout, stderr, exception = done.returncode, done.stdout, done.stderr, None
    return problem(Result)


@pytest.mark.parametrize("args", [
    ["index", "build", B, "bundle", D, "data", "--backend", "milvus", "--uri", "./nodb"],  # the 58 lines
    ["index", "build", B, "bundle", O, "notes.txt", D, "data"],
    ["query", B, "bundle", O, UNREACHABLE, "--text", "sky"],
    ["query", B, "bundle", O, "data", "--image", "data/images/im0.jpg"],
    ["serve", B, "bundle", O, "index", "--host", "0.0.0.0"],
], ids=["removed-options", "file-as-index", "unreachable-milvus", "non-index-folder", "host-without-key"])
def test_refusals_as_processes(place, args):
    args = [a.replace(FREE, str(free_port())) for a in args]
    done = dagnn(place, *args)
    assert process_problem(done) is None, f"dagnn {' '.join(args)}: {process_problem(done)}"


def test_serve_on_a_port_in_use_says_so_in_one_line(place):
    pytest.importorskip("uvicorn", reason="needs the [serve] extra")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = dagnn(place, "serve", B, "bundle", O, "index", "--port", str(taken.getsockname()[1]))
    assert process_problem(done) is None, process_problem(done)
