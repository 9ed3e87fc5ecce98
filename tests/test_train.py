"""The training steps: both batch sources visit every training image once per epoch, and one step lowers the loss."""
import torch
from torch import nn

from ladnn.config import Config
from ladnn.models import build_model
from ladnn.mtl import TaskCombiner
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
    assert im.split_logits(model, "val").shape == (3, 6)


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
    first = fit_epoch(TaskCombiner(cfg, net), opt, src, y, known, cfg, g, torch.device("cpu"))
    for _ in range(20):
        last = fit_epoch(TaskCombiner(cfg, net), opt, src, y, known, cfg, g, torch.device("cpu"))
    assert last < first
    ev = evaluate(net, src, y)
    assert ev["val_auc"] > 0.9 and set(ev) == {"val_covid_loss", "val_auc", "val_accuracy", "val_f1"}
    loss = train_step(TaskCombiner(cfg, net), opt, x[0, :8], y[:8], known[:8], cfg, torch.device("cpu"))
    assert loss.dim() == 0 and not loss.requires_grad


def test_test_time_augmentation_averages_the_views():
    """tta > 1: the outputs are the mean logits of the plain view and the augmented ones; tta = 1 is the plain view."""
    net = nn.Linear(8, 6)
    plain, extra = torch.randn(5, 8), torch.randn(2, 5, 8)
    f = FeatureBatches({"train": torch.randn(1, 4, 8), "val": plain, "val_tta": extra}, torch.device("cpu"))
    with torch.no_grad():
        want = (net(plain) + net(extra[0]) + net(extra[1])) / 3
    assert torch.allclose(f.split_logits(net, "val"), want, atol=1e-6)
    assert torch.allclose(FeatureBatches({"val": plain}, torch.device("cpu")).split_logits(net, "val"), net(plain).detach())
    model = build_model("resnet18", "ladnn", pretrained=False)
    imgs = {"val": torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)}
    one, four = ImageBatches(model, imgs, torch.device("cpu")), ImageBatches(model, imgs, torch.device("cpu"), tta=4)
    a, b, b2 = one.split_logits(model, "val"), four.split_logits(model, "val"), four.split_logits(model, "val")
    assert not torch.allclose(a, b) and torch.equal(b, b2)  # the views differ from the plain image, but are fixed
    state = torch.get_rng_state()
    four.split_logits(model, "val")
    assert torch.equal(state, torch.get_rng_state())  # drawing the views leaves the training's random stream alone
