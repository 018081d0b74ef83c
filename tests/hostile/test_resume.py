"""Hostile resumes and starts: every case ends in a clean error or the right result, and an error
leaves the files already in the run folder exactly as they were.

Runs are seconds-long: the tiny random model (``smoke`` preset) and a recipe of 16-step rollouts.
One run is trained once per module and copied for each case.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rlprune.cli import app
from rlprune.config import ConfigError
from rlprune.errors import RLPruneError
from rlprune.train.trainer import TrainOptions, train

RECIPE: dict[str, dict[str, str]] = {
    "": {"backend": '"sb3"'},
    "ppo": {"learning_rate": "0.0003", "n_steps": "16", "batch_size": "16", "n_epochs": "1", "hidden": "[16, 16]"},
    "run": {
        "timesteps": "32",
        "n_envs": "1",
        "checkpoint_every": "16",
        "eval_every": "16",
        "eval_tasks": "1",
        "eval_budgets": "[0.5]",
    },
}
"""The test recipe as TOML values by table and key: a 32-step run with a validation every 16 steps."""

SMOKE_PRESET = Path(__file__).resolve().parents[2] / "envs" / "smoke.toml"


def write_recipe(folder: Path, name: str, **changes: str) -> Path:
    """The test recipe with ``changes`` (``table__key="toml value"``) written to ``folder/name.toml``."""
    tables = {table: dict(values) for table, values in RECIPE.items()}
    for key, value in changes.items():
        table, _, field = key.rpartition("__")
        tables.setdefault(table, {})[field] = value
    lines = [f"{k} = {v}" for k, v in tables.pop("").items()]
    for table, values in tables.items():
        lines += [f"[{table}]", *(f"{k} = {v}" for k, v in values.items())]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_preset(folder: Path, name: str, old: str, new: str) -> Path:
    """The ``smoke`` preset with one line replaced."""
    text = SMOKE_PRESET.read_text()
    assert old in text
    path = folder / f"{name}.toml"
    path.write_text(text.replace(old, new))
    return path


def snapshot(folder: Path) -> dict[str, str] | None:
    """Every file under ``folder`` by relative path, with its SHA-256 (None: no folder)."""
    if not folder.exists():
        return None
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def cli_args(out: Path, env_preset=None, recipe=None, **options: Any) -> list[str]:
    """The ``rlprune train`` command line for the keyword arguments of :class:`rlprune.train.trainer.TrainOptions`."""
    args = ["train", "--out", str(out)]
    args += ["--env", str(env_preset)] if env_preset is not None else []
    args += ["--recipe", str(recipe)] if recipe is not None else []
    for name, value in options.items():
        if name == "resume":
            args += ["--resume"] if value else []
        elif name == "override":
            for field in value:
                args += ["--override", field]
        elif name != "cache_dir":
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def run_cli(args: list[str]):
    return CliRunner().invoke(app, args)


def assert_one_error_line(result, pattern: str) -> None:
    """Exit 1, one ``error:`` line and no traceback; the message (re-joined where the console wrapped it)."""
    output = result.output
    assert result.exit_code == 1, output
    assert output.strip().startswith("error:") and output.count("error:") == 1, output
    assert "Traceback" not in output and isinstance(result.exception, SystemExit), output
    assert re.search(pattern, " ".join(output.split())), output


def fails_cleanly(mode: str, out: Path, pattern: str, error: type[Exception], **kwargs: Any) -> None:
    """Start or resume ``out`` through the API or the CLI: a clean error, and the folder unchanged."""
    before = snapshot(out)
    if mode == "api":
        with pytest.raises(error) as raised:
            train(
                TrainOptions(
                    env=kwargs.pop("env_preset", None), recipe=kwargs.pop("recipe", None), out=out, quiet=True, **kwargs
                )
            )
        assert re.search(pattern, str(raised.value)), str(raised.value)
    else:
        assert_one_error_line(run_cli(cli_args(out, **kwargs)), pattern)
    assert snapshot(out) == before


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """Recipes, presets and the reference cache shared by every case."""
    folder = tmp_path_factory.mktemp("hostile")
    write_recipe(folder, "tiny")
    write_recipe(folder, "wide", ppo__hidden="[32, 32]")
    write_recipe(folder, "fast", ppo__learning_rate="0.001")
    write_recipe(folder, "long", run__timesteps="48")
    write_recipe(folder, "sparse", run__checkpoint_every="32")
    write_recipe(folder, "budgets", run__eval_budgets="[0.4]")
    write_preset(folder, "heavy-kl", "kl = 1.0", "kl = 2.0")
    write_preset(folder, "other-model", 'model = "tiny-random"', 'model = "no-such-model"')
    return folder


@pytest.fixture(autouse=True)
def rlprune_home(home, monkeypatch) -> None:
    """The CLI's reference cache (and any other cache) in the test's folder, not the user's."""
    monkeypatch.setenv("RLPRUNE_HOME", str(home / "rlprune-home"))


