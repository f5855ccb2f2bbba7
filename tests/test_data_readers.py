import logging

import numpy as np
import pytest

scipy_io = pytest.importorskip("scipy.io")

from dagnn_export import data  # noqa: E402


def _split_arrays(rng, n, dv=16, dt=10, c=4):
    labels = (rng.random((n, c)) < 0.4).astype(np.uint8)
    return rng.normal(size=(n, dv)).astype(np.float32), (rng.random((n, dt)) < 0.3).astype(np.float64), labels


def _write_gnn4cmr(folder, rng, sizes=(30, 12)):
    written = {}
    for split, n in zip(("train", "test"), sizes):
        img, txt, lab = _split_arrays(rng, n)
        for suffix, arr in (("img", img), ("txt", txt), ("lab", lab)):
            scipy_io.savemat(folder / f"{split}_{suffix}.mat", {f"{split}_{suffix}": arr})
        written[split] = (img, txt, lab)
    return written


def test_gnn4cmr_folder(tmp_path):
    written = _write_gnn4cmr(tmp_path, np.random.default_rng(0))
    ds = data.load_mat_dataset(tmp_path)
    assert ds.layout == "gnn4cmr" and set(ds.splits) == {"train", "test"}
    assert (ds.num_labels, ds.vocab_size) == (4, 10)
    for split, (img, txt, lab) in written.items():
        got = ds.splits[split]
        assert got.name == split and len(got) == len(lab) and got.images is None
        np.testing.assert_array_equal(got.features, img)
        np.testing.assert_array_equal(got.bow, txt)
        np.testing.assert_array_equal(got.labels, lab)
        assert got.features.dtype == got.bow.dtype == got.labels.dtype == np.float32


def test_gnn4cmr_transposed_matrices_are_turned_round(tmp_path):
    written = _write_gnn4cmr(tmp_path, np.random.default_rng(1))
    img, txt, lab = written["test"]
    scipy_io.savemat(tmp_path / "test_img.mat", {"test_img": img.T})  # saved d×n from MATLAB
    scipy_io.savemat(tmp_path / "test_lab.mat", {"test_lab": lab.T})
    got = data.load_gnn4cmr(tmp_path).splits["test"]
    np.testing.assert_array_equal(got.features, img)
    np.testing.assert_array_equal(got.labels, lab)


def test_gnn4cmr_errors_name_the_file(tmp_path):
    _write_gnn4cmr(tmp_path, np.random.default_rng(2))
    scipy_io.savemat(tmp_path / "test_txt.mat", {"text": np.zeros((12, 10))})
    with pytest.raises(data.DataError, match=r"test_txt\.mat.*'test_txt'.*\['text'\]"):
        data.load_gnn4cmr(tmp_path)
    scipy_io.savemat(tmp_path / "test_txt.mat", {"test_txt": np.zeros((11, 10))})
    with pytest.raises(data.DataError, match="share no pair count"):
        data.load_gnn4cmr(tmp_path)
    (tmp_path / "train_lab.mat").unlink()
    with pytest.raises(data.DataError, match=r"missing file .*train_lab\.mat"):
        data.load_gnn4cmr(tmp_path)


def test_gnn4cmr_rejects_non_binary_labels(tmp_path):
    _write_gnn4cmr(tmp_path, np.random.default_rng(3))
    scipy_io.savemat(tmp_path / "train_lab.mat", {"train_lab": np.full((30, 4), 0.5)})
    with pytest.raises(data.DataError, match=r"train_lab\.mat: labels must be 0/1"):
        data.load_gnn4cmr(tmp_path)


def test_dcmh_separate_files_with_images(tmp_path):
    rng = np.random.default_rng(4)
    n = 7
    images = rng.integers(0, 256, (n, 20, 20, 3), dtype=np.uint8)
    _, bow, labels = _split_arrays(rng, n)
    # MATLAB stores the stack as S×S×3×N; scipy reads it back in that order.
    scipy_io.savemat(tmp_path / "mirflickr25k-iall.mat", {"IAll": images.transpose(1, 2, 3, 0)})
    scipy_io.savemat(tmp_path / "mirflickr25k-yall.mat", {"YAll": bow})
    scipy_io.savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": labels})
    scipy_io.savemat(tmp_path / "unrelated.mat", {"something": np.zeros(3)})
    ds = data.load_mat_dataset(tmp_path)
    assert ds.layout == "dcmh" and list(ds.splits) == ["all"]
    assert len(ds.files) == 3
    split = ds.splits["all"]
    assert split.features is None
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.bow, bow)
    np.testing.assert_array_equal(split.labels, labels)


