"""`nextclick train` end to end on the tiny dataset, the checkpoint, the optimiser."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from cli.main import main
from models import registry
from tests.helpers import make_tiny_dataset
from training.data.dataset import PreparedDataset
from training.evaluation.evaluate import evaluate_model
from training.fit.checkpoint import load_run
from training.fit.loop import train
from training.fit.optimizers import AdagradMomentum
from training.fit.overrides import parse_overrides

MODELS = ["pop", "gru4rec", "hrnn-init", "hrnn-all"]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "data"
    make_tiny_dataset(n_users=30, n_items=40, sessions_per_user=6).save(path)
    return path


@pytest.mark.parametrize("name", MODELS)
def test_cli_trains_and_checkpoint_reloads(name: str, data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = main(["train", "--model", name, "--data", str(data_dir), "--out", str(run),
                 "--epochs", "3", "--patience", "10", "--quiet", "--seed", "3"])
    assert code == 0
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == name and info["n_items"] == 40 and info["n_users"] == 30
    assert info["dataset"] == str(data_dir.resolve()) and info["fingerprint"]
    assert info["versions"]["torch"] == torch.__version__
    model, loaded = load_run(run)
    assert loaded["model"] == name and loaded["config"] == model.config.to_dict()
    if name == "pop":  # counts: fitted on every training session, nothing to validate
        assert info["fit_on"] == "all training sessions" and "best_validation" not in info
        return
    best = info["best_validation"]
    assert best["recall@20"] > 0
    assert info["epochs"] == 3 and len(info["epoch_seconds"]) == 3
    assert min(info["losses"][1:]) < info["losses"][0], info["losses"]

    # the checkpoint holds the best epoch: re-evaluating it reproduces its validation scores
    again = evaluate_model(model, PreparedDataset.load(data_dir), split="valid", ks=(20,),
                           max_sessions=10_000)
    assert again["recall@20"] == pytest.approx(best["recall@20"])
    assert again["mrr@20"] == pytest.approx(best["mrr@20"])


def test_python_api_returns_the_checkpointed_model(data_dir: Path, tmp_path: Path) -> None:
    trained, info = train("hrnn-all", PreparedDataset.load(data_dir), tmp_path, epochs=2,
                          seed=1, progress=False)
    assert not trained.training and info["best_epoch"] in (1, 2)
    loaded, _ = load_run(tmp_path)
    items = torch.tensor([[1, 2, 3], [5, 6, 0]])
    user = {"user_hidden": torch.rand(2, trained.config.user_hidden_size)}
    state = trained.start_session(user, 2)
    assert torch.equal(trained(items, state), loaded(items, state))


def test_cli_overrides_and_errors(data_dir: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code = main(["train", "--model", "gru4rec", "--data", str(data_dir), "--out", str(run),
                 "--epochs", "1", "--quiet", "--batch-size", "8", "--lr", "0.02",
                 "--loss", "ce", "--set", "hidden_size=12", "--set", "bptt=3"])
    assert code == 0
    config = json.loads((run / "run.json").read_text())["config"]
    assert (config["batch_size"], config["learning_rate"], config["loss"],
            config["hidden_size"], config["bptt"]) == (8, 0.02, "ce", 12, 3)
    assert main(["train", "--model", "gru4rec", "--data", str(data_dir), "--out", str(run),
                 "--set", "hidden=3"]) == 2
    assert "no config field 'hidden'" in capsys.readouterr().err
    assert main(["train", "--model", "gru4rec", "--data", str(tmp_path / "missing"),
                 "--out", str(run)]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected a int"):
        parse_overrides(registry.get("hrnn-all"), ["hidden_size=big"])
    with pytest.raises(FileNotFoundError, match=r"no checkpoint\.pt"):
        load_run(tmp_path / "nothing")


def test_every_paper_recipe_names_config_fields_it_changes() -> None:
    """--paper-recipe is one flag away from the paper: each value is a real config field
    whose default deviates from it (else the entry is dead), and it builds."""
    recipes = {name: registry.paper_recipe(name) for name in registry.available()}
    assert recipes["narm"] == {"batch_size": 512, "learning_rate": 1e-3}
    assert recipes["hln"]["lr_decay"] == 0.1 and recipes["hln"]["init"] == "torch"
    for name, recipe in recipes.items():
        default = registry.build(name, 5, 3).config.to_dict()
        for field, value in recipe.items():
            assert field in default and default[field] != value, (name, field)
        assert registry.build(name, 5, 3, **recipe).config.to_dict() == {**default, **recipe}


def test_cli_paper_recipe_trains_with_the_papers_values(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--model", "hln", "--data", str(data_dir), "--out", str(run),
                 "--epochs", "1", "--quiet", "--paper-recipe", "--set", "hidden_size=8",
                 "--set", "embedding_dim=6"]) == 0
    config = json.loads((run / "run.json").read_text())["config"]
    assert (config["lr_decay"], config["init"], config["hidden_size"]) == (0.1, "torch", 8)
    default = registry.build("hln", 5, 3).config
    assert (default.lr_decay, default.init) == (1.0, "kaiming")


def test_adagrad_momentum_matches_reference_update() -> None:
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = AdagradMomentum([param], lr=0.1, momentum=0.5, eps=1e-6)
    acc, velocity, value = torch.zeros(2), torch.zeros(2), param.detach().clone()
    for grad in (torch.tensor([0.5, 1.0]), torch.tensor([-1.0, 0.25])):
        param.grad = grad.clone()
        optimizer.step()
        acc += grad ** 2
        velocity = 0.5 * velocity - 0.1 * grad / torch.sqrt(acc + 1e-6)
        value += velocity
        torch.testing.assert_close(param.detach(), value)


def test_early_stopping_waits_for_min_epochs(data_dir: Path, tmp_path: Path) -> None:
    """A learning rate of 0 never improves validation: patience 1 stops after epoch 2, but
    not before ``min_epochs`` (NARM trains all its 30 epochs, as its authors' loop)."""
    dataset = PreparedDataset.load(data_dir)
    _, stopped = train("narm", dataset, tmp_path / "a", epochs=6, patience=1, progress=False,
                       overrides={"learning_rate": 0.0, "min_epochs": 0})
    assert stopped["epochs"] == 2 and stopped["best_epoch"] == 1
    _, waited = train("narm", dataset, tmp_path / "b", epochs=6, patience=1, progress=False,
                      overrides={"learning_rate": 0.0, "min_epochs": 4})
    assert waited["epochs"] == 4
    assert registry.get("narm").config_class().min_epochs == 30  # type: ignore[attr-defined]


def test_refit_retrains_on_the_validation_sessions_too(data_dir: Path, tmp_path: Path) -> None:
    """--refit: the epochs validation picked, again from scratch on train + valid."""
    dataset = PreparedDataset.load(data_dir)
    plain, info = train("gru4rec", dataset, tmp_path / "plain", epochs=3, seed=2,
                        progress=False)
    refitted, refit_info = train("gru4rec", dataset, tmp_path / "refit", epochs=3, seed=2,
                                 progress=False, refit=True)
    assert refit_info["best_epoch"] == info["best_epoch"]
    assert refit_info["refit"]["epochs"] == info["best_epoch"]
    assert len(refit_info["refit"]["losses"]) == info["best_epoch"]
    assert not torch.equal(plain.output_weight, refitted.output_weight)
    _, saved = load_run(tmp_path / "refit")
    assert saved["refit"]["epochs"] == info["best_epoch"]
    # a count model fits on every training click, the validation sessions' included,
    # with or without refit (no epochs to select: holding data out of it is pure loss)
    for refit in (True, False):
        counts, _ = train("pop", dataset, tmp_path / f"pop-{refit}", progress=False,
                          refit=refit)
        assert float(counts.counts.sum()) == dataset.train.height  # type: ignore[union-attr]


def test_user_models_refuse_a_dataset_without_users(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """HRNN and RUM learn from user ids: on user-less data `nextclick train` says so in one
    line (the benchmark skips them by the same rule) instead of training on nothing."""
    anonymous = make_tiny_dataset(n_users=4, n_items=20)
    anonymous.users = []
    anonymous.train = anonymous.train.with_columns(pl.lit(0, dtype=pl.Int32).alias("user"))
    anonymous.test = anonymous.test.with_columns(pl.lit(0, dtype=pl.Int32).alias("user"))
    data = anonymous.save(tmp_path / "anonymous")
    for name in ("hrnn-init", "rum-item"):
        assert registry.get(name).needs_users()
        code = main(["train", "--model", name, "--data", str(data), "--out",
                     str(tmp_path / name), "--quiet"])
        assert code == 2
        error = capsys.readouterr().err.strip()
        assert error == (f"nextclick train: error: {name} learns from user ids, but {data} "
                         "has no users (its click log had no user column); train a session "
                         "model instead, e.g. gru4rec or narm")
        assert not (tmp_path / name).exists()
    assert not registry.get("gru4rec").needs_users()
    assert main(["train", "--model", "pop", "--data", str(data), "--out",
                 str(tmp_path / "pop"), "--quiet"]) == 0