@pytest.fixture(scope="module")
def template(home) -> Path:
    """A finished 32-step run (validations at 16 and 32), trained once."""
    run = home / "template"
    summary = train(
        TrainOptions(env="smoke", recipe=home / "tiny.toml", out=run, cache_dir=str(home / "refs"), quiet=True)
    )
    assert summary["timesteps"] == 32 and [h["timesteps"] for h in summary["validation_history"]] == [16, 32]
    return run


@pytest.fixture
def run(template, tmp_path) -> Path:
    """A copy of the finished run, for one case to change."""
    return Path(shutil.copytree(template, tmp_path / "run"))


def resume(home: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("cache_dir", str(home / "refs"))
    return train(
        TrainOptions(
            env=kwargs.pop("env_preset", None),
            recipe=kwargs.pop("recipe", None),
            out=out,
            resume=True,
            quiet=True,
            **kwargs,
        )
    )


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data) or data))


# -- resuming with other settings: an error naming the field, before anything is written --------

MISMATCHES = {
    "hidden-sizes": (dict(recipe="wide.toml"), r"recipe\.ppo\.hidden: \[16, 16\] in the run, \[32, 32\] now"),
    "learning-rate": (dict(recipe="fast.toml"), r"recipe\.ppo\.learning_rate: 0\.0003 in the run, 0\.001 now"),
    "preset": (dict(env_preset="heavy-kl.toml"), r"env\.reward\.kl: 1\.0 in the run, 2\.0 now"),
    "model": (dict(env_preset="other-model.toml"), r'model: "tiny-random" in the run, "no-such-model" now'),
    "seed": (dict(seed=7), r"recipe\.run\.seed: 0 in the run, 7 now"),
    "eval-budgets": (dict(recipe="budgets.toml"), r"recipe\.run\.eval_budgets: \[0\.5\] in the run, \[0\.4\] now"),
    "timesteps-without-override": (dict(recipe="long.toml"), r"run\.timesteps: 32 in the run, 48 now.*--override"),
    "unsafe-override": (
        dict(recipe="fast.toml", override=["learning_rate"]),
        r"--override learning_rate: this field cannot change on resume; the safe ones are run\.timesteps",
    ),
    "unknown-override": (dict(override=["no_such_field"]), r"--override no_such_field: .*safe ones are"),
}


@pytest.mark.parametrize("mode", ["api", "cli"])
@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_resuming_with_other_settings_is_refused_before_anything_is_written(case, mode, run, home):
    kwargs, pattern = MISMATCHES[case]
    kwargs = {k: home / v if k in ("recipe", "env_preset") else v for k, v in kwargs.items()}
    fails_cleanly(mode, run, pattern, RLPruneError, resume=True, **kwargs)


@pytest.mark.parametrize("mode", ["api", "cli"])
def test_a_run_of_another_backend_is_not_resumed(mode, run):
    edit_json(run / "run.json", lambda meta: meta | {"backend": "ray"})
    fails_cleanly(mode, run, r'backend: "ray" in the run, "sb3" now', RLPruneError, resume=True, backend="sb3")


# -- folders that hold no run, a damaged one, or one that is there already ----------------------

