"""sesemi's loggers, read back with each tool's own reader: TensorBoard's custom-scalars plugin and event files,
MLflow's client on its SQLite store, and W&B's offline run files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import read_json, run_cli, run_dirs
from logger_runs import mlflow_run, steps_of, wandb_history

from sesemi.loggers import LAYOUT, flat_config
from sesemi.metrics import CARD_WIDTH, class_tags, confusion_matrix_image, tag

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# A short FreeMatch run with a test set: every curve of the CUSTOM SCALARS layout is logged.
FREEMATCH = ["method=freematch", "data.test=${data.val}", "run.id=fm"]
# Runs that are resumed with more steps: a constant learning rate (a finished cosine schedule cannot be extended).
RESUMABLE = ["lr_scheduler=constant", "callbacks.images=null"]


def test_flat_config_has_the_dotted_keys_of_a_command_line():
    config = {"optimizer": {"lr": 0.03, "nesterov": True}, "run": {"resume": None}, "show": ["val/acc"], "e": {}}
    assert flat_config(config) == {
        "optimizer.lr": 0.03,
        "optimizer.nesterov": True,
        "run.resume": "null",
        "show": '["val/acc"]',
        "e": "{}",
    }


def test_class_tags_are_one_tag_component_each_and_unique():
    assert class_tags(FASHION)[0] == "T-shirt-top"
    assert class_tags(["crane, bird", "cat (small)", "café"]) == ["crane- bird", "cat -small-", "caf-"]
    assert class_tags(["a/b", "a-b", "a:b"]) == ["a-b", "a-b-1", "a-b-2"]
    assert all(tag(name) == tags for name, tags in zip(FASHION, class_tags(FASHION)))


def test_confusion_matrix_fits_a_tensorboard_card_at_its_default_size():
    """TensorBoard shrinks a wider image into the card with nearest-neighbour scaling, and the text is lost."""
    matrix = torch.randint(0, 1000, (10, 10))
    image = confusion_matrix_image(matrix, FASHION)
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert image.shape[2] <= CARD_WIDTH and image.shape[1] <= CARD_WIDTH
    assert (image[:, 40:, :60] < 128).any()  # the class names are drawn down the left


@pytest.fixture(scope="module")
def freematch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("tensorboard")
    run_cli(FREEMATCH, workdir)
    (run_dir,) = run_dirs(workdir / "runs")
    return run_dir


def _custom_scalars(logdir: Path):
    """TensorBoard's own CUSTOM SCALARS plugin over ``logdir``, as ``tensorboard --logdir`` serves it."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin
    from tensorboard.plugins.scalar.scalars_plugin import ScalarsPlugin

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(
        logdir=str(logdir), multiplexer=multiplexer, data_provider=provider, plugin_name_to_instance={}
    )
    scalars = ScalarsPlugin(context)
    context.plugin_name_to_instance[scalars.plugin_name] = scalars
    return CustomScalarsPlugin(context), list(multiplexer.Runs())


@pytest.mark.slow
def test_every_custom_scalars_chart_matches_the_tags_of_a_real_run(freematch_run: Path):
    """Each regular expression of each chart, matched by the plugin itself (from the start of the tag), finds the
    run's curves: per-class charts find one curve per class."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.context import RequestContext

    logdir = freematch_run.parents[1]  # runs/: what `tensorboard --logdir runs` reads
    plugin, (run,) = _custom_scalars(logdir)
    layout = plugin.layout_impl(RequestContext(), "")
    layout = json.loads(layout) if isinstance(layout, str) else layout
    charts = {chart["title"]: chart["multiline"]["tag"] for c in layout["category"] for chart in c["chart"]}
    assert charts == {title: tags for group in LAYOUT.values() for title, (_, tags) in group.items()}
    tags = set(EventAccumulator(str(freematch_run)).Reload().Tags()["scalars"])
    matched = {}
    for title, regexes in charts.items():
        for regex in regexes:
            found = set(plugin.scalars_impl(RequestContext(), run, regex, "")["tag_to_events"])
            assert found, f"chart {title!r}: {regex!r} matches none of {sorted(tags)}"
            assert found <= tags
            matched[title] = matched.get(title, set()) | found
    digits = [str(c) for c in range(10)]
    assert matched["recall per class"] == {f"freematch_pl_recall/{c}" for c in digits}
    assert matched["class thresholds (FreeMatch, FlexMatch)"] == {f"freematch_threshold/{c}" for c in digits}
    assert matched["precision per class"] <= {f"freematch_pl_precision/{c}" for c in digits}  # NaN: not logged
    assert matched["validation accuracy per class"] == {f"val_class_acc/{c}" for c in digits}


def _hparams_session(run_dir: Path) -> tuple[dict, list[str]]:
    """The HPARAMS session of a run dir's event files: its hyperparameters and the experiment's metric tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = EventAccumulator(str(run_dir)).Reload().PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    hparams = {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in start.session_start_info.hparams.items()
    }
    return hparams, [m.name.tag for m in experiment.metric_infos]


