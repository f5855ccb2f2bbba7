"""The README's Python example runs as written: a factory bundle in bundle/, real demo photos in photos/."""
import re
import shutil
from pathlib import Path

from bundle_factory import build_bundle

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "dagnn_export" / "demo" / "data" / "mirflickr-mini" / "images"


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Python API\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert "dr.Searcher" in code and "dr.ingest" in code and "dr.open_index" in code
    build_bundle(tmp_path / "bundle")
    (tmp_path / "photos").mkdir()
    chosen = sorted(PHOTOS.glob("*.jpg"))[:6]
    assert len(chosen) == 6, f"demo photos missing under {PHOTOS}"
    for photo in chosen:
        shutil.copy(photo, tmp_path / "photos" / photo.name)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a photo")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "6 photos added, 6 in the index, 1 unreadable skipped"
    photos = re.escape(str(tmp_path / "photos"))  # stored relative to the index, given back absolute
    assert len(out) == 5 and all(re.fullmatch(rf"-?\d\.\d{{3}}  {photos}/im\d+\.jpg", line) for line in out[1:4])
    assert out[4].startswith(out[1].split()[1] + " ")
    assert (tmp_path / "photos-index" / "index.db").is_file()
    # running it again resumes: nothing new to add, same index; the line tells the two counts apart
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.splitlines()[0] == "0 photos added, 6 in the index, 1 unreadable skipped"