BROKEN_FOLDERS = {
    "missing": (lambda run: shutil.rmtree(run), r"nothing to resume in .* it does not exist"),
    "empty": (lambda run: (shutil.rmtree(run), run.mkdir()), r"nothing to resume in .* holds no run"),
    "corrupt-run-json": (lambda run: (run / "run.json").write_text('{"env": "smoke", '), r"run\.json is damaged"),
    "run-json-not-a-run": (lambda run: (run / "run.json").write_text("[1, 2]"), r"run\.json does not describe a run"),
    "damaged-checkpoint": (lambda run: (run / "last" / "state.json").write_text("{"), r"checkpoint .*last is damaged"),
}


@pytest.mark.parametrize("mode", ["api", "cli"])
@pytest.mark.parametrize("case", sorted(BROKEN_FOLDERS))
def test_resuming_a_folder_without_a_usable_run_is_a_clean_error(case, mode, run):
    damage, pattern = BROKEN_FOLDERS[case]
    damage(run)
    fails_cleanly(mode, run, pattern, RLPruneError, resume=True)


@pytest.mark.parametrize("mode", ["api", "cli"])
def test_starting_over_an_existing_run_suggests_resume(mode, run, home):
    fails_cleanly(
        mode, run, r"already holds a run; pass --resume", RLPruneError, env_preset="smoke", recipe=home / "tiny.toml"
    )


def test_starting_where_a_run_left_files_but_no_run_json_is_refused(run, home):
    (run / "run.json").unlink()
    fails_cleanly(
        "api",
        run,
        r"holds a run's files \(last, best, policy, summary\.json\)",
        RLPruneError,
        env_preset="smoke",
        recipe=home / "tiny.toml",
    )


def test_override_without_resume_is_refused(home, tmp_path):
    fails_cleanly(
        "cli",
        tmp_path / "new",
        r"--override .* with --resume",
        RLPruneError,
        env_preset="smoke",
        recipe=home / "tiny.toml",
        override=["timesteps"],
    )


# -- bad recipes: the field named, no traceback, no folder ------------------------------------

BAD_RECIPES = {
    "lr-nan": (dict(ppo__learning_rate="nan"), r"learning_rate = nan must be a finite number"),
    "lr-inf": (dict(ppo__learning_rate="inf"), r"learning_rate = inf must be a finite number"),
    "lr-negative": (dict(ppo__learning_rate="-0.001"), r"learning_rate = -0\.001 must be above 0"),
    "lr-zero": (dict(ppo__learning_rate="0.0"), r"learning_rate = 0\.0 must be above 0"),
    "lr-string": (dict(ppo__learning_rate='"fast"'), r"ppo\.learning_rate = 'fast' must be a number"),
    "timesteps-zero": (dict(run__timesteps="0"), r"timesteps = 0 must be at least 1"),
    "timesteps-negative": (dict(run__timesteps="-64"), r"timesteps = -64 must be at least 1"),
    "timesteps-float": (dict(run__timesteps="32.5"), r"run\.timesteps = 32\.5 must be an integer"),
    "batch-size-zero": (dict(ppo__batch_size="0"), r"batch_size = 0 must be at least 2"),
    "batch-size-one": (dict(ppo__batch_size="1"), r"batch_size = 1 must be at least 2"),
    "n-steps-string": (dict(ppo__n_steps='"16"'), r"ppo\.n_steps = '16' must be an integer"),
    "hidden-not-a-list": (dict(ppo__hidden="16"), r"ppo\.hidden = 16 must be a list"),
    "hidden-zero-width": (dict(ppo__hidden="[16, 0]"), r"hidden\[1\] = 0 must be at least 1"),
    "gamma-nan": (dict(ppo__gamma="nan"), r"gamma = nan must be a finite number"),
    "clip-range-negative": (dict(ppo__clip_range="-0.2"), r"clip_range = -0\.2 must be above 0"),
    "eval-budget-inf": (dict(run__eval_budgets="[inf]"), r"eval_budgets\[0\] = inf must be a finite number"),
    "seed-negative": (dict(run__seed="-1"), r"seed = -1 must be at least 0"),
    "warm-start-lr-nan": (dict(warm_start__learning_rate="nan"), r"learning_rate = nan must be a finite number"),
    "one-sample-rollouts": (dict(ppo__n_steps="1"), r"n_steps \* run\.n_envs must be at least 2"),
}


