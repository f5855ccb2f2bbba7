"""HnswIndex over the store: a model-checked sequence of changes and crashes, a reader that sees another
writer's items, a damaged checkpoint rebuilt, a version-1 folder converted on open."""
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dagnn_runtime.errors import InputError
from dagnn_runtime.indexes import checkpoint, open_index
from dagnn_runtime.indexes.hnsw import HnswIndex
from dagnn_runtime.indexes.store import DB_FILE

sys.path.insert(0, str(Path(__file__).parent))
from index_writer import DIM, SPACE, vector_of  # noqa: E402
from test_index_legacy import write_v1  # noqa: E402

IDS = [f"i{n}" for n in range(12)]


def new_index(folder, checkpoint_min=3):
    index = HnswIndex(DIM, SPACE, modality="image", M=8, ef_construction=40, location=folder)
    index.checkpoint_min = checkpoint_min
    return index


def reopen(folder, checkpoint_min=3):
    index = HnswIndex.load(folder)
    index.checkpoint_min = checkpoint_min
    return index


def check_matches(index, model: dict) -> None:
    assert sorted(index.ids) == sorted(model) and len(index) == len(model)
    if model:
        ids = sorted(model)
        hits = index.search(np.stack([vector_of(i) for i in ids]), k=1)
        assert [row[0].id for row in hits] == ids
        assert all(index.metadata(i) == {"v": model[i]} for i in ids)


operations = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.sampled_from(IDS), min_size=1, max_size=4)),
    st.tuples(st.just("remove"), st.lists(st.sampled_from(IDS), min_size=1, max_size=3)),
    st.tuples(st.just("save"), st.none()),
    st.tuples(st.just("checkpoint"), st.none()),
    st.tuples(st.just("crash"), st.none()),
), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_random_changes_and_crashes_match_a_plain_dict(ops):
    """add / remove (all or nothing), save, checkpoint and crash (reopen without save or close)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ix"
        index, model, version = new_index(folder), {}, 0
        for op, ids in ops:
            if op == "add":
                version += 1
                expect_ok = len(set(ids)) == len(ids) and not set(ids) & set(model)
                try:
                    index.add(np.stack([vector_of(i) for i in ids]), ids, [{"v": version}] * len(ids))
                    assert expect_ok
                    model.update((i, version) for i in ids)
                except InputError:
                    assert not expect_ok
            elif op == "remove":
                expect_ok = set(ids) <= set(model)
                try:
                    index.remove(ids)
                    assert expect_ok
                    for i in ids:
                        model.pop(i, None)
                except InputError:
                    assert not expect_ok
            elif op == "save":
                index.save()
            elif op == "checkpoint":
                index.checkpoint()
            elif folder.exists():  # crash: abandon this copy as it is and open the folder afresh
                index = reopen(folder)
            check_matches(index, model)
        if folder.exists():
            check_matches(reopen(folder), model)


def test_a_reader_sees_a_writers_items_without_reopening(tmp_path):
    writer = new_index(tmp_path / "ix")
    writer.add(np.stack([vector_of(i) for i in IDS[:3]]), IDS[:3])
    reader = open_index(tmp_path / "ix")
    assert sorted(reader.ids) == IDS[:3]
    writer.add(vector_of("late"), ["late"], [{"labels": ["sky"]}])
    writer.remove([IDS[0]])
    hits = reader.search(vector_of("late"), k=5)[0]  # no refresh() needed: search looks first
    assert hits[0].id == "late" and IDS[0] not in [h.id for h in hits] and len(reader) == 3
    assert [h.id for h in reader.search(vector_of("late"), k=5, labels="sky")[0]] == ["late"]
    with pytest.raises(InputError, match=r"id 'late' is already in the index"):
        reader.add(vector_of("late"), ["late"])  # refused by the store even before the reader looked


def test_a_damaged_checkpoint_is_rebuilt_from_the_database(tmp_path, caplog):
    index = new_index(tmp_path / "ix")
    index.add(np.stack([vector_of(i) for i in IDS]), IDS)
    index.checkpoint()
    name = checkpoint.registered(index._store)["file"]
    index.close()
    path = tmp_path / "ix" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        again = reopen(tmp_path / "ix")
    assert f"graph checkpoint {name} does not match its SHA-256" in caplog.text
    assert sorted(again.ids) == sorted(IDS)
    assert again.search(vector_of(IDS[4]), k=1)[0][0].id == IDS[4]
    again.close()  # the rebuilt graph becomes the new checkpoint
    assert not path.exists() and reopen(tmp_path / "ix")._checkpointed == (12, 0)


def test_opening_a_version_1_folder_converts_it(tmp_path):
    write_v1(tmp_path / "image", IDS, removed={"i2"})
    index = open_index(tmp_path, modality="image")
    assert index.converted and sorted(index.ids) == sorted(set(IDS) - {"i2"})
    assert index.metadata("i5") == {"path": "img/i5.jpg"}
    assert (tmp_path / "image" / DB_FILE).is_file() and not (tmp_path / "image" / "index.json").exists()
    assert not HnswIndex.load(tmp_path / "image").converted
