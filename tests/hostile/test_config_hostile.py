"""Hostile settings for `rlprune best-static` and `rlprune train`: presets, recipes, grids and paths.

Each bad setting ends in one `error:` line (exit 1, no traceback) before any search or training
starts and before anything is written; each good one still works. Runs use the `smoke` preset (the
tiny random model) and seconds-long recipes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlprune.cli import app
from rlprune.config import ROOT, ConfigError
from rlprune.envs import EnvConfig
from rlprune.errors import InvalidActionError, RLPruneError
from rlprune.eval import best_static
from rlprune.eval.best_static import LAYERS, check_table_path, grid_layers, search
from rlprune.train.recipe import Recipe
from rlprune.train.trainer import TrainOptions, train

runner = CliRunner()
SMOKE = ROOT / "envs" / "smoke.toml"
TINY_RECIPE = """backend = "sb3"
[ppo]
learning_rate = 0.0003
n_steps = 16
batch_size = 16
n_epochs = 1
hidden = [16, 16]
[run]
timesteps = {timesteps}
n_envs = 1
checkpoint_every = 16
eval_every = 16
eval_tasks = 1
eval_budgets = [0.5]
"""
"""A run of 16-step rollouts with one validation prompt: seconds on the tiny model."""


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, pattern: str) -> None:
    """Exit 1 with one `error:` line matching ``pattern`` (re-joined where the console wrapped it), no traceback."""
    output = result.output
    assert result.exit_code == 1, output
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert output.count("error:") == 1, output
    assert re.search(pattern, " ".join(output.split())), output


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """Caches (references, converted models) in the test's folder, not the user's."""
    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path / "rlprune-home"))
    return tmp_path


@pytest.fixture
def files(tmp_path) -> Path:
    """A folder, a plain file, a preset without `model`, and recipes and presets with unknown keys."""
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("not a folder\n")
    smoke = SMOKE.read_text()
    (tmp_path / "no-model.toml").write_text(smoke.replace('model = "tiny-random"\n', ""))
    (tmp_path / "preset-bogus.toml").write_text(smoke.replace("[tasks]", "bogus = 1\n\n[tasks]"))
    (tmp_path / "episode-bogus.toml").write_text(smoke.replace("[episode]", "[episode]\nbogus = 1"))
    recipe = TINY_RECIPE.format(timesteps=32)
    (tmp_path / "recipe-bogus.toml").write_text("bogus = 1\n" + recipe)
    (tmp_path / "ppo-bogus.toml").write_text(recipe.replace("[ppo]", "[ppo]\nlearnig_rate = 0.1"))
    (tmp_path / "table-bogus.toml").write_text(recipe + "[ppo2]\nn_steps = 8\n")
    return tmp_path


@pytest.fixture
def no_search(monkeypatch) -> None:
    """Fail the test if the search gets as far as the full model's references."""

    def refuse(*args, **kwargs):
        raise AssertionError("the search started before the settings were checked")

    monkeypatch.setattr(best_static, "validation_references", refuse)


# -- best-static: the grid, the preset and the table path, checked before the search ----------------

BEST_STATIC_CASES = {
    "budgets-only-a-comma": (["--budgets", ","], r"--budgets lists nothing; give at least one"),
    "budgets-blank": (["--budgets", " "], r"--budgets lists nothing"),
    "budgets-repeated": (["--budgets", "0.3,0.5,0.3"], r"--budgets lists 0\.3 more than once"),
    "budgets-repeated-spelt-apart": (["--budgets", "0.5,0.50"], r"--budgets lists 0\.5 more than once"),
    "budget-zero": (["--budgets", "0"], r"\(0, 1\]"),
    "budget-above-one": (["--budgets", "1.5"], r"\(0, 1\]"),
    "budget-nan": (["--budgets", "nan"], r"\(0, 1\]"),
    "budget-not-a-number": (["--budgets", "half"], r"--budgets 'half' must be comma-separated numbers"),
    "layer-beyond-the-model": (["--layers", "1,9"], r"--layers 9: the model has 4 layers \(0\.\.3\)"),
    "layer-just-beyond": (["--layers", "4"], r"--layers 4: the model has 4 layers"),
    "layer-negative": (["--layers", "-1"], r"--layers -1: the model has 4 layers"),
    "layers-repeated": (["--layers", "1,2,1"], r"--layers lists 1 more than once"),
    "layers-only-a-comma": (["--layers", ","], r"--layers lists nothing"),
    "layer-not-a-number": (["--layers", "two"], r"--layers 'two' must be comma-separated layer numbers"),
    "spans-repeated": (["--spans", "pool=25;pool=25"], r"--spans lists pool=25 more than once"),
    "span-unknown": (["--spans", "pool=25;shape=round"], r"--spans 'shape=round' is not a span shape"),
    "out-is-a-folder": (["--out", "{tmp}/a-folder"], r"--out .*a-folder is a folder; give the table's file name"),
    "out-under-a-file": (["--out", "{tmp}/a-file/table.json"], r"a-file is a file, not a folder; choose another"),
    "env-is-a-folder": (["--env", "{tmp}/a-folder"], r"a-folder is a folder; give the env preset by name \(.*smoke"),
    "env-unknown": (["--env", "no-such-preset"], r"unknown env preset 'no-such-preset'; known: .*smoke"),
    "env-without-model": (["--env", "{tmp}/no-model.toml"], r"no-model\.toml has no model key"),
}


