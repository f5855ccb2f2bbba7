"""The index, query, tag and eval commands end to end on a factory bundle: happy paths and the errors users hit."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import dagnn_runtime as dr
from dagnn_cli.main import app
from dagnn_runtime.dataset import Dataset, bag_of_words
from dagnn_runtime.metrics import cross_modal_map, tagging_metrics
from bundle_factory import build_bundle, bundle_dir, data_dir, model  # noqa: F401

runner = CliRunner()


def run_ok(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def run_fail(*args, match):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0] == lines[-1] and errors[0].startswith("error: "), result.stderr
    assert match in errors[0], errors[0]
    return errors[0]


def run_json(*args):
    return json.loads(run_ok(*args, "--json").stdout)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, bundle_dir, data_dir):
    out = tmp_path_factory.mktemp("idx") / "index"
    run_ok("index", "build", "--bundle", bundle_dir, "--data", data_dir, "--out", out, "--quiet")
    return out


def test_build_from_data_makes_an_image_and_a_text_index(index_dir, data_dir, bundle_dir):
    infos = {i["modality"]: i for i in run_json("index", "info", "--index", index_dir)}
    ds = Dataset.load(data_dir)
    assert infos["image"]["items"] == len(ds.with_images()) == 24
    assert infos["text"]["items"] == len(ds.pairs) == 28
    assert infos["image"]["embedding_space"] == dr.load(bundle_dir).embedding_space
    # re-running skips what is there
    again = run_json("index", "build", "--bundle", bundle_dir, "--data", data_dir, "--out", index_dir, "--quiet")
    assert [(r["added"], r["already_present"]) for r in again] == [(0, 24), (0, 28)]
    table = run_ok("index", "info", "--index", index_dir / "text").stdout
    assert "text" in table and "28" in table


def test_query_image_to_text_matches_the_runtime(index_dir, data_dir, bundle_dir, model):
    image = data_dir / "images" / "im3.jpg"
    out = run_json("query", "--bundle", bundle_dir, "--index", index_dir, "--image", image, "--k", 5)
    assert out["target"] == "text" and len(out["results"]) == 5
    hits = dr.open_index(index_dir / "text").search(model.encode_images([image]), k=5)[0]
    assert [r["id"] for r in out["results"]] == [h.id for h in hits]
    np.testing.assert_allclose([r["score"] for r in out["results"]], [h.score for h in hits], atol=1e-6)
    assert out["results"][0]["metadata"] == hits[0].metadata and "tags" in hits[0].metadata
    assert "labels" in hits[0].metadata
    table = run_ok("query", "--bundle", bundle_dir, "--index", index_dir, "--image", image, "--k", 3).stdout
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    rows = lines[header + 2:]  # under the header and its rule: one line per hit, best first, columns aligned
    assert len(rows) == 3 and [row.split()[2] for row in rows] == [h.id for h in hits[:3]]
    score_at = lines[header].index("score")
    assert all(row[score_at:].startswith(f"{h.score:.4f}") for row, h in zip(rows, hits))


def test_query_text_to_image_and_explicit_target(index_dir, bundle_dir, model):
    out = run_json("query", "--bundle", bundle_dir, "--index", index_dir, "--text", "sea, beach", "--k", 4)
    assert out["target"] == "image" and out["query"] == {"text": "sea, beach"}
    assert all(r["metadata"]["path"].endswith(".jpg") for r in out["results"])
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    same = run_json("query", "--bundle", bundle_dir, "--index", index_dir, "--text", "sea beach", "--target", "text",
                    "--exact", "--k", 3)
    assert same["target"] == "text" and same["results"][0]["metadata"]["tags"]
    expected = [h.id for h in dr.open_index(index_dir / "text").search(model.encode_texts(["sea beach"]), k=3,
                                                                        exact=True)[0]]
    assert [r["id"] for r in same["results"]] == expected
    # unknown tags next to known ones are ignored with a note
    noted = runner.invoke(app, ["query", "--bundle", str(bundle_dir), "--index", str(index_dir), "--text",
                                "sea, zzzz", "--json"])
    assert noted.exit_code == 0 and "ignoring tags not in the vocabulary: zzzz" in noted.stderr


def test_query_errors(index_dir, bundle_dir, data_dir, tmp_path):
    run_fail("query", "--bundle", bundle_dir, "--index", index_dir, "--text", "clowds", match="closest: clouds")
    run_fail("query", "--bundle", bundle_dir, "--index", index_dir, "--text", " , ", match="is empty")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    run_fail("query", "--bundle", bundle_dir, "--index", index_dir, "--image", broken, match="broken.jpg")
    run_fail("query", "--bundle", bundle_dir, "--index", index_dir, "--image", tmp_path / "none.jpg",
             match="none.jpg': no such file")
    run_fail("query", "--bundle", bundle_dir, "--index", index_dir, match="exactly one of --image")
    run_fail("query", "--bundle", bundle_dir, "--index", tmp_path / "noindex", "--text", "sky", match="no index at")
    run_fail("query", "--bundle", bundle_dir, "--index", index_dir / "text", "--text", "sky", "--target", "image",
             match="holds text items")
    run_fail("query", "--bundle", tmp_path / "nobundle", "--index", index_dir, "--text", "sky",
             match="no such file or directory")
    other = build_bundle(tmp_path / "other", seed=3)
    run_fail("query", "--bundle", other, "--index", index_dir, "--text", "sky", match="rebuild the index")


def test_add_remove_and_resume(tmp_path, bundle_dir, data_dir):
    photos = tmp_path / "photos"
    shutil.copytree(data_dir / "images", photos)
    out = tmp_path / "idx"
    first = run_json("index", "build", "--bundle", bundle_dir, "--images", photos, "--out", out, "--quiet")
    assert first[0]["added"] == 24 and (out / "index.db").is_file()
    # new photos appear, one of them corrupt: re-running adds only the new readable one, warns about the other
    shutil.copy(photos / "im0.jpg", photos / "new.jpg")
    (photos / "bad.jpg").write_bytes(b"garbage")
    result = runner.invoke(app, ["index", "build", "--bundle", str(bundle_dir), "--images", str(photos),
                                 "--out", str(out), "--quiet", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)[0]
    assert (report["added"], report["already_present"], report["skipped"]) == (1, 24, 1)
    assert "bad.jpg" in result.stderr and "warning: skipped" in result.stderr
    # a text file into an index folder of its own, with `index add`
    texts = tmp_path / "texts.txt"
    texts.write_text("a1\tsky, clouds\n\nsea beach\nqqq\n")
    run_fail("index", "add", "--bundle", bundle_dir, "--index", tmp_path / "tidx", "--texts", texts,
             match="no text index at")
    built = run_json("index", "build", "--bundle", bundle_dir, "--texts", texts, "--out", tmp_path / "tidx",
                     "--quiet")[0]
    assert (built["added"], built["skipped"]) == (2, 1)
    assert sorted(dr.open_index(tmp_path / "tidx").ids) == ["3", "a1"]
    run_fail("index", "add", "--bundle", bundle_dir, "--index", out, "--texts", texts, match="holds image items")
    present = run_json("index", "add", "--bundle", bundle_dir, "--index", out, "--images", photos / "im5.jpg")[0]
    assert (present["added"], present["already_present"]) == (0, 1)  # a single file's id is its name
    (tmp_path / "extra").mkdir()
    shutil.copy(photos / "im5.jpg", tmp_path / "extra" / "pic.png")
    added = run_json("index", "add", "--bundle", bundle_dir, "--index", out, "--images", tmp_path / "extra")[0]
    assert (added["added"], added["items"]) == (1, 26)
    # remove
    run_ok("index", "remove", "--index", out, "new.jpg", "im1.jpg")
    ix = dr.open_index(out)
    assert "new.jpg" not in ix and "im1.jpg" not in ix and "im2.jpg" in ix
    run_fail("index", "remove", "--index", out, "im2.jpg", "ghost", match="'ghost' is not in")
    assert "im2.jpg" in dr.open_index(out)


def test_build_errors(tmp_path, bundle_dir, data_dir):
    run_fail("index", "build", "--bundle", bundle_dir, "--out", tmp_path / "x", match="exactly one of --data")
    run_fail("index", "build", "--bundle", bundle_dir, "--images", tmp_path / "nothing", "--out", tmp_path / "x",
             match="does not exist")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"nope")
    run_fail("index", "build", "--bundle", bundle_dir, "--images", tmp_path / "junk", "--out", tmp_path / "x",
             "--quiet", match="nothing could be added")
    assert not (tmp_path / "x").exists()
    run_fail("index", "build", "--bundle", bundle_dir, "--data", tmp_path / "junk", "--out", tmp_path / "x",
             match="missing file")
    run_fail("index", "info", "--index", tmp_path / "junk", match="no index at")


def test_tag(bundle_dir, data_dir, model):
    images = [data_dir / "images" / "im0.jpg", data_dir / "images" / "im4.jpg"]
    out = run_json("tag", "--bundle", bundle_dir, "--image", images[0], "--image", images[1])
    expected = model.labels_above_threshold(model.score_labels(model.encode_images(images)))
    assert [[(x["label"], pytest.approx(x["score"], abs=1e-6)) for x in r["labels"]] for r in out] == expected
    thresholds = dict(zip(model.labels, model.thresholds))
    assert all(x["score"] >= thresholds[x["label"]] == pytest.approx(x["threshold"]) for r in out for x in r["labels"])
    top = run_json("tag", "--bundle", bundle_dir, "--image", images[0], "--top", 1)
    assert len(top[0]["labels"]) == min(1, len(expected[0]))
    assert expected[0][0][0] in run_ok("tag", "--bundle", bundle_dir, "--image", images[0]).stdout
    run_fail("tag", "--bundle", bundle_dir, "--image", data_dir / "pairs.jsonl", match="pairs.jsonl")


def test_eval_with_a_bundle_matches_the_metrics_module(bundle_dir, data_dir, model):
    out = run_json("eval", "--bundle", bundle_dir, "--data", data_dir, "--k", 3, "--quiet")
    ds = Dataset.load(data_dir)
    test = ds.splits().test
    img = model.encode_images([ds.image_path(i) for i in test])
    txt = model.encode_bow(bag_of_words([ds.pairs[i].tags for i in test], {t: j for j, t in enumerate(model.vocab)}))
    y = ds.label_matrix(test)
    expected = cross_modal_map(img, txt, y)
    assert out["split"] == "test" and out["n"] == len(test) == 8
    for key in ("i2t", "t2i", "avg"):
        assert out[key] == pytest.approx(expected[key], abs=1e-9)
    assert out["map_at_k"] == pytest.approx({"k": 3, **cross_modal_map(img, txt, y, k=3)})
    tagging = tagging_metrics(model.score_labels(img), y, model.thresholds)
    assert out["tagging"]["OF1"] == pytest.approx(tagging["OF1"]) and out["tagging"]["CF1"] == pytest.approx(tagging["CF1"])
    table = run_ok("eval", "--bundle", bundle_dir, "--data", data_dir, "--quiet").stdout
    assert "I2T mAP" in table and "bundle claims" in table and f"{expected['i2t']:.4f}" in table


def test_eval_errors(bundle_dir, data_dir, tmp_path):
    run_fail("eval", "--bundle", bundle_dir, match="give --bundle B --data DIR")
    run_fail("eval", "--bundle", bundle_dir, "--data", data_dir, "--split", "dev", match="--split must be")
    run_fail("eval", "--run", tmp_path, "--bundle", bundle_dir, match="not both")
    # --run: a missing run directory (or, without torch, the missing extra) is one clear line
    run_fail("eval", "--run", tmp_path / "norun", match="norun" if _has_torch() else "[train] extra")


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_console_errors_are_one_line_unless_debug(bundle_dir, index_dir):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("DAGNN_DEBUG", None)
    args = [sys.executable, "-m", "dagnn_cli", "query", "--bundle", str(bundle_dir), "--index", str(index_dir),
            "--text", "clowds"]
    plain = subprocess.run(args, capture_output=True, text=True, env=env)
    assert plain.returncode == 1
    assert plain.stderr.strip().splitlines() == [
        "error: text 'clowds': no tag is in the bundle vocabulary of 20 tags: 'clowds' (closest: clouds)"]
    debug = subprocess.run(args[:3] + ["--debug"] + args[3:], capture_output=True, text=True,
                           env=dict(env, TYPER_STANDARD_TRACEBACK="1"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "InputError" in debug.stderr


def test_cli_import_does_not_pull_torch():
    code = "import sys, dagnn_cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_console_entry_point_registers_every_command(tmp_path):
    """``dagnn`` runs ``dagnn_cli.app:main``, which must register the commands itself."""
    code = "import sys; from dagnn_cli.app import main; main(sys.argv[1:])"
    listed = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert listed.returncode == 0
    assert all(name in listed.stdout for name in ("index", "query", "tag", "eval", "train", "export", "demo"))
    missing = subprocess.run([sys.executable, "-c", code, "index", "info", "--index", str(tmp_path)],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.strip().startswith(f"error: no index at {tmp_path}")
