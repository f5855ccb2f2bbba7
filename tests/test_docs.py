"""The README stays a newcomer's page: small, opening with the two commands, and with no dead links.

Links are checked the way a reader follows them on the repository's web page: relative to the file that
holds them, with ``#anchor`` matched against the heading slugs of the target Markdown file.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_README_BYTES = 12_500

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def links(text: str) -> list[str]:
    """Targets of the Markdown links outside code blocks and inline code."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return LINK.findall(prose)


def slug(heading: str) -> str:
    """The anchor the repository's web page gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def test_readme_is_small():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes; move detail into docs/ (limit {MAX_README_BYTES})"


def test_readme_opens_with_the_two_commands():
    first_block = FENCE.search(README.read_text(encoding="utf-8")).group(0).splitlines()[1:-1]
    commands = [line.split("#")[0].strip() for line in first_block]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert all("#" in line for line in first_block), "each command keeps its comment"


def test_link_helpers_find_and_skip_what_they_should():
    text = "[a](x.md) `[b](code.md)` ![c](img.png \"t\")\n```\n[d](fenced.md)\n```\n[e](https://e.org)"
    assert links(text) == ["x.md", "img.png", "https://e.org"]
    assert slug("The bundle: fp32 vs int8") == "the-bundle-fp32-vs-int8"
    assert slug("`runtime/` (`dagnn_runtime`)") == "runtime-dagnn_runtime"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in links(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with that anchor in {path.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)
