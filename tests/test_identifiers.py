"""Item ids are text a person reads (issue 24): one spelling per id (Unicode NFC, so the precomposed and the
decomposed "é" are one item), no character that hides or rearranges what is shown (controls, bidi
overrides, zero-width and other format characters, surrogates, private-use and unassigned code points),
and the CLI never prints such a character raw, wherever it comes from (ids, paths, tags, labels)."""
import json
import unicodedata

import numpy as np
import pytest
from typer.testing import CliRunner

import dagnn_runtime as dr
from bundle_factory import bundle_dir, model  # noqa: F401  (fixtures)
from dagnn_cli import render
from dagnn_cli.main import app
from dagnn_runtime.engine import LabelScore, SearchResult, TagResult
from dagnn_runtime.indexes import open_index
from dagnn_runtime.indexes.hnsw import HnswIndex
from dagnn_runtime.indexes.inputs import item_key, item_keys
from dagnn_runtime.indexes.milvus_schema import MAX_ID_BYTES

runner = CliRunner()

NFC, NFD = "caf\u00e9", "cafe\u0301"
BAD = {  # one of each class the ids refuse, by what it is
    "NUL": "\x00", "BEL": "\x07", "ESC": "\x1b", "DEL": "\x7f", "C1 NEL": "\x85", "C1 CSI": "\x9b",
    "tab": "\t", "line feed": "\n", "carriage return": "\r",
    **{f"bidi U+{c:04X}": chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]},
    "zero-width space": "\u200b", "ZWNJ": "\u200c", "ZWJ": "\u200d", "word joiner": "\u2060", "BOM": "\ufeff",
    "soft hyphen": "\u00ad", "language tag": "\U000e0001", "lone surrogate": "\udcff",
    "private use": "\ue000", "private use plane 15": "\U000f0000", "unassigned": "\u0378",
    "noncharacter": "\uffff", "line separator": "\u2028", "paragraph separator": "\u2029",
}
GOOD = ["plain-id_1.jpg", "日本語", "naïve café", "a b", "x\u00a0y", "📷 photo", "Ελληνικά/κείμενο", "עברית",
        "العربية", "a\u0301\u0302", "100%", 42, np.int64(7)]


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _check_refusal(exc, ch: str) -> None:
    message = str(exc)
    assert f"U+{ord(ch):04X}" in message, message
    assert "ids may hold letters, marks, numbers, punctuation, symbols and spaces" in message
    assert "\n" not in message and message.isprintable(), repr(message)  # quoted escaped, never raw


# ---- the rule, at every entry of every backend ---------------------------------------------------------------
@pytest.mark.parametrize("name", BAD)
def test_ids_with_a_control_or_format_character_are_refused_naming_it(name):
    ch = BAD[name]
    for item_id in (ch, f"a{ch}b", f"photo{ch}.jpg", f"{NFD}{ch}"):
        with pytest.raises(dr.InputError) as err:
            item_key(item_id)
        _check_refusal(err.value, ch)
    index = HnswIndex(8, "space", modality="text")
    with pytest.raises(dr.InputError) as err:
        index.add(_vectors(2), ["fine", f"x{ch}"])
    _check_refusal(err.value, ch)
    assert len(index) == 0  # all-or-nothing: the good id was not added either
    index.add(_vectors(1), ["fine"])
    for lookup in (lambda: index.present([f"x{ch}"]), lambda: index.metadata(f"x{ch}"),
                   lambda: index.remove([f"x{ch}"]), lambda: f"x{ch}" in index):
        with pytest.raises(dr.InputError, match=f"U\\+{ord(ch):04X}"):
            lookup()
    assert index.ids == ["fine"]


@pytest.mark.parametrize("item_id", GOOD, ids=repr)
def test_letters_marks_symbols_and_spaces_stay_allowed(item_id):
    key = item_key(item_id)
    assert key == unicodedata.normalize("NFC", str(item_id))
    index = HnswIndex(8, "space")
    index.add(_vectors(1), [item_id], [{"n": 1}])
    assert item_id in index and index.metadata(item_id) == {"n": 1} and index.ids == [key]


