"""Every common Kaggle image-competition shape, from `comp download` to a scored submission: one table row each.

    python benchmarks/shapes.py                         # every shape of tests/shapes.py: a few minutes on 2 cores
    python benchmarks/shapes.py cifar-10 images-dcm     # some of them

Each replica (tests/shapes.py: scikit-learn's digits written in a real competition's layout, the test
labels held back) is served by the fake Kaggle (tests/fake_kaggle.py) and taken, in a scratch project,
through `comp download` (which surveys it and writes configs/<slug>.yaml), then, on that config unchanged
but for a tiny run (tests/shapes.py's TINY: 2 folds, 6 epochs, 2 TTA views), `comp folds`,
`comp train --fold all`, `comp predict --tta`, `comp ensemble` and `comp validate`. The submission is
checked cell by cell (ids, order, columns, label type) and scored with cv.json's metric against the
held-back labels.

The table: what the survey detected (layout, task, metric, submission format, image size, the suggested
folds.group_column, whose groups each stay in one fold of the run), the OOF score of the 2-fold ensemble
(CV), the submission's score on the held-back test labels in the same metric, and a uniform guess's
(every class equally likely) held-back score beside it. The replicas are tiny (60 to 192 training images
of 16 px, 8 to 25 test images), so the scores say that each shape learns and is written right, not how
good a model is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
# One thread, as in the tests: runs this small move with the order of float sums, and so with the thread count.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shapes  # noqa: E402  (tests/ holds the replicas and the fake Kaggle)
import torch  # noqa: E402
from fake_kaggle import FakeKaggle, run_comp  # noqa: E402

HEADER = ["shape", "layout", "task", "metric", "format", "image size", "group column", "CV", "held-back", "uniform"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slugs", nargs="*", help=f"shapes to run (default: all): {', '.join(shapes.SHAPES)}")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project (configs, runs, submissions)")
    args = parser.parse_args()
    slugs = args.slugs or list(shapes.SHAPES)
    unknown = [s for s in slugs if s not in shapes.SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(shapes.SHAPES)}")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    scratch = Path(tempfile.mkdtemp(prefix="comp-shapes-"))
    project, home = scratch / "project", scratch / "home"
    shutil.copytree(REPO / "comp/configs", project / "configs")
    home.mkdir()
    os.environ["COMP_CACHE"] = str(scratch / "cache")  # decoded images: the scratch folder's, not ~/.cache's
    os.chdir(project)
    rows, start = [], time.perf_counter()
    with FakeKaggle() as fake:
        for slug in slugs:
            run = shapes.from_download_to_submission(
                slug,
                scratch / "sources" / slug,
                project,
                fake,
                lambda s: run_comp(fake, home, "download", s),
            )
            rows.append(run.row(slug))
            print(" | ".join(rows[-1]), flush=True)
    assert fake.stray == [], "a request was meant for the real Kaggle"
    kept = f" (kept: {project})" if args.keep else ""
    print(f"\n{len(rows)} shapes in {time.perf_counter() - start:.0f} s{kept}\n")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if not args.keep:
        os.chdir(REPO)
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
