"""comp: a Kaggle image-classification competition harness."""

__version__ = "0.1.0"
