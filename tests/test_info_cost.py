"""``dagnn info`` states the image encoder's recorded cost (backbones, input side, MACs per photo, mirror), and
says nothing of it for bundles exported before it was recorded or with a malformed record."""
import copy
import json

import pytest
from typer.testing import CliRunner

import dagnn_cli.main  # noqa: F401  (registers every command on the app)
from bundle_factory import bundle_parts, resign, write_bundle
from dagnn_cli.app import app

COST = {"backbones": ["efficientnet_lite0", "efficientnet_lite2"], "input_side": 260,
        "macs_per_photo": 1_234_000_000, "passes": 2}


def _bundle(tmp_path, image_fields: dict):
    files, manifest = bundle_parts(size=260, tag_ids=True)
    manifest = copy.deepcopy(manifest)
    manifest["graphs"]["image_encoder"].update(image_fields)
    return write_bundle(tmp_path / "b", files, resign(manifest))


def _info(bundle, *extra):
    result = CliRunner().invoke(app, ["info", "--bundle", str(bundle), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_info_states_the_recorded_cost_and_mirror(tmp_path):
    bundle = _bundle(tmp_path, {"mirror": True, "cost": COST})
    assert ("image encoder   efficientnet_lite0+efficientnet_lite2 at 260 px, 1.23 GMAC per photo "
            "(mirror: 2 passes)") in _info(bundle).splitlines()
    summary = json.loads(_info(bundle, "--json"))
    assert summary["mirror"] is True and summary["image_encoder"] == {**COST, "mirror": True}


@pytest.mark.parametrize("fields", [{}, {"cost": {**COST, "macs_per_photo": "lots"}}, {"cost": [1, 2]}],
                         ids=["before-the-field", "malformed-macs", "not-a-dict"])
def test_info_says_nothing_of_a_cost_it_does_not_have(tmp_path, fields):
    bundle = _bundle(tmp_path, fields)
    assert "image encoder" not in _info(bundle)
    summary = json.loads(_info(bundle, "--json"))
    assert summary["mirror"] is False and summary["image_encoder"] is None


def test_small_encoders_in_megamacs(tmp_path):
    bundle = _bundle(tmp_path, {"mirror": False, "cost": {**COST, "backbones": ["tiny"], "input_side": 224,
                                                            "macs_per_photo": 4_500_000, "passes": 1}})
    assert "image encoder   tiny at 224 px, 4.5 MMAC per photo" in _info(bundle).splitlines()