def test_the_byte_limit_stays_and_counts_the_nfc_spelling():
    with pytest.raises(dr.InputError, match=f"longer than {MAX_ID_BYTES} bytes"):
        item_key("a" * (MAX_ID_BYTES + 1), MAX_ID_BYTES)
    assert item_key("a" * MAX_ID_BYTES, MAX_ID_BYTES) == "a" * MAX_ID_BYTES
    # 3 bytes a letter decomposed, 2 composed: what is stored (and counted) is the composed form
    n = MAX_ID_BYTES // 2
    assert item_key("e\u0301" * n, MAX_ID_BYTES) == "\u00e9" * n
    with pytest.raises(dr.InputError, match="longer than"):
        item_key("\u00e9" * (n + 1), MAX_ID_BYTES)
    with pytest.raises(dr.InputError, match="must not be empty"):
        item_key("")
    with pytest.raises(dr.InputError, match="must be strings"):
        item_key(True)
    assert item_keys(NFD) == [NFC] and item_keys([NFD, "b"]) == [NFC, "b"]


# ---- NFC and NFD are one item ------------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "store"])
def index(request, tmp_path):
    index = HnswIndex(8, "space", modality="text", location=None if request.param == "memory" else tmp_path / "ix")
    yield index
    index.close()


def test_the_nfd_spelling_finds_the_item_added_as_nfc(index):
    index.add(_vectors(2), [NFC, "other"], [{"n": 1}, {"n": 2}])
    assert index.present([NFD, "missing"]) == {NFD}
    assert NFD in index and index.metadata(NFD) == {"n": 1}
    with pytest.raises(dr.InputError, match="already in the index"):
        index.add(_vectors(1, seed=1), [NFD])
    hits = index.search(_vectors(1), k=2)[0]
    assert {h.id for h in hits} == {NFC, "other"}  # given back in the one stored spelling
    index.remove([NFD])
    assert NFC not in index and len(index) == 1 and index.ids == ["other"]


def test_the_two_spellings_in_one_addition_are_a_duplicate(index):
    with pytest.raises(dr.InputError, match="appears twice"):
        index.add(_vectors(2), [NFC, NFD])
    assert len(index) == 0


def test_an_id_added_as_nfd_is_stored_as_nfc(index, tmp_path):
    index.add(_vectors(1), [NFD], [{"n": 3}])
    assert index.ids == [NFC] and index.metadata(NFC) == {"n": 3}
    if index.location is not None:
        index.save()
        again = open_index(index.location)
        try:
            assert again.ids == [NFC] and again.metadata(NFD) == {"n": 3}
        finally:
            again.close()


# ---- the CLI: refused on the way in, escaped on the way out ---------------------------------------------------
def _one_error(result) -> str:
    assert result.exit_code not in (0, None), result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# (U+0085, U+2028 and U+2029 never reach an id from a texts file: its reader splits lines on them)
@pytest.mark.parametrize("ch", ["\x1b", "\x7f", "\x9b", "\u202e", "\u2066", "\u200b", "\ufeff", "\ue000",
                                "\u0378"], ids=lambda c: f"U+{ord(c):04X}")
def test_index_build_from_a_texts_file_refuses_a_bad_id(tmp_path, bundle_dir, ch):
    texts = tmp_path / "texts.txt"
    texts.write_text(f"good\tsky, clouds\nbad{ch}[31mid\tsea, beach\n", encoding="utf-8")
    result = runner.invoke(app, ["index", "build", "--bundle", str(bundle_dir), "--texts", str(texts),
                                 "--out", str(tmp_path / "idx"), "--quiet"])
    line = _one_error(result)
    assert f"U+{ord(ch):04X}" in line and ch not in line