@pytest.mark.slow
def test_a_run_logs_its_config_as_hyperparameters_with_the_objective_as_metric(freematch_run: Path):
    hparams, metrics = _hparams_session(freematch_run)
    config = yaml.safe_load((freematch_run / ".hydra" / "config.yaml").read_text())
    assert hparams["optimizer.lr"] == config["optimizer"]["lr"]
    assert hparams["method.loss_heads.freematch._target_"] == "sesemi.losses.FreeMatchHead"
    assert hparams["run.id"] == "fm" and metrics == ["val/acc"]
    saved = yaml.safe_load((freematch_run / "hparams.yaml").read_text())
    assert saved["optimizer.lr"] == config["optimizer"]["lr"] and saved["trainer.max_steps"] == 6


@pytest.mark.slow
def test_tensorboard_names_each_run_by_its_run_dir(freematch_run: Path):
    _, runs = _custom_scalars(freematch_run.parents[1])
    assert runs == [f"fm/{freematch_run.name}"]


@pytest.mark.slow
def test_each_job_of_a_hydra_grid_logs_its_own_config(workdir: Path):
    run_cli(
        ["-m", "run.id=grid", "optimizer.lr=0.01,0.1", "trainer.max_steps=2", "trainer.val_check_interval=2"], workdir
    )
    jobs = run_dirs(workdir / "runs" / "grid")
    assert sorted(_hparams_session(job)[0]["optimizer.lr"] for job in jobs) == [0.01, 0.1]
    _, runs = _custom_scalars(workdir / "runs")
    assert sorted(runs) == sorted(job.relative_to(workdir / "runs").as_posix() for job in jobs)


def _write_folder(root: Path, classes: list[str]) -> None:
    from sesemi.datasets import Digits

    digits = Digits(split="train")
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in [i for i in range(400) if digits.targets[i] == label][:12]:
            digits[i][0].save(root / name / f"{i}.png")


@pytest.mark.slow
def test_class_names_are_the_data_s_in_metrics_json_and_their_tags_in_the_curves(workdir: Path):
    classes = ["cat (small)", "crane, bird", "dog"]
    _write_folder(workdir / "data" / "images" / "train", classes)
    _write_folder(workdir / "data" / "images" / "val", classes)
    folder = ["data=image_folder", "augment=digits", "data.train.mode=L", "data.labeled_batch_size=6"]
    run_cli([*folder, "data.labels_per_class=2"], workdir)
    (run_dir,) = run_dirs(workdir / "runs")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert read_json(run_dir / "metrics.json")["classes"]["val"]["classes"] == classes
    scalars = EventAccumulator(str(run_dir)).Reload().Tags()["scalars"]
    assert {t for t in scalars if t.startswith("val_class_acc/")} == {f"val_class_acc/{t}" for t in class_tags(classes)}
    assert {t.split("/")[1] for t in scalars if t.startswith("fixmatch_pl_recall/")} == set(class_tags(classes))


@pytest.mark.slow
def test_a_resumed_run_continues_its_mlflow_run(workdir: Path):
    run_cli(["logger=[tensorboard,mlflow]", *RESUMABLE, "run.id=ml"], workdir)
    (run_dir,) = run_dirs(workdir / "runs")
    client, first = mlflow_run(run_dir)
    assert read_json(run_dir / "loggers.json")["mlflow"]["tracking_uri"] == f"sqlite:///{workdir}/runs/mlflow.db"
    run_cli([f"run.resume={run_dir}", "trainer.max_steps=12"], workdir)
    client, run = mlflow_run(run_dir)
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    assert run.info.run_name == run_dir.name
    (experiment,) = [e for e in client.search_experiments() if e.name == "ml"]
    assert len(client.search_runs([experiment.experiment_id])) == 1  # one MLflow run for the run dir
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == list(range(12))  # every step once, the resumed attempt's after the first's
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [2, 5, 8, 11]
    assert run.data.params["optimizer.lr"] == str(
        yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"]
    )
    assert run.data.params["trainer.max_steps"] == "6"  # MLflow keeps a parameter's first value


@pytest.mark.slow
def test_a_resumed_run_continues_its_wandb_offline_run(workdir: Path):
    env = {"WANDB_MODE": "offline"}
    run_cli(["logger=[tensorboard,wandb]", *RESUMABLE, "run.id=wb"], workdir, env=env)
    (run_dir,) = run_dirs(workdir / "runs")
    run_cli([f"run.resume={run_dir}", "trainer.max_steps=12"], workdir, env=env)
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 2  # one per attempt
    ids, rows, config = wandb_history(run_dir)
    assert ids == {read_json(run_dir / "loggers.json")["wandb"]["id"]}  # one W&B run
    assert steps_of(rows, "train/loss") == list(range(12))  # every step once, in order
    assert config["optimizer.lr"] == yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"]
