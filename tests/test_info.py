"""comp info: what a config amounts to, before and while it trains."""

import timm
from conftest import TINY_RUN, on_competition, sets, write_csv_competition
from typer.testing import CliRunner

from comp.cli import app
from comp.data.competition import load_competition
from comp.info import describe_run
from comp.models.factory import count_parameters

runner = CliRunner()
FAST = [*TINY_RUN, *on_competition("shapes")]


def test_info_reports_the_model_data_and_folds_as_training_goes(project, tiny_config):
    write_csv_competition(project / "data/shapes", n_classes=4, per_class=6)
    config = tiny_config("model.head.hidden=32")
    run = describe_run(config, load_competition(config.data))
    reference = timm.create_model("resnet18_cifar", num_classes=4, widths=[8, 16, 32, 64])
    expected_head = 64 * 32 + 32 + 2 * 32 + 32 * 4 + 4  # linear(64->32), batch norm, linear(32->4)
    assert run.model.total == count_parameters(reference)[0] - (64 * 4 + 4) + expected_head
    assert run.model.trainable == run.model.total and run.model.head == expected_head
    assert run.image_size == 16 and run.model.mean == (0.485, 0.456, 0.406)
    assert run.class_counts == {0: 6, 1: 6, 2: 6, 3: 6}
    assert run.fold_file.name == "shapes_k2_s42.csv" and not run.fold_file_exists
    assert run.fold_states == {0: "new", 1: "new"} and run.cv_score is None

    assert runner.invoke(app, ["folds", *sets(*FAST)]).exit_code == 0
    assert runner.invoke(app, ["train", "--fold", "0", *sets(*FAST)]).exit_code == 0
    result = runner.invoke(app, ["info", *sets(*FAST, "model.max_params=1000")])  # reported, not refused
    assert result.exit_code == 0, result.output + repr(result.exception)
    text = " ".join(result.output.split())
    assert f"{count_parameters(reference)[0]:,} parameters" in text and "limit 1,000 exceeded" in text
    assert "4 classes, 24 images (0: 6, 1: 6, 2: 6, 3: 6)" in text
    assert "folds/shapes_k2_s42.csv: exists" in text and "fold 0 finished, fold 1 new" in text


def test_info_names_the_metric_cv_json_records(project):
    write_csv_competition(project / "data/shapes", n_classes=4, per_class=6)
    (project / "runs/shapes").mkdir(parents=True)
    (project / "runs/shapes/cv.json").write_text('{"metric": "log_loss", "oof": 0.25}')
    result = runner.invoke(app, ["info", *sets(*FAST)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "CV log_loss (OOF) 0.2500" in result.output and "accuracy" not in result.output


def test_info_shows_each_seeds_folds_and_cv_then_the_seed_averaged_cv(project):
    write_csv_competition(project / "data/shapes", n_classes=4, per_class=6)
    run = project / "runs/shapes"
    (run / "seed42/fold0").mkdir(parents=True)
    (run / "seed42/fold0/summary.json").write_text("{}")  # fold 0 of seed 42 finished
    (run / "seeds.json").write_text('{"seeds": [42, 43]}')
    (run / "cv.json").write_text('{"metric": "accuracy", "oof": 0.8, "seeds": {"42": {"oof": 0.75}}}')
    result = runner.invoke(app, ["info", *sets(*FAST)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    text = " ".join(result.output.split())
    assert "seed 42: fold 0 finished, fold 1 new; CV accuracy (OOF) 0.7500" in text
    assert "seed 43: fold 0 new, fold 1 new CV accuracy (OOF, mean of seeds 42, 43) 0.8000" in text
