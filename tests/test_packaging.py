"""What `pip install .` ships: every Python package folder of the source tree is listed in pyproject.toml."""
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_installed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), f"package folders missing from pyproject.toml: {sorted(found - listed)}"
    data_only = set(config.get("package-data", {}))  # folders shipped for their files, without __init__.py
    assert listed - found - data_only == set(), f"pyproject.toml lists packages that do not exist: {sorted(listed - found)}"