@pytest.mark.parametrize("mode", ["api", "cli"])
@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_a_bad_recipe_is_one_error_naming_the_field_and_writes_nothing(case, mode, home, tmp_path):
    changes, pattern = BAD_RECIPES[case]
    recipe = write_recipe(tmp_path, case, **changes)
    out = tmp_path / "run"
    fails_cleanly(mode, out, pattern, ConfigError, env_preset="smoke", recipe=recipe, cache_dir=str(home / "refs"))
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "pattern"),
    [("timesteps", r"timesteps = 0 must be at least 1"), ("workers", r"n_envs = 0 must be at least 1")],
)
def test_a_bad_override_through_the_api_names_the_field(option, pattern, home, tmp_path):
    out = tmp_path / "run"
    fails_cleanly("api", out, pattern, ConfigError, env_preset="smoke", recipe=home / "tiny.toml", **{option: 0})
    assert not out.exists()


# -- finished runs, and runs killed between their last checkpoint and the export ---------------


def test_resuming_a_finished_run_says_so_and_writes_nothing(run, home):
    before = snapshot(run)
    summary = resume(home, run)
    assert summary["already_finished"] and summary["timesteps"] == 32
    assert snapshot(run) == before


def test_resuming_a_finished_run_on_the_command_line_exits_0(run):
    before = snapshot(run)
    result = run_cli(cli_args(run, resume=True))
    assert result.exit_code == 0, result.output
    assert "already finished: 32 steps" in " ".join(result.output.split())
    assert snapshot(run) == before


def test_a_finished_run_without_its_export_is_exported_again(run, home):
    summary_before = (run / "summary.json").read_bytes()
    shutil.rmtree(run / "policy")
    summary = resume(home, run)
    assert summary["already_finished"]
    assert (run / "policy" / "policy.safetensors").is_file() and (run / "policy" / "config.json").is_file()
    assert (run / "summary.json").read_bytes() == summary_before


def test_a_run_killed_before_its_export_is_finished_without_training(run, home):
    shutil.rmtree(run / "policy")
    (run / "summary.json").unlink()
    checkpoint = snapshot(run / "last")
    summary = resume(home, run)
    assert summary["timesteps"] == 32 and summary["resumed_from"] == 32 and not summary.get("already_finished")
    assert [h["timesteps"] for h in summary["validation_history"]] == [16, 32]
    assert summary["final_validation"]["timesteps"] == 32
    assert snapshot(run / "last") == checkpoint  # nothing trained
    assert (run / "policy" / "policy.safetensors").is_file()
    assert json.loads((run / "summary.json").read_text())["timesteps"] == 32


def test_a_killed_run_whose_checkpoint_lacks_the_final_validation_gets_it(run, home):
    shutil.rmtree(run / "policy")
    (run / "summary.json").unlink()
    edit_json(
        run / "last" / "state.json", lambda state: state | {"validation_history": state["validation_history"][:1]}
    )
    summary = resume(home, run)
    assert [h["timesteps"] for h in summary["validation_history"]] == [16, 32]
    assert summary["final_validation"]["timesteps"] == 32


# -- resuming for more steps: safe changes, and the whole validation history -------------------


def test_more_timesteps_continue_and_the_summary_keeps_the_whole_validation_history(run, home):
    summary = resume(home, run, timesteps=48)
    assert summary["resumed_from"] == 32 and summary["timesteps"] == 48
    assert [h["timesteps"] for h in summary["validation_history"]] == [16, 32, 48]
    assert json.loads((run / "run.json").read_text())["recipe"]["run"]["timesteps"] == 48


def test_a_recipe_with_more_timesteps_continues_with_override(run, home):
    result = run_cli(cli_args(run, recipe=home / "long.toml", resume=True, override=["timesteps"]))
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] == 32 and summary["timesteps"] == 48