def test_index_build_from_a_texts_file_stores_nfc_ids(tmp_path, bundle_dir):
    texts = tmp_path / "texts.txt"
    texts.write_text(f"{NFD}\tsky, clouds\n", encoding="utf-8")
    result = runner.invoke(app, ["index", "build", "--bundle", str(bundle_dir), "--texts", str(texts),
                                 "--out", str(tmp_path / "idx"), "--quiet"])
    assert result.exit_code == 0, result.stderr
    texts.write_text(f"{NFC}\tsky, clouds\n", encoding="utf-8")  # the same item: already present
    result = runner.invoke(app, ["index", "build", "--bundle", str(bundle_dir), "--texts", str(texts),
                                 "--out", str(tmp_path / "idx"), "--quiet", "--json"])
    assert result.exit_code == 0, result.stderr
    assert [(r["added"], r["already_present"]) for r in json.loads(result.stdout)] == [(0, 1)]
    ix = open_index(tmp_path / "idx")
    try:
        assert ix.ids == [NFC]
    finally:
        ix.close()


HOSTILE = "red\x1b[31mALERT\x1b[0m\u202egpj.exe\u200b"
SHOWN = "red\\x1b[31mALERT\\x1b[0m\\u202egpj.exe\\u200b"


def _raw_free(text: str) -> None:
    for ch in ("\x1b", "\u202e", "\u200b", "\x9b"):
        assert ch not in text, repr(text)


def test_render_escapes_ids_paths_tags_and_labels_in_every_table_and_line(capsys):
    hit = dr.Hit(HOSTILE, 0.5, {"path": f"/photos/{HOSTILE}.jpg", "labels": [HOSTILE]})
    text_hit = dr.Hit("t1", 0.4, {"tags": [HOSTILE, "sky"]})
    render.search_result(SearchResult("text", "image", HOSTILE, [], [hit, text_hit], HOSTILE, 1.0), 2, 2, False)
    best = LabelScore(HOSTILE, 0.1, 0.5)
    render.tag_results([TagResult(HOSTILE, [], best, [best])], False)
    render.tag_results([TagResult(HOSTILE, [LabelScore(HOSTILE, 0.9, 0.5, True)], best, [])], False)
    render.index_infos([{"path": HOSTILE, "modality": "image", "items": 1, "removed": 0, "dim": 8, "M": 16,
                         "ef": 64, "embedding_space": "0" * 64, "bundle_digest": None}], False)
    render.note(f"warning: skipped {HOSTILE}")
    out, err = capsys.readouterr()
    _raw_free(out + err)
    assert out.count(SHOWN) >= 8 and SHOWN in err


def test_json_output_escapes_what_json_itself_leaves_raw(capsys):
    value = HOSTILE + "\x9b\u2028\U000f0000\udcff é"
    render.echo_json({"id": value, "labels": [value]})
    out = capsys.readouterr().out
    _raw_free(out)
    assert "\u2028" not in out and "\udcff" not in out and "\U000f0000" not in out and " é" in out
    assert json.loads(out) == {"id": value, "labels": [value]}


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def test_cli_tables_show_hostile_paths_and_labels_escaped(tmp_path, bundle_dir, model):
    from hostile import photo
    from PIL import Image

    folder = tmp_path / f"in{HOSTILE}"
    folder.mkdir()
    image = folder / f"{HOSTILE}.jpg"
    Image.fromarray(photo()).save(image, quality=95)
    tagged = runner.invoke(app, ["tag", "--bundle", str(bundle_dir), "--image", str(image)])
    assert tagged.exit_code == 0, tagged.stderr
    _raw_free(tagged.stdout + tagged.stderr)
    assert SHOWN in tagged.stdout

    ix = open_index(folder / "index" / "image", model=model, modality="image", create=True)
    ix.add(model.encode_images([str(image)]), ["p1"], [{"path": str(image), "labels": [HOSTILE]}])
    ix.save()
    ix.close()
    for args in (["query", "--bundle", str(bundle_dir), "--index", str(folder / "index"), "--text", "sky",
                  "--target", "image"], ["index", "info", "--index", str(folder / "index")]):
        shown = runner.invoke(app, args)
        assert shown.exit_code == 0, shown.stderr
        _raw_free(shown.stdout + shown.stderr)
        assert SHOWN in shown.stdout
        as_json = runner.invoke(app, [*args, "--json"])
        assert as_json.exit_code == 0, as_json.stderr
        _raw_free(as_json.stdout)
        assert any(HOSTILE in text for text in _strings(json.loads(as_json.stdout)))  # escaped, not changed
