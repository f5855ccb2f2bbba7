"""`dagnn embed` and the Milvus options of `dagnn index` end to end on a factory bundle and Milvus Lite."""
import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("milvus_lite", reason="needs the [milvus] extra")
pytest.importorskip("pyarrow", reason="needs the [ray] extra (pyarrow)")

from dagnn_cli.main import app  # noqa: E402
from bundle_factory import build_bundle, bundle_dir, data_dir  # noqa: E402,F401

runner = CliRunner()


def run(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def test_build_info_remove_query_on_milvus_lite(bundle_dir, data_dir, tmp_path):  # noqa: F811
    uri = tmp_path / "photos.milvus.db"
    run("index", "build", "--bundle", bundle_dir, "--data", data_dir, "--index", uri, "--quiet")
    infos = json.loads(run("index", "info", "--index", uri, "--json").stdout)
    assert [(i["modality"], i["items"], i["backend"]) for i in infos] == [("image", 24, "milvus"), ("text", 28, "milvus")]
    run("index", "remove", "--index", uri, "3")
    assert [i["items"] for i in json.loads(run("index", "info", "--index", uri, "--json").stdout)] == [23, 27]
    hits = json.loads(run("query", "--bundle", bundle_dir, "--index", uri, "--text", "sky, sea", "--json").stdout)
    assert "3" not in [h["id"] for h in hits["results"]] and len(hits["results"]) == 10
    assert hits["index"].endswith("photos.milvus.db#dagnn_image")
    bad = run("index", "info", "--index", "http://127.0.0.1:9", code=1)
    assert bad.stderr.strip().startswith("error: Milvus http://127.0.0.1:9") and "\n" not in bad.stderr.strip()
    bad = run("index", "info", "--index", "ftp://example/x", code=1)
    assert "no index backend for 'ftp://example/x'" in bad.stderr


def test_embed_then_index_from_embeddings_in_both_backends(bundle_dir, data_dir, tmp_path):  # noqa: F811
    out = run("embed", "--bundle", bundle_dir, "--data", data_dir, "--out", tmp_path / "emb", "--shard-size", "10")
    assert "3 shards (0 already done), 24 items" in out.stdout
    assert "3 shards (3 already done), 0 items" in run("embed", "--bundle", bundle_dir, "--data", data_dir,
                                                      "--out", tmp_path / "emb", "--shard-size", "10").stdout
    for target in (["--index", tmp_path / "hnsw"], ["--index", tmp_path / "x.db"]):
        report = json.loads(run("index", "build", "--bundle", bundle_dir, "--from-embeddings", tmp_path / "emb",
                                *target, "--json").stdout)
        assert (report[0]["added"], report[0]["items"]) == (24, 24)
    other = build_bundle(tmp_path / "other", seed=9)
    bad = run("index", "build", "--bundle", other, "--from-embeddings", tmp_path / "emb", "--index", tmp_path / "h2",
              code=1)
    assert "embed again with this bundle" in bad.stderr
    bad = run("embed", "--bundle", bundle_dir, "--images", data_dir, "--data", data_dir, "--out", tmp_path / "e2",
              code=1)
    assert "exactly one of" in bad.stderr
