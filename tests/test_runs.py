"""comp.runs: the run folder's fold and seed sub-folders are found by their numbers."""

from pathlib import Path

from comp.runs import fold_dirs, fold_number, seed_dirs


def test_fold_and_seed_folders_are_found_in_number_order_and_nothing_else_counts(tmp_path: Path):
    run = tmp_path / "exp"
    for name in ("fold10", "fold2", "fold0", "foldx", "seed43", "seed7", "seeds", "report"):
        (run / name).mkdir(parents=True)
    (run / "fold3").write_text("a file, not a fold")
    (run / "seeds.json").write_text('{"seeds": [7, 43]}')

    assert fold_dirs(run) == {0: run / "fold0", 2: run / "fold2", 10: run / "fold10"}
    assert list(fold_dirs(run)) == [0, 2, 10]  # numeric order: fold10 after fold2
    assert seed_dirs(run) == {7: run / "seed7", 43: run / "seed43"}
    assert list(seed_dirs(run)) == [7, 43]
    assert (fold_number(run / "fold10"), fold_number(run / "foldx"), fold_number(run / "seed7")) == (10, None, None)
    assert fold_dirs(tmp_path / "missing") == {} and seed_dirs(tmp_path / "missing") == {}