def test_other_checkpoint_frequency_continues_with_override(run, home):
    summary = resume(home, run, recipe=home / "sparse.toml", timesteps=64, override=["run.checkpoint_every"])
    assert summary["timesteps"] == 64
    assert json.loads((run / "run.json").read_text())["recipe"]["run"]["checkpoint_every"] == 32


def test_resume_without_recipe_flags_uses_the_runs_own(run, home):
    """Not the CLI's defaults (grounded-qa, ppo-local): the recipe and preset stored in run.json."""
    result = run_cli(cli_args(run, resume=True, timesteps=48))
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["timesteps"] == 48 and summary["env"] == "smoke"


def test_a_run_json_from_before_presets_were_stored_still_resumes(run, home):
    """Such a run.json names its preset only: the name is compared, and the next one stores the preset."""
    edit_json(run / "run.json", lambda meta: {k: v for k, v in meta.items() if k != "env_config"})
    pattern = r'env: "smoke" in the run, ".*heavy-kl\.toml" now'
    fails_cleanly("api", run, pattern, RLPruneError, resume=True, env_preset=home / "heavy-kl.toml")
    assert resume(home, run, timesteps=48)["timesteps"] == 48
    assert json.loads((run / "run.json").read_text())["env_config"]["model"] == "tiny-random"


def test_a_run_killed_before_its_first_checkpoint_starts_over_on_resume(run, home):
    for name in ("last", "best", "policy", "tensorboard"):
        shutil.rmtree(run / name)
    (run / "summary.json").unlink()
    summary = resume(home, run)
    assert summary["timesteps"] == 32 and summary["resumed_from"] is None
    assert [h["timesteps"] for h in summary["validation_history"]] == [16, 32]


def test_a_model_option_that_is_not_the_runs_is_refused_on_resume(run):
    fails_cleanly(
        "cli",
        run,
        r"--model other-model differs from the preset's model tiny-random",
        RLPruneError,
        resume=True,
        model="other-model",
    )


# -- a start that fails leaves no run behind -------------------------------------------------


def test_a_start_that_cannot_load_its_model_leaves_no_run_and_a_rerun_works(home, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RLPruneError):
        train(
            TrainOptions(
                env=home / "other-model.toml",
                recipe=home / "tiny.toml",
                out=out,
                cache_dir=str(home / "refs"),
                quiet=True,
            )
        )
    assert not out.exists()
    summary = train(
        TrainOptions(env="smoke", recipe=home / "tiny.toml", out=out, cache_dir=str(home / "refs"), quiet=True)
    )
    assert summary["timesteps"] == 32 and summary["resumed_from"] is None


def test_a_start_with_a_bad_warm_start_leaves_no_run(home, tmp_path):
    out = tmp_path / "run"
    recipe = write_recipe(tmp_path, "bad-baseline", warm_start__baseline='"no-such-baseline"')
    with pytest.raises(RLPruneError):
        train(TrainOptions(env="smoke", recipe=recipe, out=out, cache_dir=str(home / "refs"), quiet=True))
    assert not (out / "run.json").exists()


def test_a_start_that_fails_in_training_before_a_checkpoint_leaves_no_run(home, tmp_path, monkeypatch):
    from sb3_contrib import MaskablePPO

    def broken(self, *args, **kwargs):
        (tmp_path / "run" / "tensorboard").mkdir(parents=True, exist_ok=True)  # as SB3 does when it starts
        raise RuntimeError("the machine fell over")

    out = tmp_path / "run"
    monkeypatch.setattr(MaskablePPO, "learn", broken)
    with pytest.raises(RuntimeError, match="fell over"):
        train(TrainOptions(env="smoke", recipe=home / "tiny.toml", out=out, cache_dir=str(home / "refs"), quiet=True))
    assert not out.exists()
    monkeypatch.undo()
    monkeypatch.setenv("RLPRUNE_HOME", str(home / "rlprune-home"))
    assert (
        train(TrainOptions(env="smoke", recipe=home / "tiny.toml", out=out, cache_dir=str(home / "refs"), quiet=True))[
            "timesteps"
        ]
        == 32
    )
