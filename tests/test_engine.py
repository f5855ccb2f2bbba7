"""The library core on a factory bundle: Searcher (search, target defaults, labels filter, tagging), ingest,
evaluate_bundle, and locating/opening indexes. What the CLI, a server and apps all call."""
import io
import shutil

import numpy as np
import pytest
from PIL import Image

import dagnn_runtime as dr
from dagnn_runtime.dataset import Dataset
from dagnn_runtime.metrics import tagging_metrics
from bundle_factory import build_bundle, bundle_dir, data_dir, model  # noqa: F401


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, model, data_dir):
    out = tmp_path_factory.mktemp("engine") / "index"
    for src in dr.sources_from_data(data_dir):
        report = dr.ingest(model, src, dr.open_index(out / src.modality, model=model, modality=src.modality,
                                                    create=True))
        assert report.added == len(src.ids) and report.skipped == []
    return out


@pytest.fixture
def searcher(model, index_dir):
    s = dr.Searcher.open(model, index_dir)
    yield s
    s.close()


def test_search_image_to_text_and_text_to_image_by_default(searcher, data_dir, model, index_dir):
    photo = data_dir / "images" / "im3.jpg"
    result = searcher.search(image=photo, k=5)
    assert (result.source, result.target, result.query) == ("image", "text", str(photo))
    assert result.index == str(index_dir / "text") and result.took_ms > 0 and result.ignored_tags == []
    exact = dr.open_index(index_dir / "text").search(model.encode_images([photo]), k=5, exact=True)[0]
    assert [h.id for h in result.hits] == [h.id for h in exact]
    assert all(isinstance(h, dr.Hit) and "tags" in h.metadata for h in result.hits)
    by_text = searcher.search(text="sea, beach, zzzz", k=4)
    assert (by_text.target, by_text.query, by_text.ignored_tags) == ("image", "sea, beach", ["zzzz"])
    assert [h.score for h in by_text.hits] == sorted((h.score for h in by_text.hits), reverse=True)
    same = searcher.search(text="sea beach", target="text", k=3)
    assert same.target == "text" and same.hits[0].metadata["tags"]


def test_search_accepts_bytes_and_pil_images(searcher, data_dir):
    photo = data_dir / "images" / "im5.jpg"
    by_path = [h.id for h in searcher.search(image=photo, k=3).hits]
    by_bytes = searcher.search(image=photo.read_bytes(), k=3)
    assert [h.id for h in by_bytes.hits] == by_path and by_bytes.query.endswith("bytes>")
    pil = Image.open(io.BytesIO(photo.read_bytes()))
    assert [h.id for h in searcher.search(image=pil, k=3).hits] == by_path


def test_labels_filter(searcher, data_dir):
    """The filter keeps items whose data set labels or predicted labels hold one of those asked for."""
    ds = Dataset.load(data_dir)
    photos = {str(ds.pairs[i].row) for i in ds.with_images()}
    index = searcher.indexes["image"]
    carrying = {label: {i for i in photos if label in index.metadata(i).get("labels", [])
                        + index.metadata(i)["predicted_labels"]} for label in searcher.model.labels}
    label = next(label for label, ids in carrying.items() if ids and ids < photos)  # a filter that filters
    assert {str(p.row) for p in ds.pairs if label in p.labels} & photos <= carrying[label]
    result = searcher.search(text="sky", target="image", k=30, labels=[label])
    assert {h.id for h in result.hits} == carrying[label]
    assert searcher.search(text="sky", k=5, labels=["no-such-label"]).hits == []


