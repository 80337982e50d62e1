import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import write_csv_competition, write_folders_competition

from comp.config import DataConfig
from comp.data.competition import decide_classes, load_competition, normalise_labels, read_image
from comp.errors import CompError


def test_numeric_labels_sort_numerically_and_stay_integers():
    folders = [str(i) for i in range(12)]
    assert decide_classes(folders) == list(range(12))  # ImageFolder's order would be 0, 1, 10, 11, 2, ...
    assert decide_classes(["Black-grass", "Charlock", "Cleavers"]) == ["Black-grass", "Charlock", "Cleavers"]
    assert normalise_labels(["007", "8"]) == ["007", "8"]  # zero-padded labels are names, not numbers


def test_folders_layout_with_numeric_class_folders(tmp_path):
    write_folders_competition(tmp_path, n_classes=12, per_class=2)
    competition = load_competition(DataConfig(root=str(tmp_path)))
    assert competition.layout == "folders"
    assert competition.classes == list(range(12))
    row = competition.train.set_index("id").loc["10/10_0.png"]
    assert row["label"] == 10 and isinstance(row["label"], int)


@pytest.mark.parametrize("with_suffix", [False, True])
def test_csv_layout_ids_with_and_without_extension(tmp_path, with_suffix):
    write_csv_competition(tmp_path, ids_with_suffix=with_suffix)
    competition = load_competition(DataConfig(root=str(tmp_path)))
    assert competition.layout == "csv"
    assert len(competition.train) == 32 and competition.classes == [0, 1, 2, 3]
    assert all(p.endswith(".png") for p in competition.train["path"])
    assert list(competition.test["id"]) == [f"x{i}" for i in range(6)]


def test_every_image_kind_comes_out_rgb_uint8(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([grey, grey, grey, np.full_like(grey, 128)]))
    cv2.imwrite(str(tmp_path / "deep.png"), grey.astype(np.uint16) * 257)
    from PIL import Image

    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    for name in ["grey", "rgba", "deep", "palette"]:
        image = read_image(tmp_path / f"{name}.png")
        assert image.shape == (8, 8, 3) and image.dtype == np.uint8, name
        assert image[0, 5, 0] == 5 and image[7, 7, 2] == 63, name


def test_corrupt_image_is_named_with_its_row(tmp_path):
    write_csv_competition(tmp_path)
    (tmp_path / "train" / "img_1_3.png").write_bytes(b"not a png")
    with pytest.raises(CompError, match="img_1_3.png"):
        read_image(tmp_path / "train" / "img_1_3.png")
    (tmp_path / "train" / "img_2_0.png").unlink()
    with pytest.raises(CompError, match=r"img_2_0'.*train.csv, line 18"):
        load_competition(DataConfig(root=str(tmp_path)))


def test_missing_label_column_is_a_clear_error(tmp_path):
    write_csv_competition(tmp_path)
    with pytest.raises(CompError) as err:
        load_competition(DataConfig(root=str(tmp_path), label_column="class"))
    assert "'class'" in err.value.message and "data.label_column" in err.value.message
    assert "'label'" in err.value.message  # lists the columns that exist


def test_missing_test_images_are_listed(tmp_path):
    write_csv_competition(tmp_path)
    sample = pd.read_csv(tmp_path / "sample_submission.csv")
    pd.concat([sample, pd.DataFrame({"id": ["ghost1", "ghost2"], "label": 0})]).to_csv(
        tmp_path / "sample_submission.csv", index=False
    )
    with pytest.raises(CompError, match=r"2 test image\(s\).*ghost1, ghost2"):
        load_competition(DataConfig(root=str(tmp_path)))
