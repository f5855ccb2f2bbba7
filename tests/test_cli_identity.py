"""`--expect-digest` on every command that loads a bundle, `--threads`/`--force-threads`, the digest an index
records as `dagnn index info` shows it, and quoted user input kept short."""
import json
import os

import pytest
from typer.testing import CliRunner

import dagnn_runtime as dr
from dagnn_cli.main import app
from bundle_factory import bundle_dir, bundle_parts, data_dir, model, resign, write_bundle  # noqa: F401

runner = CliRunner()
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error(result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, bundle_dir, data_dir):
    out = tmp_path_factory.mktemp("idx") / "index"
    result = run("index", "build", "--bundle", bundle_dir, "--data", data_dir, "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    return out


def _commands(bundle, data, index, tmp):
    """Every command that loads a bundle, with what it needs to get as far as loading it."""
    return {
        "info": ["info", "--bundle", bundle],
        "query": ["query", "--bundle", bundle, "--index", index, "--text", "sky"],
        "tag": ["tag", "--bundle", bundle, "--image", next(data.glob("images/*"))],
        "index build": ["index", "build", "--bundle", bundle, "--data", data, "--out", tmp / "new", "--quiet"],
        "index add": ["index", "add", "--bundle", bundle, "--data", data, "--index", index, "--quiet"],
        "eval": ["eval", "--bundle", bundle, "--data", data, "--quiet"],
        "embed": ["embed", "--bundle", bundle, "--data", data, "--out", tmp / "shards", "--quiet"],
    }


@pytest.mark.parametrize("command", ["info", "query", "tag", "index build", "index add", "eval", "embed"])
def test_every_bundle_command_pins_the_digest(command, bundle_dir, data_dir, index_dir, model, tmp_path):
    args = _commands(bundle_dir, data_dir, index_dir, tmp_path)[command]
    wrong = one_error(run(*args, "--expect-digest", "0" * 64))
    assert f"its digest {model.bundle_digest} is not the expected {'0' * 64}" in wrong
    assert not (tmp_path / "new").exists() and not (tmp_path / "shards").exists()  # refused before any work
    bad = one_error(run(*args, "--expect-digest", "xyz"))
    assert "expected digest 'xyz' is not a 64-digit SHA-256 hex string" in bad
    if command == "embed":
        pytest.importorskip("pyarrow", reason="dagnn embed writes Parquet: needs the [ray] extra")
    right = run(*args, "--expect-digest", model.bundle_digest.upper())
    assert right.exit_code == 0, (right.stdout, right.stderr)


@pytest.mark.parametrize("command", ["query", "tag", "index build", "index add", "eval", "embed"])
def test_too_many_threads_is_one_line_naming_the_option(command, bundle_dir, data_dir, index_dir, tmp_path,
                                                         monkeypatch):
    monkeypatch.delenv("DAGNN_FORCE_THREADS", raising=False)
    args = _commands(bundle_dir, data_dir, index_dir, tmp_path)[command]
    msg = one_error(run(*args, "--threads", 2000))
    assert msg == (f"error: --threads=2000 is more than the {CORES} cores of this machine "
                   "(--force-threads or DAGNN_FORCE_THREADS=1 allows up to 1024)")
    msg = one_error(run(*args, "--threads", 2000, "--force-threads"))
    assert msg == "error: --threads=2000 is more than the 1024 allowed"


def test_force_threads_allows_more_threads_than_cores(bundle_dir, data_dir, monkeypatch):
    monkeypatch.delenv("DAGNN_FORCE_THREADS", raising=False)
    image = next(data_dir.glob("images/*"))
    one_error(run("tag", "--bundle", bundle_dir, "--image", image, "--threads", CORES + 1))
    forced = run("tag", "--bundle", bundle_dir, "--image", image, "--threads", CORES + 1, "--force-threads")
    assert forced.exit_code == 0, forced.stderr


def test_index_info_shows_the_digest_and_a_relabelled_bundle_is_refused(index_dir, model, tmp_path):
    table = run("index", "info", "--index", index_dir)
    assert table.exit_code == 0 and f"built with bundle {model.bundle_digest}" in table.stdout
    infos = json.loads(run("index", "info", "--index", index_dir, "--json").stdout)
    assert {i["bundle_digest"] for i in infos} == {model.bundle_digest}

    files, manifest = bundle_parts()
    labels = list(manifest["labels"])
    labels[0], labels[1] = labels[1], labels[0]
    other = write_bundle(tmp_path / "relabelled", files, resign(dict(manifest, labels=labels)))
    msg = one_error(run("query", "--bundle", other, "--index", index_dir, "--text", "sky"))
    digest = dr.load(other).bundle_digest
    assert f"built with bundle {model.bundle_digest[:8]}" in msg and digest[:8] in msg and "--expect-digest" in msg


def test_an_index_without_a_recorded_digest_says_so(tmp_path, model):
    from dagnn_runtime.indexes.hnsw import HnswIndex

    index = HnswIndex.build(model.encode_texts(["sky"]), ["a"], embedding_space=model.embedding_space,
                            modality="image")
    index.save(tmp_path / "old")
    index.close()
    out = run("index", "info", "--index", tmp_path / "old")
    assert out.exit_code == 0 and "built with bundle not recorded" in out.stdout


def test_quoted_input_is_shortened(bundle_dir, index_dir):
    long = "x" * 5000
    msg = one_error(run("query", "--bundle", bundle_dir, "--index", index_dir, "--text", "sky", "--target", long))
    assert "(5000 characters)" in msg and len(msg) < 200
    msg = one_error(run("index", "remove", "--index", index_dir, long))
    assert "(5000 characters)" in msg and len(msg) < 300


def test_embed_without_pyarrow_names_the_extra(bundle_dir, data_dir, tmp_path):
    import importlib.util

    if importlib.util.find_spec("pyarrow") is not None:
        pytest.skip("pyarrow is installed (this checks the base install)")
    line = one_error(run("embed", "--bundle", bundle_dir, "--data", data_dir, "--out", tmp_path / "s", "--quiet"))
    assert "needs pyarrow" in line and "[ray]" in line and "pip install" in line
    assert not (tmp_path / "s").exists()