def test_target_defaults_and_refusals(model, index_dir, tmp_path):
    text_only = dr.Searcher.open(model, index_dir / "text")
    assert text_only.search(text="sky", k=2).target == "text"  # the only index's own modality
    assert text_only.search(image=np.full((30, 30, 3), 200, np.uint8), k=2).target == "text"
    with pytest.raises(dr.InputError, match="holds text items, not image items"):
        text_only.search(text="sky", target="image")
    with pytest.raises(dr.InputError, match="exactly one of image= or text="):
        text_only.search(text="sky", image=b"x")
    with pytest.raises(dr.InputError, match="target must be image or text"):
        text_only.search(text="sky", target="audio")
    with pytest.raises(dr.InputError, match="closest: clouds"):
        text_only.search(text="clowds")
    with pytest.raises(dr.InputError, match="no index at"):
        dr.Searcher.open(model, tmp_path)
    other = dr.load(build_bundle(tmp_path / "other", seed=4))
    with pytest.raises(dr.MismatchError, match="rebuild the index"):
        dr.Searcher(other, {"text": dr.open_index(index_dir / "text")})
    with pytest.raises(dr.InputError, match="holds text items, not image items"):
        dr.Searcher(model, {"image": dr.open_index(index_dir / "text")})


@pytest.fixture
def closed(monkeypatch):
    """The locations of the hnswlib indexes closed during a test."""
    from dagnn_runtime.indexes.hnsw import HnswIndex

    seen, close = [], HnswIndex.close
    monkeypatch.setattr(HnswIndex, "close", lambda self: (seen.append(self.location), close(self))[1])
    return seen


def test_open_readies_the_query_encoder_while_the_indexes_open(bundle_dir, index_dir, tmp_path, closed):
    s = dr.Searcher.open(bundle_dir, index_dir, threads=1, ready_for="text")
    try:
        assert set(s.model._sessions) == {"text_encoder"}  # built by open, and the image graph not at all
        assert set(s.indexes) == {"image"} and s.search(text="sky", k=2).hits  # only the index text queries search
    finally:
        s.close()
    closed.clear()
    with pytest.raises(dr.InputError, match="ready_for must be image or text, not 'audio'"):
        dr.Searcher.open(bundle_dir, index_dir, ready_for="audio")
    # the two open side by side; when both fail the index's error is the one raised, as before
    with pytest.raises(dr.InputError, match="no index at"):
        dr.Searcher.open(tmp_path / "no-bundle", tmp_path)
    with pytest.raises(dr.BundleError, match="no-bundle"):
        dr.Searcher.open(tmp_path / "no-bundle", index_dir)
    assert closed == [str(index_dir / "image"), str(index_dir / "text")]  # the indexes opened beside it


def test_tag(model, data_dir, tmp_path):
    images = [data_dir / "images" / "im0.jpg", data_dir / "images" / "im4.jpg"]
    results = dr.Searcher.open(model).tag(images)
    scores = model.score_labels(model.encode_images(images))
    expected = model.labels_above_threshold(scores)
    assert [[(s.label, pytest.approx(s.score, abs=1e-6)) for s in r.labels] for r in results] == expected
    for r, row in zip(results, scores):
        assert r.item.endswith(".jpg") and r.best.label == model.labels[int(row.argmax())]
        assert all(s.threshold == pytest.approx(float(model.thresholds[model.labels.index(s.label)]))
                   for s in r.labels)
    # a label with an infinite threshold never passes, and reports its threshold as None
    never = dr.load(build_bundle(tmp_path / "never", thresholds=[float("inf")] * 6))
    (result,) = dr.Searcher.open(never).tag(images[:1], top=3)
    assert result.labels == [] and result.best.threshold is None
    with pytest.raises(dr.ImageInputError, match="pairs.jsonl"):
        dr.Searcher.open(model).tag([data_dir / "pairs.jsonl"])


