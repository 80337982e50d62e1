"""Image files to HxWx3 uint8 RGB arrays: PNG/JPEG/TIFF/... through OpenCV (16-bit and float scaled to
8 bits), DICOM through pydicom (the optional extra `comp[dicom]`), windowed to 8 bits; batches of JPEGs
through torchvision's decoder on a device (data.decode: device)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from comp.errors import CompError

DICOM_SUFFIXES = {".dcm", ".dicom"}
JPEG_SUFFIXES = {".jpg", ".jpeg"}
IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"} | JPEG_SUFFIXES | DICOM_SUFFIXES
# Files per decode_jpeg call with data.decode: device. nvJPEG decodes a list in one batched call; a batch's
# decoded images are on the device together until copied back.
DEVICE_DECODE_BATCH = 64
OPENCV_DECODER = "opencv"  # read_image's, without data.decode: device
# torchvision keeps one nvJPEG decoder per process, not made for calls from several threads at once (its
# issues 8587, 9060): the caches' threads read files in parallel and take turns on the device.
_CUDA_DECODE = threading.Lock()


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


def decoder_name(device: torch.device | None) -> str:
    """What decodes the JPEGs: OpenCV (read_image, device None), or torchvision's decode_jpeg on CUDA (nvJPEG)
    or on the CPU (libjpeg, for any other device). The caches key their images by it: nvJPEG's pixels differ
    from libjpeg's by a level or two."""
    if device is None:
        return OPENCV_DECODER
    return "torchvision-cuda" if device.type == "cuda" else "torchvision-cpu"


def decode_batches(items: Sequence, device: torch.device | None) -> list[Sequence]:
    """`items` in the batches read_images takes on `device`: one file at a time for OpenCV (device None), so
    that every core's thread stays busy; DEVICE_DECODE_BATCH files for a device's decoder."""
    size = 1 if device is None else DEVICE_DECODE_BATCH
    return [items[start : start + size] for start in range(0, len(items), size)]


def read_images(paths: Sequence[str | Path], device: torch.device | None) -> list[np.ndarray]:
    """A batch of image files as HxWx3 uint8 RGB arrays, in order: by read_image (device None: data.decode cpu),
    or the JPEGs decoded together by torchvision's decode_jpeg on `device` and copied back (nvJPEG on CUDA;
    torchvision's libjpeg on the CPU for any other device, so that a CPU run takes this path too), every other
    file by read_image. The decoder gives all of a batch or nothing: when it rejects one file (CMYK, corrupt, a
    JPEG nvJPEG does not take), the batch's JPEGs go through read_image one by one, which reads what OpenCV
    reads and raises CompError for the rest."""
    if device is None:
        return [read_image(path) for path in paths]
    jpegs = [i for i, path in enumerate(paths) if Path(path).suffix.lower() in JPEG_SUFFIXES]
    decoded = {}
    if jpegs:
        try:
            decoded = dict(zip(jpegs, decode_jpegs([paths[i] for i in jpegs], device), strict=True))
        except (RuntimeError, OSError):
            pass  # read_image below names the file it cannot read, as it does without data.decode: device
    return [decoded[i] if i in decoded else read_image(path) for i, path in enumerate(paths)]


def decode_jpegs(paths: Sequence[str | Path], device: torch.device) -> list[np.ndarray]:
    """JPEG files decoded in one call of torchvision's decode_jpeg on `device` (the CPU unless it is CUDA),
    as HxWx3 uint8 RGB arrays on the host. Raises what the decoder raises."""
    # Imported here: torchvision deprecates its image decoders (0.29), and only data.decode: device needs them.
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.from_numpy(np.fromfile(path, dtype=np.uint8)) for path in paths]
    if device.type == "cuda":
        with _CUDA_DECODE:  # copied back inside: the decoder's work is done before the next thread's starts
            images = [image.cpu() for image in decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)]
    else:
        images = decode_jpeg(encoded, mode=ImageReadMode.RGB)
    return [image.permute(1, 2, 0).contiguous().numpy() for image in images]


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
