"""JPEG decoding for the decode-once cache: images/s of the disk cache's build (data.cache: disk), decode: cpu
(OpenCV, one file a task on every core) against decode: device (torchvision's decode_jpeg in batches on the
training device: nvJPEG on CUDA, libjpeg on the CPU).

Each build starts with no array on disk but the files' hashes known, so it times what differs between the two:
reading, decoding, resizing to data.image_size and writing the array. The JPEGs are photo-like (smooth colours
and grain, quality 90); a set of distinct images is written over and over under new names, and every file is
decoded (the build is checked to decode them all). A first untimed round warms up both decoders (CUDA's context,
nvJPEG's handles). After the rates: how far the device's pixels are from OpenCV's, at full size and in the arrays.

    python benchmarks/jpeg_decode.py                     # 2,000 JPEGs of 512 px to 224 px, on the training device
    python benchmarks/jpeg_decode.py --images 64 --size 128 --set data.image_size=32 --rounds 1   # a quick check
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from common import argument_parser, begin, bench_config, interleaved, print_table, ratios, scratch_project, spread

from comp.data.decoded import cache_home, open_decoded
from comp.data.images import read_image, read_images
from comp.device import resolve_device, usable_cpu_count

DISTINCT = 100  # distinct images among the files


def photo_like(seed: int, size: int) -> np.ndarray:
    """A BGR image with a photo's mix: smooth colours (coarse noise upscaled) under a fine grain."""
    rng = np.random.default_rng(seed)
    colours = cv2.resize(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(colours + rng.normal(0, 8, colours.shape), 0, 255).astype(np.uint8)


def write_jpegs(folder: Path, n: int, size: int) -> list[str]:
    folder.mkdir(parents=True)
    distinct = [photo_like(seed, size) for seed in range(min(n, DISTINCT))]
    paths = [str(folder / f"{i:06d}.jpg") for i in range(n)]

    def write(i: int) -> None:
        cv2.imwrite(paths[i], distinct[i % len(distinct)], [cv2.IMWRITE_JPEG_QUALITY, 90])

    with ThreadPoolExecutor(usable_cpu_count()) as pool:  # cv2 releases the GIL
        list(pool.map(write, range(n)))
    return paths


def drop_arrays() -> None:
    """Every decoded array of the cache, its hash index kept."""
    for entry in (cache_home() / "decoded").glob("*/*px-*"):
        shutil.rmtree(entry)


def build_rate(paths: list[str], image_size: int, device) -> float:
    """Images/s of one build of the disk cache (device None: OpenCV)."""
    drop_arrays()
    start = time.perf_counter()
    built = open_decoded(paths, image_size, device)
    seconds = time.perf_counter() - start
    assert built.decoded == len(paths), f"{built.decoded} of {len(paths)} images decoded"
    return len(paths) / seconds


def differences(paths: list[str], image_size: int, device) -> list[tuple[str, str, str]]:
    """Max and mean absolute difference of the device's pixels from OpenCV's: full size on up to 64 files, and
    every row of the two arrays at image_size (in blocks: the whole difference would take GBs)."""
    sample = paths[:64]
    full = [absolute(image, read_image(path)) for image, path in zip(read_images(sample, device), sample, strict=True)]
    drop_arrays()
    opencv, on_device = open_decoded(paths, image_size).array, open_decoded(paths, image_size, device).array
    rows = [absolute(on_device[i : i + 256], opencv[i : i + 256]) for i in range(0, len(paths), 256)]
    return [
        (f"{len(sample)} files, full size", *levels(full)),
        (f"{len(paths)} rows at {image_size} px", *levels(rows)),
    ]


def absolute(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.abs(image.astype(np.int16) - reference)


def levels(differences: list[np.ndarray]) -> tuple[str, str]:
    """The largest difference, and the mean over every pixel."""
    total = sum(int(d.sum()) for d in differences) / sum(d.size for d in differences)
    return str(max(int(d.max()) for d in differences)), f"{total:.3f}"


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEGs generated")
    parser.add_argument("--size", type=int, default=512, help="the JPEGs' side in pixels")
    args = parser.parse_args()
    begin("JPEG decoding: the disk cache's build, decode: cpu against decode: device", args)

    with scratch_project(args.keep) as project:
        os.environ["COMP_CACHE"] = str(project / "cache")  # a cache of its own
        config = bench_config(project / "data", ["data.image_size=224", *args.overrides], args.config)
        device, image_size = resolve_device(config.train.device), config.data.image_size
        paths = write_jpegs(project / "data" / "train", args.images, args.size)
        print(f"{args.images} JPEGs of {args.size} px to {image_size} px, decode: device on {device}", flush=True)
        cases = {
            "cpu": lambda: build_rate(paths, image_size, None),
            "device": lambda: build_rate(paths, image_size, device),
        }
        for warm_up in cases.values():
            warm_up()
        rates = interleaved(cases, args.rounds)

        rows = [(name, spread(values)) for name, values in rates.items()]
        rows.append(("device / cpu", spread(ratios(rates["device"], rates["cpu"]))))
        print_table("Images/s of the build (decode, resize, write), median (min..max)", rows, ("decode", "images/s"))
        print_table(
            f"Pixels, decode: device on {device} against OpenCV, in levels",
            differences(paths, image_size, device),
            ("images", "max", "mean"),
        )


if __name__ == "__main__":
    main()