def test_ingest_collects_bad_items_and_resumes(model, data_dir, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(data_dir / "images", photos)
    (photos / "bad.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("not an image either")
    done = []
    index = dr.open_index(tmp_path / "idx", model=model, modality="image", create=True)
    report = dr.ingest(model, dr.source_from_images([photos]), index, batch_size=5, on_progress=done.append)
    assert (report.added, report.already_present, report.items, report.modality) == (24, 0, 24, "image")
    assert len(report.skipped) == 1 and "bad.jpg" in report.skipped[0] and sum(done) == 25
    assert len(dr.open_index(tmp_path / "idx")) == 24  # saved
    shutil.copy(photos / "im0.jpg", photos / "sub.jpg")
    again = dr.ingest(model, dr.source_from_images(photos), dr.open_index(tmp_path / "idx", model=model))
    assert (again.added, again.already_present, len(again.skipped)) == (1, 24, 1)
    # texts: the line number is the id unless given; a text without a known tag is skipped
    texts = tmp_path / "t.txt"
    texts.write_text("a\tsky, clouds\nqqq\na\tsea\n")
    tix = dr.open_index(tmp_path / "tidx", model=model, create=True)
    rep = dr.ingest(model, dr.source_from_texts(texts), tix)
    assert (rep.added, rep.duplicate_ids, len(rep.skipped)) == (1, 1, 1) and "'2'" in rep.skipped[0]
    with pytest.raises(dr.InputError, match="holds image items, cannot add text items"):
        dr.ingest(model, dr.source_from_texts(texts), dr.open_index(tmp_path / "idx"))
    # nothing usable at all: an error, and no index written
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.png").write_bytes(b"nope")
    with pytest.raises(dr.InputError, match="nothing could be added .*x.png"):
        dr.ingest(model, dr.source_from_images([tmp_path / "junk"]),
                  dr.open_index(tmp_path / "none", model=model, create=True))
    assert not (tmp_path / "none").exists()
    with pytest.raises(dr.InputError, match="does not exist"):
        dr.source_from_images([tmp_path / "missing"])


def test_evaluate_bundle(model, data_dir, tmp_path):
    done = []
    result = dr.evaluate_bundle(model, data_dir, "test", k=3, batch_size=3, on_progress=done.append)
    assert result["split"] == "test" and result["n"] == 8 and sum(done) == 8 and result["map_at_k"]["k"] == 3
    ds = Dataset.load(data_dir)
    test = ds.splits().test
    expected = tagging_metrics(model.score_labels(model.encode_images([ds.image_path(i) for i in test])),
                               ds.label_matrix(test), model.thresholds)
    assert result["tagging"]["OF1"] == pytest.approx(expected["OF1"])
    assert 0 <= result["i2t"] <= 1 and result["avg"] == pytest.approx((result["i2t"] + result["t2i"]) / 2)
    with pytest.raises(dr.InputError, match="split must be one of"):
        dr.evaluate_bundle(model, data_dir, "dev")
    other = shutil.copytree(data_dir, tmp_path / "data")
    (other / "labels.txt").write_text("a\nb\n")
    with pytest.raises(dr.DagnnError):
        dr.evaluate_bundle(model, other)


def test_locate_and_open_index(model, index_dir, tmp_path):
    assert dr.locate_index(index_dir) is None
    assert dr.locate_index(index_dir, "image") == index_dir / "image"
    assert dr.locate_index(index_dir / "text", "image") == index_dir / "text"  # the location itself first
    assert dr.open_index(index_dir, modality="text").modality == "text"
    with pytest.raises(dr.IndexFileError, match="no image index at"):
        dr.open_index(tmp_path, modality="image")
    with pytest.raises(dr.InputError, match="holds text items, not image items"):
        dr.open_index(index_dir / "text", modality="image")
    other = dr.load(build_bundle(tmp_path / "other", seed=6))
    with pytest.raises(dr.MismatchError, match="rebuild the index"):
        dr.open_index(index_dir / "image", model=other)
    created = dr.open_index(tmp_path / "new", model=model, modality="text", create=True, M=8, ef=40)
    assert isinstance(created, dr.VectorIndex) and len(created) == 0 and created.info()["M"] == 8
    assert not (tmp_path / "new").exists()  # written by its first save()
    created.save()
    assert dr.open_index(tmp_path / "new").info()["ef"] == 40
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(dr.IndexFileError, match="not an index folder"):
        dr.open_index(tmp_path / "photos", model=model, create=True)
    with pytest.raises(dr.InputError, match="needs the model"):
        dr.open_index(tmp_path / "fresh", create=True)
    with pytest.raises(dr.InputError, match="unknown index backend"):
        dr.open_index(index_dir, backend="faiss")