def test_dcmh_single_file_with_features_in_nchw_or_feature_form(tmp_path):
    rng = np.random.default_rng(5)
    feats, bow, labels = _split_arrays(rng, 9)
    path = tmp_path / "flickr.mat"
    scipy_io.savemat(path, {"IAll": feats, "YAll": bow, "LAll": labels})
    split = data.load_mat_dataset(path).splits["all"]
    np.testing.assert_array_equal(split.features, feats)
    assert split.images is None

    images = rng.integers(0, 256, (9, 3, 16, 16), dtype=np.uint8)  # N×3×S×S as h5py-converted files have
    scipy_io.savemat(path, {"IAll": images, "YAll": bow, "LAll": labels})
    np.testing.assert_array_equal(data.load_dcmh(path).splits["all"].images, images.transpose(0, 2, 3, 1))


def test_dcmh_missing_variable(tmp_path):
    path = tmp_path / "only.mat"
    scipy_io.savemat(path, {"IAll": np.zeros((5, 8)), "LAll": np.zeros((5, 2))})
    with pytest.raises(data.DataError, match=r"YAll not found in .*only\.mat"):
        data.load_dcmh([path])


def test_matlab_v73_and_garbage_files_name_the_file(tmp_path):
    v73 = tmp_path / "iall.mat"
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    v73.write_bytes(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM" + b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(data.DataError, match=r"iall\.mat is a MATLAB v7\.3 \(HDF5\) file"):
        data.load_dcmh([v73])
    (tmp_path / "gnn").mkdir()
    garbage = tmp_path / "gnn" / "train_img.mat"
    garbage.write_bytes(b"\x01\x02\x03\x04 not matlab at all" * 10)
    with pytest.raises(data.DataError, match=r"train_img\.mat: not a readable MATLAB"):
        data.load_mat_dataset(tmp_path / "gnn")


LABELS = ["animals", "plant_life", "sky", "night"]


def _glove(path, header=False):
    lines = ["2 3"] if header else []
    lines += ["the 0.5 0.5 0.5", "animals 1 0 0", "plant 0 2 0", "life 0 0 4", "sky 1 1 1", "night -1 0 1",
              "Animals 9 9 9"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("header", [False, True])
def test_glove_text_vectors_average_multiword_labels(tmp_path, header):
    emb = data.load_label_embeddings(_glove(tmp_path / "glove.txt", header), LABELS)
    assert emb.dtype == np.float32 and emb.shape == (4, 3)
    np.testing.assert_allclose(emb, [[1, 0, 0], [0, 1, 2], [1, 1, 1], [-1, 0, 1]])


def test_glove_unknown_labels_are_named(tmp_path):
    with pytest.raises(data.DataError, match=r"\['water', 'clouds_x'\]"):
        data.load_label_embeddings(_glove(tmp_path / "glove.txt"), ["sky", "water", "clouds_x"])


def test_glove_ragged_line(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("sky 1 2 3\nnight 1 2\n")
    with pytest.raises(data.DataError, match=r"glove\.txt:2: 2 values, expected 3"):
        data.load_label_embeddings(path, ["sky", "night"])


def test_npy_embeddings_checked_against_labels(tmp_path):
    good = tmp_path / "emb.npy"
    np.save(good, np.arange(12, dtype=np.float64).reshape(4, 3))
    emb = data.load_label_embeddings(good, LABELS)
    assert emb.dtype == np.float32 and emb.shape == (4, 3)
    with pytest.raises(data.DataError, match=r"shape \(4, 3\), expected \(5, d\)"):
        data.load_label_embeddings(good, LABELS + ["sea"])
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_label_embeddings(tmp_path / "none.npy", LABELS)


def test_shared_glove_vectors_match_label_count(shared_dir):
    labels = (shared_dir / "data" / "mirflickr25k" / "labels.txt").read_text().split()
    emb = data.load_label_embeddings(shared_dir / "data" / "label_embeddings" / "mirflickr-glove6B.npy", labels)
    assert emb.shape == (24, 300) and np.isfinite(emb).all()


def test_onehot_fallback_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dagnn_export.data"):
        emb = data.label_embeddings_or_onehot(None, LABELS)
    np.testing.assert_array_equal(emb, np.eye(4, dtype=np.float32))
    assert any("one-hot" in r.message for r in caplog.records)
    caplog.clear()
    path = tmp_path / "emb.npy"
    np.save(path, np.ones((4, 2), dtype=np.float32))
    with caplog.at_level(logging.WARNING, logger="dagnn_export.data"):
        assert data.label_embeddings_or_onehot(path, LABELS).shape == (4, 2)
    assert not caplog.records
