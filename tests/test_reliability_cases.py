"""The rows of docs/reliability.md, each run for real: hostile images, texts, bundles, JSON and options.

A row is a `dagnn …` command (run through typer's CliRunner on the shared app) or a Python call (run
in-process). "exit 1" for a Python call means it raised the `DagnnError` shown — what the CLI prints as
`error: …` with exit 1; any other exception fails the test, so nothing escapes as a traceback.
`{img}` is a folder of hostile images (tests/hostile.py), `{b}` one of bundles.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from hostile import make_images, tampered_bundles  # noqa: E402

from dagnn_runtime.errors import DagnnError  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
LOAD = "import dagnn_runtime as dr; m = dr.load('{b}/good')"

# id: (command, exit code, message regex, what "nothing lost" means for this row, checked where it applies)
ROWS = {
    "R01": (f"{LOAD}; m.encode_images(['{{img}}/corrupt.jpg'])", 1,
            r"image '.*/corrupt\.jpg': cannot decode \(not an image in a supported format\)"),
    "R02": (f"{LOAD}; m.encode_images(['{{img}}/truncated.jpg'])", 1,
            r"image '.*/truncated\.jpg': cannot decode \(image file is truncated"),
    "R03": (f"{LOAD}; m.encode_images(['{{img}}/empty.jpg'])", 1,
            r"image '.*/empty\.jpg': cannot decode \(not an image in a supported format\)"),
    "R04": (f"{LOAD}; m.encode_images(['{{img}}/cmyk.jpg'])", 0, None),
    "R05": ("from dagnn_runtime.preprocess import load_image as f; "
            "assert (f('{img}/grey16.png') == f('{img}/grey8.png')).all()", 0, None),
    "R06": ("from dagnn_runtime.preprocess import load_image as f; "
            "assert (f('{img}/float.tif') == f('{img}/grey8.png')).all()", 0, None),
    "R07": (f"{LOAD}; m.encode_images(['{{img}}/palette.png'])", 0, None),
    "R08": ("from dagnn_runtime.preprocess import load_image as f; import numpy as np; from PIL import Image; "
            "a = f('{img}/animated.gif').astype(int); b = f(Image.open('{img}/ok.png')).astype(int); "
            "assert np.abs(a - b).mean() < 12", 0, None),
    "R09": ("from dagnn_runtime.preprocess import load_image as f; import numpy as np; "
            "a = f('{img}/rotated.jpg').astype(int); b = f('{img}/ok.jpg').astype(int); "
            "assert np.abs(a - b).mean() < 3", 0, None),
    "R10": (f"{LOAD}; m.encode_images(['{{img}}/strip20000.png'])", 1,
            r"image '.*/strip20000\.png': 20000x1 is more elongated than 20:1"),
    "R11": (f"{LOAD}; m.encode_images(['{{img}}/strip100000.png'])", 1,
            r"image '.*/strip100000\.png': 100000x1 is more elongated than 20:1"),
    "R12": (f"{LOAD}; m.encode_images(['{{img}}/bomb.png'])", 1,
            r"image '.*/bomb\.png': too many pixels, refused as a decompression bomb"),
    "R13": (f"{LOAD}; m.encode_images(['{{img}}/over_budget.png'])", 1,
            r"image '.*/over_budget\.png': 9000x8000 is 72 megapixels, more than the limit of 64"),
    "R14": (f"{LOAD}; m.encode_images(['{{img}}/folder.jpg'])", 1,
            r"image '.*/folder\.jpg': is a directory, not an image file"),
    "R15": (f"{LOAD}; m.encode_images(['{{img}}/fifo.jpg'])", 1,
            r"image '.*/fifo\.jpg': is not a regular file"),
    "R16": (f"{LOAD}; m.encode_images(['{{img}}/missing.jpg'])", 1, r"image '.*/missing\.jpg': no such file"),
    "R17": (f"{LOAD}; import os; m.encode_images([os.fsdecode(b'{{img}}/caf\\xe9.jpg')])", 1,
            r"image '.*/caf\\udce9\.jpg': cannot decode"),
    "R18": (f"{LOAD}; m.encode_images(['{{img}}/ok.jpg', '{{img}}/corrupt.jpg'])", 1,
            r"^item 1: image '.*/corrupt\.jpg': cannot decode"),
    "R19": (f"{LOAD}; m.encode_texts(['sky ' * 25000])", 1,
            r"^text 'sky sky .{40,80}' \(100000 characters\) is too long: at most 10000 characters and 512 tags$"),
    "R20": (f"{LOAD}; m.encode_texts([' '.join(f't{{{{i}}}}' for i in range(600))])", 1,
            r"^text 't0 t1 t2 .*' \(\d+ characters\) has 600 distinct tags, more than the limit of 512$"),
    "R21": (f"{LOAD}; m.encode_texts(['x' * 5000 + ', qqq'])", 1,
            r"^text 'xxx.*' \(5005 characters\): no tag is in the bundle vocabulary of 20 tags: 'xxx.*' "
            r"\(5000 characters\) \(no close tag\); 'qqq' \(no close tag\)$"),
    "R22": ("dagnn info --bundle {b}/tampered", 1,
            r"^error: bundle .*/tampered: file 'image_encoder\.onnx' does not match its SHA-256 in manifest\.json"),
    "R23": ("dagnn info --bundle {b}/missing", 1,
            r"^error: bundle .*/missing: missing file 'classifiers\.npy' \(listed in manifest\.json\)"),
    "R24": ("dagnn info --bundle {b}/duplicated.dagnn", 1,
            r"^error: bundle .*/duplicated\.dagnn: member 'manifest\.json' appears twice in the archive"),
    "R25": ("dagnn info --bundle {b}/unlisted.dagnn", 1,
            r"^error: bundle .*/unlisted\.dagnn: member 'payload\.bin' is not listed in manifest\.json 'files'"),
    "R26": ("dagnn info --bundle {b}/zipbomb.dagnn", 1,
            r"^error: bundle .*/zipbomb\.dagnn: member 'extra\.bin' expands \d+ bytes to 314572800 "
            r"\(more than 200:1, a zip bomb\?\)"),
    "R27": ("dagnn info --bundle {b}/swapped", 1,
            r"^error: bundle .*/swapped: manifest\.json was changed after export \(its bundle_digest does not match"),
    "R28": ("dagnn info --bundle {b}/thresholds_minus1", 1,
            r"^error: bundle .*/thresholds_minus1: manifest\.json was changed after export"),
    "R29": ("dagnn info --bundle {b}/thresholds_5", 1,
            r"^error: bundle .*/thresholds_5: manifest\.json field 'thresholds\.values\[0\]' \(label 'animals'\) "
            r"is 5\.0: a threshold is a cosine in \[-1, 1\]"),
    "R30": ("dagnn info --bundle {b}/extra_label", 1,
            r"^error: bundle .*/extra_label: manifest\.json field 'classifiers\.shape' is \[6, 16\], but there "
            r"are 7 labels"),
    "R31": ("dagnn info --bundle {b}/deep", 1,
            r"^error: bundle .*/deep: manifest\.json: JSON nested 100000 levels deep, more than the limit of 64$"),
    "R32": ("dagnn info --bundle {b}/dupkey", 1,
            r"^error: bundle .*/dupkey: manifest\.json: not valid JSON \(duplicate key 'labels'\)$"),
    "R33": ("import dagnn_runtime as dr; dr.load('{b}/good', expect_digest='0' * 64)", 1,
            r"^bundle .*/good: its digest [0-9a-f]{64} is not the expected 0{64}$"),
    "R34": ("dagnn info --bundle {b}/old_export", 0, r"no self-check \(exported before bundle_digest existed\)"),
    "R35": ("import dagnn_runtime as dr; dr.load('{b}/good', threads=2000)", 1,
            r"^threads=2000 is more than the \d+ cores of this machine \(force=True or DAGNN_FORCE_THREADS=1 "
            r"allows up to 1024\)$"),
    "R36": ("from dagnn_runtime.dataset import Dataset; Dataset.load('{b}/data_deep')", 1,
            r"^.*/data_deep/pairs\.jsonl:2: JSON nested 5000 levels deep, more than the limit of 64$"),
    "R37": ("from dagnn_runtime.dataset import Dataset; Dataset.load('{b}/data_str').splits()", 1,
            r"^.*/data_str/split_test\.json: expected \{\"test\": \[row, \.\.\.\]\} with integer rows$"),
    "R42": ("dagnn query --bundle {b}/relabelled --index {b}/index_good --text sky", 1,
            r"^error: index .*/index_good was built with bundle [0-9a-f]{8}…[0-9a-f]{4}, not with bundle "
            r".*/relabelled \([0-9a-f]{8}…[0-9a-f]{4}\): what changed is unknown, but the digest covers labels, "
            r"thresholds and preprocessing; rebuild the index with this bundle, or load the one it was built "
            r"with \(--expect-digest; `dagnn index info` shows it\)$"),
    "R43": ("dagnn info --bundle {b}/weights_tampered", 1,
            r"^error: bundle .*/weights_tampered: file 'text_encoder\.onnx\.data' does not match its SHA-256"),
    "R44": ("import dagnn_runtime as dr; dr.load('{b}/weights_unlisted').encode_texts(['sky'])", 1,
            r"^bundle .*/weights_unlisted: onnxruntime cannot load 'text_encoder\.onnx' \(.*External data path"),
}
# Rows whose command needs more than a folder of files live in test_reliability_atomic.py.
ATOMIC_ROWS = ("R38", "R39", "R40", "R41")


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    img = make_images(tmp_path_factory.mktemp("img"))
    b = tampered_bundles(tmp_path_factory.mktemp("bundles"))
    for name, pairs_line, split in (("data_deep", "[" * 5000 + "]" * 5000, '{"test": [0]}'),
                                    ("data_str", None, '"test"')):
        d = b / name
        d.mkdir()
        (d / "labels.txt").write_text("sky\n")
        (d / "tag_vocab.txt").write_text("blue\n")
        first = '{"row": 0, "image": "a.jpg", "tags": ["blue"], "labels": ["sky"]}'
        (d / "pairs.jsonl").write_text(first + "\n" + (pairs_line or first.replace('"row": 0', '"row": 1')) + "\n")
        (d / "split_test.json").write_text(split)
    import dagnn_runtime as dr

    good = dr.load(b / "good")  # an index built with the good bundle, for R42
    index = dr.open_index(b / "index_good", model=good, modality="image", create=True)
    index.add(good.encode_texts(["sky"]), ["a"])
    index.close()
    return {"img": str(img), "b": str(b)}


def run_row(command: str, places: dict) -> tuple[int, str]:
    """(exit code, message) of one table row."""
    command = command.format(**places)
    if command.startswith("dagnn "):
        import shlex

        import dagnn_cli.main  # noqa: F401  (registers every command)
        from dagnn_cli.app import app

        result = CliRunner().invoke(app, shlex.split(command)[1:])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output.strip()
    try:
        exec(command, {})  # noqa: S102 - the table's own commands
    except DagnnError as exc:
        return 1, str(exc)
    return 0, ""


@pytest.mark.parametrize("row", sorted(ROWS))
def test_row(row, places):
    command, code, message = ROWS[row]
    got_code, got_message = run_row(command, places)
    assert got_code == code, got_message
    if message:
        assert re.search(message, got_message), got_message
    if code == 1:
        assert "\n" not in got_message and len(got_message) < 400, got_message


def _table_rows() -> dict:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\|\s*(R\d\d)\s*\|.*\|\s*(\d)\s*\|[^|]*\|[^|]*\|\s*$", line)
        if match:
            rows[match.group(1)] = int(match.group(2))
    return rows


def test_every_table_row_has_a_test_and_the_same_exit_code():
    table = _table_rows()
    assert len(table) >= 30
    tested = {row: code for row, (_, code, _) in ROWS.items()}
    assert set(table) == set(tested) | set(ATOMIC_ROWS)
    for row, code in tested.items():
        assert table[row] == code, row


def test_the_16bit_comparison_is_not_trivial(places):
    """R05 would pass vacuously if both images were blank: they are not, and Pillow alone gets it wrong."""
    from PIL import Image

    from dagnn_runtime.preprocess import load_image

    a = load_image(os.path.join(places["img"], "grey16.png"))
    assert a.std() > 20
    naive = np.asarray(Image.open(os.path.join(places["img"], "grey16.png")).convert("RGB"))
    assert (naive == 255).mean() > 0.9  # what the old decoder produced: almost all white
