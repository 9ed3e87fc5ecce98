"""The training steps: both batch sources visit every training image once per epoch, and one step lowers the loss."""
import torch
from torch import nn

from ladnn.config import Config
from ladnn.models import build_model
from ladnn.train import FeatureBatches, ImageBatches, evaluate, fit_epoch, train_step


def _epoch_indices(source, batch_size=4):
    return torch.cat([idx for idx, _ in source.epoch(batch_size, torch.Generator().manual_seed(0))])


def test_both_sources_cover_the_training_split_once():
    feats = {"train": torch.randn(3, 10, 8), "val": torch.randn(5, 8), "test": torch.randn(4, 8)}
    f = FeatureBatches(feats, torch.device("cpu"))
    assert sorted(_epoch_indices(f).tolist()) == list(range(10))
    idx, x = next(f.epoch(10, torch.Generator().manual_seed(1)))
    assert all(any(torch.equal(x[j], feats["train"][v, i]) for v in range(3)) for j, i in enumerate(idx))
    model = build_model("resnet18", "ladnn", pretrained=False)
    imgs = {s: torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8) for s, n in (("train", 9), ("val", 3))}
    im = ImageBatches(model, imgs, torch.device("cpu"))
    assert sorted(_epoch_indices(im).tolist()) == list(range(9))
    assert im.outputs(model, "val").shape == (3, 6)


def test_steps_lower_the_loss_on_a_separable_problem():
    torch.manual_seed(0)
    cfg = Config(method="baseline", batch_size=8, lr=1e-2)
    x = torch.randn(3, 32, 4)
    y = torch.zeros(32, 6)
    y[:, 0] = (x[0, :, 0] > 0).float()
    feats = {"train": x, "val": x[0]}
    net = nn.Linear(4, 1)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    src, known = FeatureBatches(feats, torch.device("cpu")), torch.zeros(32, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    first = fit_epoch(net, opt, src, y, known, cfg, g, torch.device("cpu"))
    for _ in range(20):
        last = fit_epoch(net, opt, src, y, known, cfg, g, torch.device("cpu"))
    assert last < first
    ev = evaluate(net, src, y)
    assert ev["val_auc"] > 0.9 and set(ev) == {"val_covid_loss", "val_auc", "val_accuracy", "val_f1"}
    loss = train_step(net, opt, x[0, :8], y[:8], known[:8], cfg, torch.device("cpu"))
    assert loss.dim() == 0 and not loss.requires_grad
