"""Batch embedding into Parquet shards: per-item failures, resume after kill -9, local vs Ray Data rows,
loading shards into an index without re-encoding."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pq = pytest.importorskip("pyarrow.parquet", reason="needs the [ray] extra (pyarrow)")

import dagnn_runtime as dr  # noqa: E402
from dagnn_runtime.embed import Item, embed, items_from_data, items_from_images, load_into, read_embeddings  # noqa: E402
from dagnn_runtime.errors import InputError, MismatchError  # noqa: E402
from bundle_factory import build_bundle, build_dataset, bundle_dir, model  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]


def demo_folder() -> Path:
    found = sorted(REPO.glob("dagnn_export/**/mirflickr-mini/images"))
    if not found:
        pytest.skip("demo photos (dagnn_export/**/mirflickr-mini/images) not found")
    return found[0]


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """60 demo photos plus one undecodable file and one missing file."""
    bad = tmp_path_factory.mktemp("bad") / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG")
    photos = items_from_images(demo_folder())[:60]
    return photos + [Item("zz/broken.jpg", str(bad)), Item("zz/missing.jpg", str(bad.parent / "gone.jpg"))]


def read_rows(out):
    tables = [pq.read_table(p) for p in sorted(Path(out).glob("shard-*.parquet"))]
    rows = {}
    for t in tables:
        for r in t.to_pylist():
            rows[r["id"]] = r
    return rows


def test_local_shards_hold_rows_errors_and_bundle_identity(items, model, tmp_path):  # noqa: F811
    report = embed(model, items, tmp_path / "emb", shard_size=16)
    assert (report.shards, report.items, report.errors) == (4, 62, 2)
    files = sorted((tmp_path / "emb").glob("shard-*.parquet"))
    assert [f.name for f in files] == [f"shard-0000{i}.parquet" for i in range(4)]
    schema = pq.read_schema(files[0])
    assert schema.metadata[b"dagnn.embedding_space"].decode() == model.embedding_space
    assert str(schema.field("embedding").type) == f"fixed_size_list<element: float>[{model.embedding_dim}]"
    rows = read_rows(tmp_path / "emb")
    assert list(rows) == sorted(it.id for it in items)  # shards are slices of the sorted list
    good = [it for it in items if not it.id.startswith("zz/")]
    expected = model.encode_images([it.path for it in good])
    got = np.array([rows[it.id]["embedding"] for it in good], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose([rows[good[0].id]["label_scores"]], model.score_labels(expected[:1]), atol=1e-5)
    assert rows["zz/broken.jpg"]["embedding"] is None and "cannot decode" in rows["zz/broken.jpg"]["error"]
    assert "no such file" in rows["zz/missing.jpg"]["error"] and rows[good[0].id]["error"] is None


def test_rerun_skips_finished_shards_and_refuses_another_plan(items, model, tmp_path):  # noqa: F811
    out = tmp_path / "emb"
    embed(model, items, out, shard_size=16)
    (out / "shard-00002.parquet").write_bytes(b"PAR1 damaged")   # a damaged shard is not counted as done
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    report = embed(model, items, out, shard_size=16)
    assert (report.skipped_shards, report.items) == (3, 16)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert [n for n in after if after[n] != before[n]] == ["shard-00002.parquet"]
    with pytest.raises(InputError, match="another input list or shard size"):
        embed(model, items[:-1], out, shard_size=16)
    other = dr.load(build_bundle(tmp_path / "other", seed=3))
    with pytest.raises(MismatchError, match="use another output folder"):
        embed(other, items, out, shard_size=16)
    with pytest.raises(MismatchError, match="embed again with this bundle"):
        next(read_embeddings(out, other))


def test_kill_9_then_resume_recomputes_only_unfinished_shards(bundle_dir, model, tmp_path):  # noqa: F811
    out = tmp_path / "emb"
    script = textwrap.dedent(f"""
        import dagnn_runtime as dr
        from dagnn_runtime.embed import embed, items_from_images
        embed(dr.load({str(bundle_dir)!r}, threads=1), items_from_images({str(demo_folder())!r})[:600],
              {str(out)!r}, shard_size=40)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    deadline = time.monotonic() + 120
    while not list(out.glob("shard-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shard-*.parquet")}
    assert 1 <= len(done) < 15, f"kill came too late to test a resume ({len(done)} of 15 shards done)"
    report = embed(model, items_from_images(demo_folder())[:600], out, shard_size=40)
    assert report.skipped_shards == len(done) and report.shards == 15
    assert report.items == 600 - 40 * len(done)
    for name, stamp in done.items():
        path = out / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp  # not rewritten
    assert not list(out.glob(".shard-*")), "a temporary shard was left behind"
    ids = [b.ids for b in read_embeddings(out, model)]
    flat = [i for chunk in ids for i in chunk]
    assert len(flat) == 600 and flat == sorted(flat)


def test_data_folder_labels_reach_the_index(model, tmp_path):  # noqa: F811
    pytest.importorskip("milvus_lite", reason="needs the [milvus] extra")
    from dagnn_runtime.indexes.milvus import MilvusIndex

    data = build_dataset(tmp_path / "data", n_images=12)
    embed(model, items_from_data(data), tmp_path / "emb", shard_size=5)
    index = MilvusIndex.open(str(tmp_path / "x.db"), modality="image", model=model, create=True)
    report = load_into(index, tmp_path / "emb")
    assert (report.added, report.already_present, report.items) == (12, 0, 12)
    assert load_into(index, tmp_path / "emb").already_present == 12   # a rerun adds nothing twice
    meta = index.metadata("0")
    assert meta["labels"] and set(meta["labels"]) <= set(model.labels) and "predicted_labels" in meta
    vec = model.encode_images([data / "images" / "im3.jpg"])
    assert index.search(vec, k=1)[0][0].id == "3"  # the row, as `dagnn index build --data` names it
    index.close()


def test_ray_rows_equal_local_rows(items, bundle_dir, model, tmp_path, monkeypatch):  # noqa: F811
    ray = pytest.importorskip("ray", reason="needs the [ray] extra")
    from dagnn_runtime.embed.ray_engine import embed_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    embed(model, items, tmp_path / "local", shard_size=16)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        report = embed_ray(bundle_dir, model, items, tmp_path / "ray", shard_size=16, workers=2)
    finally:
        ray.shutdown()
    assert (report.shards, report.items, report.errors) == (4, 62, 2)
    local, distributed = read_rows(tmp_path / "local"), read_rows(tmp_path / "ray")
    assert list(local) == list(distributed)
    for key, row in local.items():
        other = distributed[key]
        assert (row["path"], row["error"]) == (other["path"], other["error"])
        if row["embedding"] is not None:
            np.testing.assert_allclose(other["embedding"], row["embedding"], atol=1e-5)
            np.testing.assert_allclose(other["label_scores"], row["label_scores"], atol=1e-5)
