"""Sample sets for robustness specs and gates.

Two formats:

* ``DATA.npz`` with ``x`` (``[N, *sample_shape]``) and ``y`` (``[N]`` integer labels). The
  model input's batch axis is the sample axis: for an ONNX input of shape ``[1, 64]`` (or
  ``[batch, 64]``), ``x`` is ``[N, 64]``; ``x`` of shape ``[N, 1, 64]`` is accepted as well.
* A folder holding ``labels.csv`` with rows ``FILE,LABEL`` (an optional header row whose label
  is not an integer is skipped; FILE is relative to the folder). Each FILE is a ``.npy`` array
  holding one sample. PNG/JPEG/BMP files are read with Pillow when it is installed (pixel
  values divided by 255; greyscale images give ``[H, W]``, colour ``[H, W, C]``, transposed to
  ``[C, H, W]`` when that is what the model's input asks for).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verifier.errors import NncertError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


class DataError(NncertError):
    """The sample set cannot be read or does not fit the model."""


@dataclass(frozen=True)
class Dataset:
    """Samples ``x`` ([N, *input_shape], float64), labels ``y`` ([N] int64), sample names."""

    x: np.ndarray
    y: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)


def load_dataset(path: str | Path, input_shape: tuple[int, ...], n_classes: int) -> Dataset:
    """Read ``path`` (.npz or folder) and shape every sample as the model's ``input_shape``."""
    path = Path(path)
    if path.is_dir():
        x, y, names = _load_folder(path, input_shape)
    elif path.is_file():
        x, y = _load_npz(path)
        names = tuple(f"sample_{i:04d}" for i in range(len(y)))
    else:
        raise DataError(f"data {str(path)!r} does not exist")
    x = fit_samples(x, input_shape, str(path))
    y = check_labels(y, len(x), n_classes, str(path))
    return Dataset(x, y, names)


def load_inputs(path: str | Path, input_shape: tuple[int, ...]) -> tuple[np.ndarray, tuple]:
    """Samples only (``x`` and names; labels, when present, are read but not returned), for
    gates whose labels come from a reference model. Same formats as :func:`load_dataset`."""
    path = Path(path)
    if path.is_dir():
        x, _, names = _load_folder(path, input_shape)
    elif path.is_file():
        x = _load_npz(path, need_y=False)[0]
        names = tuple(f"sample_{i:04d}" for i in range(len(x)))
    else:
        raise DataError(f"data {str(path)!r} does not exist")
    return fit_samples(x, input_shape, str(path)), names


def _load_npz(path: Path, need_y: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as f:
            wanted = ("x", "y") if need_y else ("x",)
            missing = [k for k in wanted if k not in f.files]
            if missing:
                raise DataError(f"data {str(path)!r} lacks array(s) {', '.join(missing)} "
                                f"(has: {', '.join(f.files) or 'none'}); expected "
                                f"{' and '.join(wanted)}")
            return np.asarray(f["x"]), np.asarray(f["y"]) if "y" in f.files else None
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"data {str(path)!r} is not a readable .npz file ({exc})") from None


def _load_folder(folder: Path, input_shape: tuple[int, ...]):
    table = folder / "labels.csv"
    if not table.is_file():
        raise DataError(f"data folder {str(folder)!r} has no labels.csv (rows FILE,LABEL)")
    rows = _read_labels(table)
    xs = [_load_sample(folder / name, input_shape) for name, _ in rows]
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DataError(f"data folder {str(folder)!r}: samples differ in shape {sorted(shapes)}")
    return np.stack(xs), np.array([lab for _, lab in rows]), tuple(n for n, _ in rows)


def _read_labels(table: Path) -> list[tuple[str, int]]:
    rows: list[tuple[str, int]] = []
    with open(table, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise DataError(f"{table}:{lineno}: expected FILE,LABEL")
            try:
                label = int(row[1].strip())
            except ValueError:
                if lineno == 1 and not rows:
                    continue  # header
                raise DataError(f"{table}:{lineno}: label {row[1]!r} is not an integer") from None
            rows.append((row[0].strip(), label))
    if not rows:
        raise DataError(f"{table} lists no samples")
    return rows


def _load_sample(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"sample file {str(path)!r} (from labels.csv) does not exist")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"sample {str(path)!r} is not a readable .npy file ({exc})") from None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _load_image(path, input_shape)
    raise DataError(f"sample {str(path)!r}: unsupported file type (use .npy or an image)")


def _load_image(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"sample {str(path)!r} is an image, which needs Pillow "
                        "(pip install pillow); or store samples as .npy") from None
    with Image.open(path) as img:
        arr = np.asarray(img, dtype=np.float64) / 255.0
    sample = input_shape[1:] if len(input_shape) > 1 and input_shape[0] == 1 else input_shape
    if arr.ndim == 3 and len(sample) == 3 and sample[0] == arr.shape[2] != sample[2]:
        arr = arr.transpose(2, 0, 1)  # HWC image for a CHW model
    return arr


def fit_samples(x: np.ndarray, input_shape: tuple[int, ...], source: str) -> np.ndarray:
    """``x`` reshaped to ``[N, *input_shape]`` (float64), or DataError naming both shapes.

    Accepted: ``x.shape[1:] == input_shape`` or, when the input's first axis is a batch axis
    of size 1, ``x.shape[1:] == input_shape[1:]``.
    """
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"data {source!r}: x has dtype {x.dtype}, expected real numbers")
    if x.ndim < 1 or len(x) == 0:
        raise DataError(f"data {source!r}: x has no samples (shape {list(x.shape)})")
    per = tuple(x.shape[1:])
    ok = per == tuple(input_shape) or (
        len(input_shape) > 1 and input_shape[0] == 1 and per == tuple(input_shape[1:]))
    if not ok:
        want = list(input_shape[1:]) if len(input_shape) > 1 and input_shape[0] == 1 else list(
            input_shape)
        raise DataError(f"data {source!r}: x has shape {list(x.shape)}, but the model's input "
                        f"{list(input_shape)} needs [N, {', '.join(map(str, want))}]")
    x = x.astype(np.float64).reshape(len(x), *input_shape)
    if not np.isfinite(x).all():
        raise DataError(f"data {source!r}: x holds NaN or infinite values")
    return x


def check_labels(y: np.ndarray, n: int, n_classes: int, source: str) -> np.ndarray:
    """Labels as int64 ``[N]`` in ``[0, n_classes)``, or DataError."""
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"data {source!r}: y has shape {list(y.shape)}, expected [{n}] "
                        "(one integer label per sample)")
    if np.issubdtype(y.dtype, np.floating):
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"data {source!r}: y holds non-integer labels")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"data {source!r}: y has dtype {y.dtype}, expected integer labels")
    y = y.astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        raise DataError(f"data {source!r}: label {int(y[bad[0]])} of sample {int(bad[0])} is "
                        f"outside [0, {n_classes}) (the model has {n_classes} outputs)")
    return y
