"""``fit`` on small random tensors: properties of the training loop that need no real data."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra (torch)")

from dagnn_export.config import make_config  # noqa: E402
from dagnn_export.run import Part, TrainingData  # noqa: E402
from dagnn_export.train import fit  # noqa: E402

C, DV, V = 5, 12, 40
SMALL = dict(common_dim=16, text_hidden=32, text_dim=8, gv2_hidden=8, gt2_hidden=16, disc_hidden=8,
             gnn_layers=1, epochs=1, batch_size=10, num_threads=1)


def part(n, seed, images=True):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, C, generator=g) < 0.4).float()
    y[:, 0] = 1.0  # every pair shares label 0, so every query has a relevant item
    bow = (torch.rand(n, V, generator=g) < 0.3).float()
    h_v = torch.rand(n, DV, generator=g) if images else None
    return Part(list(range(n)), h_v, bow, y)


def data():
    emb = np.random.default_rng(0).standard_normal((C, 6)).astype(np.float32)
    return TrainingData(None, None, part(40, 1), part(10, 2), None, part(10, 3, images=False), emb, None, None)


@pytest.mark.parametrize("freeze", [True, False])
def test_text_statistics_come_from_the_eval_mode_text_mlp_without_pretraining(freeze):
    """With no pretraining and no text_mlp_init, h_t and its z-score statistics must still be computed with
    the text MLP's dropout off, as evaluation recomputes them. lr=0 keeps the MLP as it was when they were
    taken, also when it is not frozen."""
    cfg = make_config("mirflickr", **SMALL, text_pretrain_epochs=0, text_dropout=0.5, freeze_text_mlp=freeze,
                      lr=0.0)
    d = data()
    model = fit(cfg, d, progress=False)["model"]
    with torch.no_grad():
        h_t = model.text_mlp.eval()(d.train.bow)
    torch.testing.assert_close(model.text_mean, h_t.mean(0))
    torch.testing.assert_close(model.text_std, h_t.std(0).clamp_min(1e-3))
