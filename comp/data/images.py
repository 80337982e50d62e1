"""Image files to HxWx3 uint8 RGB arrays: PNG/JPEG/TIFF/... through OpenCV (16-bit and float scaled to
8 bits), DICOM through pydicom (the optional extra `comp[dicom]`), windowed to 8 bits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from comp.errors import CompError

DICOM_SUFFIXES = {".dcm", ".dicom"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"} | DICOM_SUFFIXES


def is_image(name: str | Path) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | Path) -> np.ndarray:
    """Any image file as an HxWx3 uint8 RGB array: grey, RGBA, palette, 16-bit and DICOM included."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return _as_rgb(read_dicom(path))
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CompError(f"Cannot read image {path}: the file is missing, empty or not an image.")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def _pydicom(path: str | Path):
    try:
        import pydicom
    except ImportError:
        raise CompError(
            f"Reading DICOM images ({path}) needs pydicom, which is not installed.",
            hint="Install the extra: pip install 'comp[dicom]' (or pip install pydicom).",
        ) from None
    return pydicom


def check_readers(paths) -> None:
    """CompError naming the optional extra when some of these files need one that is not installed (DICOM:
    pydicom), so that the survey says so rather than finding no readable image."""
    dicom = next((p for p in paths if Path(p).suffix.lower() in DICOM_SUFFIXES), None)
    if dicom is not None:
        _pydicom(dicom)


def read_dicom(path: str | Path) -> np.ndarray:
    """A DICOM image as uint8: modality values (rescale slope/intercept) mapped through the file's first
    window (WindowCenter/WindowWidth), or its own min..max without one; MONOCHROME1 inverted."""
    pydicom = _pydicom(path)
    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise CompError(f"Cannot read DICOM image {path}: {exc}") from None
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # colour (RGB, already 8-bit in practice)
        return pixels.astype(np.uint8)
    if pixels.ndim != 2:
        raise CompError(f"DICOM image {path} holds {pixels.shape} pixels: comp reads single 2-D frames.")
    values = pixels.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1)) + float(
        getattr(ds, "RescaleIntercept", 0)
    )
    low, high = _window(ds, values)
    scaled = np.clip((values - low) / max(high - low, 1e-9), 0, 1) * 255
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 255 - scaled
    return np.round(scaled).astype(np.uint8)


def _window(ds, values: np.ndarray) -> tuple[float, float]:
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is not None and width is not None:
        c, w = _first(center), _first(width)
        return c - w / 2, c + w / 2
    return float(values.min()), float(values.max())


def _first(value) -> float:
    """A DICOM number, or the first of several (files may carry more than one window)."""
    try:
        return float(value)
    except TypeError:
        return float(value[0])


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the file's header; None when it cannot be read."""
    try:
        if Path(path).suffix.lower() in DICOM_SUFFIXES:
            ds = _pydicom(path).dcmread(str(path), stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows)
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, AttributeError, CompError):
        return None


def image_sizes(paths: list) -> Counter:
    """(width, height) -> count, from the files' headers (unreadable files are skipped)."""
    return Counter(size for p in paths if (size := image_size(p)) is not None)


def describe_sizes(sizes: Counter) -> str:
    if not sizes:
        return "none readable"
    total = sum(sizes.values())
    (w, h), n = sizes.most_common(1)[0]
    if n == total:
        return f"{w}x{h} (all {total} sampled)"
    widths = [s[0] for s in sizes]
    heights = [s[1] for s in sizes]
    return (
        f"{len(sizes)} sizes in {total} sampled, most common {w}x{h} ({n}), "
        f"width {min(widths)}-{max(widths)}, height {min(heights)}-{max(heights)}"
    )
