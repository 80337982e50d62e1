"""comp: a Kaggle image-classification competition harness."""

import os

# albumentations asks PyPI for a newer version of itself at every import unless this is set: a request
# nobody asked for, a 2 s wait without internet (Kaggle's scoring rerun). Set here, before anything of
# comp can import it; a value the user set is kept.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
