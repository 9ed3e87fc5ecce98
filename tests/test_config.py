"""One config: the command line's options and the training notebook's parameters cell are both Config's fields."""
import dataclasses
import shutil
from pathlib import Path

import nbformat
import pytest

from ladnn.cli import parser
from ladnn.config import Config, field_names, parameters_cell, sync_notebook

ROOT = Path(__file__).resolve().parents[1]


def _train_parser():
    sub = next(a for a in parser()._actions if a.dest == "cmd")
    return sub.choices["train"]


def test_the_training_notebooks_parameters_cell_is_configs():
    nb = nbformat.read(ROOT / "notebooks" / "train.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == parameters_cell(), "run `python -m ladnn.config` to rewrite the cell from Config"
    ns: dict = {}
    exec(cell.source, ns)  # noqa: S102 - our own notebook's cell
    assert Config.from_namespace(ns) == Config()
    assert set(field_names()) <= set(ns)


def test_papermill_reads_every_parameter():
    """papermill cannot parse a line whose comment holds '=' ("Passed unknown parameter" in every build log)."""
    import papermill as pm

    found = pm.inspect_notebook(str(ROOT / "notebooks" / "train.ipynb"))
    assert set(field_names()) - set(found) == set()


def test_sync_rewrites_a_stale_cell(tmp_path):
    nb_path = tmp_path / "train.ipynb"
    shutil.copy(ROOT / "notebooks" / "train.ipynb", nb_path)
    nb = nbformat.read(nb_path, as_version=4)
    next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source = "seed = 0"
    nbformat.write(nb, nb_path)
    assert sync_notebook(nb_path) is True and sync_notebook(nb_path) is False


def test_every_field_is_a_train_option_with_configs_default_and_help():
    opts = {a.dest: a for a in _train_parser()._actions}
    for f in dataclasses.fields(Config):
        a = opts[f.name]
        assert a.default == getattr(Config(), f.name), f.name
        assert a.help == f.metadata["help"]
        if f.metadata["choices"]:
            assert tuple(a.choices) == tuple(f.metadata["choices"])


def test_command_line_values_reach_the_config():
    from ladnn.cli import _config

    a = _train_parser().parse_args(["--out", "x", "--no-pretrained", "--zero-lesions", "AirBr", "InSepThi",
                                    "--limit", "8", "--lr", "1e-3", "--lesion-mask", "none"])
    c = _config(a)
    assert (c.pretrained, c.zero_lesions, c.limit, c.lr, c.lesion_mask) == (False, ["AirBr", "InSepThi"], 8, 1e-3,
                                                                           "none")
    with pytest.raises(SystemExit):
        _train_parser().parse_args(["--out", "x", "--zero-lesions", "Lungs"])


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="'finetune'"):
        Config(finetune="all")
    with pytest.raises(ValueError, match="'zero_lesions'"):
        Config(zero_lesions=["GGO", "Lungs"])
    with pytest.raises(ValueError, match="unknown key 'sed'; did you mean 'seed'"):
        Config.from_dict({"sed": 1})


def test_config_args_give_back_the_config():
    from ladnn.cli import _config
    from ladnn.config import config_args

    for cfg in (Config(), Config(backbone="resnet18", pretrained=False, zero_lesions=["AirBr"], limit=8, lr=2e-4,
                                 dataset="D0+D1", finetune="top", top_blocks=3, device="cpu")):
        assert _config(_train_parser().parse_args([*config_args(cfg), "--out", "x"])) == cfg
