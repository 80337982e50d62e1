import pandas as pd
import pytest
from conftest import write_csv_competition

from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.folds import assign_folds, write_folds
from comp.errors import CompError


def _setup(project, **kwargs):
    write_csv_competition(project / "data/demo", **kwargs)
    config = load_config("configs/default.yaml", ["folds.k=4"])
    return config, load_competition(config.data)


def test_folds_are_stratified_and_cover_every_row_once(project):
    config, competition = _setup(project, n_classes=4, per_class=8)
    path, table, written = write_folds(config, competition)
    assert written and path.name == "demo_k4_s42.csv"
    assert sorted(table["id"]) == sorted(competition.train["id"])
    per_fold_class = pd.crosstab(table["fold"], table["label"])
    assert (per_fold_class == 2).all().all()  # 8 per class over 4 folds: exactly 2 of each in each fold


def test_folds_are_byte_for_byte_reproducible_and_seeded(project):
    config, competition = _setup(project)
    path, _, _ = write_folds(config, competition)
    first = path.read_bytes()
    path.unlink()
    write_folds(config, competition)
    assert path.read_bytes() == first
    other = assign_folds(competition.train, 4, seed=7)
    assert list(other["fold"]) != list(pd.read_csv(path)["fold"])


def test_existing_fold_file_that_differs_is_not_replaced_without_force(project):
    config, competition = _setup(project)
    path, _, _ = write_folds(config, competition)
    tampered = pd.read_csv(path)
    tampered.loc[0, "fold"] = (tampered.loc[0, "fold"] + 1) % 4
    tampered.to_csv(path, index=False)
    before = path.read_bytes()
    with pytest.raises(CompError, match="--force"):
        write_folds(config, competition)
    assert path.read_bytes() == before
    _, _, written = write_folds(config, competition, force=True)
    assert written and path.read_bytes() != before
    assert write_folds(config, competition)[2] is False  # same folds again: left alone


def test_class_smaller_than_k_is_refused(project):
    write_csv_competition(project / "data/demo", n_classes=3, per_class=3)
    config = load_config("configs/default.yaml", ["folds.k=5"])
    with pytest.raises(CompError, match=r"fewer images.*folds\.k=5"):
        write_folds(config, load_competition(config.data))


def test_duplicate_ids_are_refused(project):
    write_csv_competition(project / "data/demo")
    table = pd.read_csv(project / "data/demo/train.csv")
    pd.concat([table, table.iloc[:1]]).to_csv(project / "data/demo/train.csv", index=False)
    with pytest.raises(CompError, match="Duplicate training ids.*img_0_0"):
        load_competition(load_config("configs/default.yaml").data)


def test_group_folds_keep_groups_together(project):
    write_csv_competition(project / "data/demo", n_classes=2, per_class=12)
    table = pd.read_csv(project / "data/demo/train.csv")
    table["patient"] = [f"p{i // 3}" for i in range(len(table))]
    table.to_csv(project / "data/demo/train.csv", index=False)
    config = load_config("configs/default.yaml", ["folds.k=3", "folds.group_column=patient"])
    _, folds, _ = write_folds(config, load_competition(config.data))
    assert (folds.groupby("patient")["fold"].nunique() == 1).all()
    with pytest.raises(CompError, match="'site'.*folds.group_column"):
        write_folds(load_config("configs/default.yaml", ["folds.group_column=site"]), load_competition(config.data))