@pytest.mark.parametrize(("args", "pattern"), BEST_STATIC_CASES.values(), ids=BEST_STATIC_CASES.keys())
def test_best_static_refuses_bad_settings_before_the_search(files, no_search, args, pattern):
    args = [arg.replace("{tmp}", str(files)) for arg in args]
    defaults = {"--env": "smoke", "--out": str(files / "table.json"), "--items": "1", "--layers": "1"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    result = invoke("best-static", *[part for flag, value in (defaults | given).items() for part in (flag, value)])
    assert_clean_error(result, pattern)
    assert not (files / "table.json").exists()
    assert (files / "a-folder").is_dir() and not any((files / "a-folder").iterdir())


def test_best_static_on_a_small_model_searches_the_default_layers_it_has(tmp_path):
    out = tmp_path / "new" / "folders" / "table.json"  # missing folders are made
    result = invoke("best-static", "--env", "smoke", "--items", "1", "--budgets", "0.5", "--spans", "", "--out", out)
    assert result.exit_code == 0, result.output
    assert "layers 4, 8 left out of the search: the model has 4 layers (0..3); choose with --layers" in result.output
    table = json.loads(out.read_text())
    assert table["layers"] == [2] and list(table["best"]) == ["0.5"]
    assert table["best"]["0.5"]["schedule"].startswith("2:")


@pytest.mark.parametrize(
    ("layers", "model_layers", "expected"),
    [
        (None, 30, ((2, 4, 8), "")),
        (None, 9, ((2, 4, 8), "")),
        (None, 5, ((2, 4), "layers 8 left out of the search: the model has 5 layers (0..4); choose with --layers")),
        ([0, 3], 4, ((0, 3), "")),
    ],
    ids=["deep-model", "just-deep-enough", "drops-what-it-lacks", "explicit-layers-kept"],
)
def test_grid_layers_keeps_what_the_model_has(layers, model_layers, expected):
    assert grid_layers(layers, model_layers) == expected
    assert LAYERS == (2, 4, 8)


@pytest.mark.parametrize(
    ("layers", "model_layers", "pattern"),
    [
        (
            None,
            2,
            r"none of the default layers 2, 4, 8 exists: the model has 2 layers \(0\.\.1\); choose with --layers",
        ),
        ([2, 8], 4, r"--layers 8: the model has 4 layers"),
        ([True], 4, r"--layers holds True"),
        ([1.0], 4, r"--layers holds 1\.0"),
        ([], 4, r"--layers lists nothing"),
    ],
    ids=["no-default-layer-fits", "explicit-layer-missing", "bool-layer", "float-layer", "no-layers"],
)
def test_grid_layers_refuses_layers_the_model_lacks(layers, model_layers, pattern):
    with pytest.raises(InvalidActionError, match=pattern):
        grid_layers(layers, model_layers)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(budgets=()), r"--budgets lists nothing"),
        (dict(budgets=(0.3, 0.3)), r"--budgets lists 0\.3 more than once"),
        (dict(items=0), r"--items must be a whole number of at least 1, got 0"),
        (dict(items=True), r"--items must be a whole number"),
        (dict(layers=(1, 4)), r"--layers 4: the model has 4 layers"),
        (dict(spans=("unit=paragraph",)), r"--spans 'unit=paragraph' is not a span shape"),
    ],
    ids=["no-budgets", "repeated-budgets", "no-items", "bool-items", "missing-layer", "bad-span"],
)
def test_search_from_python_checks_its_grid_first(no_search, kwargs, pattern):
    with pytest.raises(RLPruneError, match=pattern):
        search("smoke", **({"budgets": (0.5,), "items": 1, "layers": (1,), "spans": ()} | kwargs), show_progress=False)


def test_a_table_path_in_missing_folders_is_fine(tmp_path):
    assert check_table_path(tmp_path / "a" / "b.json") == tmp_path / "a" / "b.json"
    assert not (tmp_path / "a").exists()  # made when the table is written, not by the check


# -- train: presets and recipes given as folders, without a model, with unknown keys ----------------

TRAIN_CASES = {
    "env-is-a-folder": (["--env", "{tmp}/a-folder"], r"a-folder is a folder; give the env preset by name"),
    "recipe-is-a-folder": (["--recipe", "{tmp}/a-folder"], r"a-folder is a folder; give the recipe by name \(.*smoke"),
    "recipe-unknown": (["--recipe", "no-such-recipe"], r"unknown recipe 'no-such-recipe'; known: .*ppo-local"),
    "recipe-file-missing": (["--recipe", "{tmp}/missing.toml"], r"missing\.toml does not exist"),
    "env-without-model": (["--env", "{tmp}/no-model.toml"], r'no-model\.toml has no model key: .* model = "'),
    "env-unknown-key": (
        ["--env", "{tmp}/preset-bogus.toml"],
        r"unknown key\(s\) bogus in preset-bogus\.toml; known: model",
    ),
    "episode-unknown-key": (
        ["--env", "{tmp}/episode-bogus.toml"],
        r"unknown key\(s\) bogus in episode-bogus\.toml\.episode; known: .*decision_layers",
    ),
    "recipe-unknown-key": (
        ["--recipe", "{tmp}/recipe-bogus.toml"],
        r"unknown key\(s\) bogus in recipe-bogus\.toml; known: backend, policy, ppo, run",
    ),
    "ppo-misspelt-key": (
        ["--recipe", "{tmp}/ppo-bogus.toml"],
        r"unknown key\(s\) learnig_rate in ppo-bogus\.toml\.ppo; known: learning_rate",
    ),
    "recipe-unknown-table": (["--recipe", "{tmp}/table-bogus.toml"], r"unknown key\(s\) ppo2 in table-bogus\.toml"),
}


@pytest.mark.parametrize(("args", "pattern"), TRAIN_CASES.values(), ids=TRAIN_CASES.keys())
def test_train_refuses_bad_presets_and_recipes_before_writing(files, args, pattern):
    args = [arg.replace("{tmp}", str(files)) for arg in args]
    defaults = {"--env": "smoke", "--recipe": str(files / "tiny.toml")}
    (files / "tiny.toml").write_text(TINY_RECIPE.format(timesteps=32))
    given = dict(zip(args[::2], args[1::2], strict=True))
    out = files / "run"
    result = invoke(
        "train", "--out", out, *[part for flag, value in (defaults | given).items() for part in (flag, value)]
    )
    assert_clean_error(result, pattern)
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(path.stem for path in (ROOT / "envs").glob("*.toml")))
def test_every_shipped_preset_names_its_model(name):
    assert re.search(r'^model = "', (ROOT / "envs" / f"{name}.toml").read_text(), re.MULTILINE)
    assert EnvConfig.load(name).model


def test_a_preset_without_model_is_refused_from_python(files):
    with pytest.raises(ConfigError, match=r"has no model key"):
        EnvConfig.load(files / "no-model.toml")


# -- train: the steps trained are the steps announced ----------------------------------------------


@pytest.mark.parametrize(
    ("timesteps", "n_steps", "n_envs", "reached", "trained"),
    [
        (64, 128, 2, 0, 256),  # less than one rollout: one whole rollout
        (256, 128, 2, 0, 256),  # whole rollouts: as asked
        (300, 128, 2, 0, 512),
        (50_000, 256, 2, 0, 50_176),  # the shipped ppo-local recipe
        (300, 128, 2, 256, 512),  # resumed after one rollout
        (400, 128, 3, 256, 640),  # resumed with more environments: whole new rollouts after the checkpoint
        (256, 128, 2, 512, 256),  # already past its steps: finished, not rounded
    ],
)
def test_timesteps_round_up_to_whole_rollouts(timesteps, n_steps, n_envs, reached, trained):
    recipe = Recipe.load("ppo-local")
    recipe = Recipe(ppo=type(recipe.ppo)(n_steps=n_steps), run=type(recipe.run)(timesteps=timesteps, n_envs=n_envs))
    assert recipe.rollout == n_steps * n_envs
    assert recipe.in_whole_rollouts(reached).run.timesteps == trained


def test_a_run_trains_exactly_the_steps_it_announces(tmp_path):
    recipe = tmp_path / "odd.toml"
    recipe.write_text(TINY_RECIPE.format(timesteps=20))
    out = tmp_path / "run"
    result = invoke("train", "--env", "smoke", "--recipe", recipe, "--out", out)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    note = "note: training to 32 timesteps, not 20: PPO trains whole rollouts of ppo.n_steps 16 x run.n_envs 1 = 16"
    assert note in text and "32/32" in text and "Trained 32 steps" in text, result.output  # the bar's true total
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timesteps"] == 32 and summary["final_validation"]["timesteps"] == 32
    assert json.loads((out / "run.json").read_text())["recipe"]["run"]["timesteps"] == 20  # what was asked


def test_whole_rollouts_need_no_note(tmp_path, capsys):
    recipe = tmp_path / "even.toml"
    recipe.write_text(TINY_RECIPE.format(timesteps=16))
    summary = train(
        TrainOptions(env="smoke", recipe=recipe, out=tmp_path / "run", cache_dir=str(tmp_path / "refs"), quiet=True)
    )
    assert summary["timesteps"] == 16 and "note:" not in capsys.readouterr().err
