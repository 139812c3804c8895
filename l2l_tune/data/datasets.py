"""The image classification data sets: MNIST (IDX files) and scikit-learn's digits."""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike, NDArray

from .._validation import check_choice
from .download import MNIST_FILES, download_mnist, missing_files
from .idx import read_idx
from .paths import DATA_ENV_VAR, resolve_data_dir

__all__ = ["DATASETS", "ImageDataset", "load_dataset", "load_digits", "load_mnist"]

#: The data set names :func:`load_dataset` accepts.
DATASETS: tuple[str, ...] = ("mnist", "digits")

_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A classification data set of flattened grey-level images, split into train and test.

    The features a model sees are ``images / max_pixel`` (in ``[0, 1]``).

    Attributes:
        name: ``"mnist"`` or ``"digits"``.
        train_images: ``(n_train, n_features)`` ``uint8``, row-major flattened images.
        train_labels: ``(n_train,)`` ``int64`` in ``[0, n_classes)``.
        test_images: ``(n_test, n_features)`` ``uint8``.
        test_labels: ``(n_test,)`` ``int64``.
        max_pixel: The largest possible pixel value: 255 for MNIST, 16 for digits.
        n_classes: The number of classes (10).

    Raises:
        ValueError: (on construction) if the arrays have the wrong rank, type or
            lengths, train and test differ in ``n_features``, a label is outside
            ``[0, n_classes)``, or a pixel exceeds ``max_pixel``.
    """

    name: str
    train_images: NDArray[np.uint8]
    train_labels: NDArray[np.int64]
    test_images: NDArray[np.uint8]
    test_labels: NDArray[np.int64]
    max_pixel: float
    n_classes: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, numbers.Integral):
            raise ValueError(f"n_classes must be an integer >= 1, got {self.n_classes!r}")
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be an integer >= 1, got {self.n_classes}")
        if not float(self.max_pixel) > 0:
            raise ValueError(f"max_pixel must be > 0, got {self.max_pixel!r}")
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if not isinstance(images, np.ndarray) or images.ndim != 2 or images.dtype != np.uint8:
                raise ValueError(
                    f"{split}_images must be a 2-d uint8 array (n, n_features), got "
                    f"{getattr(images, 'dtype', type(images).__name__)} "
                    f"shape {getattr(images, 'shape', None)}"
                )
            if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype != np.int64:
                raise ValueError(
                    f"{split}_labels must be a 1-d int64 array, got "
                    f"{getattr(labels, 'dtype', type(labels).__name__)} "
                    f"shape {getattr(labels, 'shape', None)}"
                )
            if len(images) != len(labels):
                raise ValueError(
                    f"{split}_images has {len(images)} rows but {split}_labels has {len(labels)}"
                )
            if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
                raise ValueError(
                    f"{split}_labels must lie in [0, {self.n_classes}), found "
                    f"{labels.min()}..{labels.max()}"
                )
            if images.size and images.max() > self.max_pixel:
                raise ValueError(
                    f"{split}_images has a pixel {images.max()} above max_pixel={self.max_pixel}"
                )
        if self.train_images.shape[1] != self.test_images.shape[1]:
            raise ValueError(
                f"train_images has {self.train_images.shape[1]} features but test_images has "
                f"{self.test_images.shape[1]}"
            )

    @property
    def n_features(self) -> int:
        """The number of pixels per image (784 for MNIST, 64 for digits)."""
        return int(self.train_images.shape[1])

    @property
    def n_train(self) -> int:
        """The number of training examples."""
        return int(self.train_images.shape[0])

    @property
    def n_test(self) -> int:
        """The number of test examples."""
        return int(self.test_images.shape[0])

    def features(self, split: str = "train", dtype: DTypeLike = np.float64) -> NDArray[np.floating]:
        """The images of ``split`` scaled to ``[0, 1]``: ``images / max_pixel``.

        Args:
            split: ``"train"`` or ``"test"``.
            dtype: A floating type for the result.

        Returns:
            A new ``(n, n_features)`` array.

        Raises:
            ValueError: if ``split`` is not ``"train"`` or ``"test"``.
        """
        check_choice(split, "split", ("train", "test"))
        images = self.train_images if split == "train" else self.test_images
        return np.asarray(images, dtype=dtype) / np.asarray(self.max_pixel, dtype=dtype)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}, "
            f"max_pixel={self.max_pixel})"
        )


# ---------------------------------------------------------------------- MNIST
def _find(directory: Path, name: str) -> Path:
    """``directory/name`` if it exists, else ``directory/name.gz``."""
    raw = directory / name
    return raw if raw.is_file() else directory / f"{name}.gz"


def _read_split(directory: Path, split: str) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Images (flattened) and labels of one MNIST split, validated."""
    image_name, label_name = _SPLITS[split]
    image_path, label_path = _find(directory, image_name), _find(directory, label_name)
    images = read_idx(image_path, dtype=np.uint8, ndim=3)
    labels = read_idx(label_path, dtype=np.uint8, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{image_path} holds {images.shape[0]} images but {label_path} holds "
            f"{labels.shape[0]} labels; the files do not belong together (corrupt or mixed up)"
        )
    if labels.size and labels.max() >= 10:
        raise ValueError(f"{label_path}: labels must be digits 0..9, found {labels.max()}")
    flat = images.reshape(images.shape[0], -1).astype(np.uint8, copy=False)
    return flat, labels.astype(np.int64)


def _not_found(directory: Path, origin: str, missing: list[str]) -> FileNotFoundError:
    names = ", ".join(f"{name}[.gz]" for name in missing)
    state = "" if directory.is_dir() else " (the directory does not exist)"
    return FileNotFoundError(
        f"MNIST files not found in {directory}{state}, taken from {origin}. Missing: {names}. "
        f"Fix it in one of these ways: pass data_dir=<directory with the four IDX files, raw or "
        f".gz> (CLI: --data-dir DIR); set the environment variable {DATA_ENV_VAR} to that "
        f"directory; or pass download=True (CLI: --download) to fetch them, verified by "
        f"SHA-256, into {directory}."
    )


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None, *, download: bool = False
) -> ImageDataset:
    """Load MNIST from its four IDX files.

    The files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` are read from
    ``data_dir``, each either raw or gzip-compressed (``.gz``).

    Args:
        data_dir: The directory; ``None`` means ``$L2L_TUNE_DATA`` if set, else the
            default cache directory (see :func:`~l2l_tune.data.default_data_dir`).
        download: Fetch missing files first (see
            :func:`~l2l_tune.data.download_mnist`); files already present are used
            as they are, without network access.

    Returns:
        60000 training and 10000 test images of 784 ``uint8`` pixels,
        ``max_pixel=255``.

    Raises:
        FileNotFoundError: if files are missing and ``download`` is false; the
            message names the directory, the missing files and the ways to fix it.
        ValueError: naming the file, if a file is corrupt or truncated (bad gzip,
            wrong magic number, size mismatch), if images and labels disagree in
            number, or if ``data_dir`` is not a path.
        DownloadError: (an :class:`OSError`) if ``download`` is true and every
            mirror failed for a file.
    """
    directory, origin = resolve_data_dir(data_dir)
    missing = missing_files(directory, list(MNIST_FILES))
    if missing:
        if not download:
            raise _not_found(directory, origin, missing)
        download_mnist(directory)
    train_images, train_labels = _read_split(directory, "train")
    test_images, test_labels = _read_split(directory, "test")
    if train_images.shape[1] != test_images.shape[1]:
        raise ValueError(
            f"{directory}: training images have {train_images.shape[1]} pixels but test images "
            f"have {test_images.shape[1]}"
        )
    return ImageDataset(
        name="mnist",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        max_pixel=255.0,
    )


# ---------------------------------------------------------------------- digits
def _test_counts(counts: NDArray[np.int64], test_size: int) -> NDArray[np.int64]:
    """Per-class test counts summing to ``test_size``, proportional to ``counts``.

    Largest-remainder rounding, then adjusted so that every class keeps at least one
    example on each side (possible when ``len(counts) <= test_size <= sum - len``).
    """
    quota = test_size * counts / counts.sum()
    alloc = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - alloc), kind="stable")
    alloc[order[: test_size - int(alloc.sum())]] += 1
    while (alloc < 1).any():
        alloc[np.argmin(alloc)] += 1
        alloc[np.argmax(np.where(alloc > 1, alloc, -1))] -= 1
    while (alloc > counts - 1).any():
        alloc[np.argmax(alloc - (counts - 1))] -= 1
        alloc[np.argmax(np.where(alloc < counts - 1, counts - 1 - alloc, -1))] += 1
    return alloc


def load_digits(test_size: int = 297, seed: int = 0) -> ImageDataset:
    """scikit-learn's 8x8 digits (1797 images, pixels 0..16), split into train and test.

    The data ships with scikit-learn (no download). The split is stratified: each
    class contributes to the test set in proportion to its size (largest-remainder
    rounding), the examples of a class being chosen by a permutation drawn from
    ``numpy.random.default_rng(seed)``; both splits are then shuffled. The same
    ``test_size`` and ``seed`` always give the same split.

    Args:
        test_size: The number of test examples, between 10 and 1787 (every class
            keeps at least one example in each split). The default gives 1500
            training and 297 test images.
        seed: A non-negative integer seeding the split.

    Returns:
        The data set with 64 ``uint8`` features and ``max_pixel=16``.

    Raises:
        ValueError: if ``test_size`` is not an integer in ``[10, 1787]`` or ``seed`` is
            not a non-negative integer.
        ImportError: if scikit-learn is not installed.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Integral):
        raise ValueError(f"test_size must be an integer between 10 and 1787, got {test_size!r}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:
        raise ImportError(
            "load_digits needs scikit-learn, which bundles the digits data: "
            "pip install scikit-learn (or l2l-tune[all])"
        ) from exc
    bunch = sklearn_digits()
    pixels = np.asarray(bunch.data)
    labels = np.asarray(bunch.target, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    low, high = len(classes), len(labels) - len(classes)
    if not low <= test_size <= high:
        raise ValueError(
            f"test_size must be an integer between {low} and {high} (at least one example of "
            f"each class in each split), got {test_size}"
        )
    rng = np.random.default_rng(int(seed))
    alloc = _test_counts(counts.astype(np.int64), int(test_size))
    train_parts, test_parts = [], []
    for cls, k in zip(classes, alloc, strict=True):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_parts.append(members[:k])
        train_parts.append(members[k:])
    train_idx = rng.permutation(np.concatenate(train_parts))
    test_idx = rng.permutation(np.concatenate(test_parts))
    images = np.rint(pixels).astype(np.uint8)
    return ImageDataset(
        name="digits",
        train_images=images[train_idx],
        train_labels=labels[train_idx],
        test_images=images[test_idx],
        test_labels=labels[test_idx],
        max_pixel=16.0,
    )


# ---------------------------------------------------------------------- dispatch
def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
) -> ImageDataset:
    """Load a data set by name (what the CLI's ``--dataset``/``--data-dir``/``--download`` pass).

    Args:
        name: One of :data:`DATASETS`: ``"mnist"`` or ``"digits"``.
        data_dir: For MNIST, the directory of the IDX files (see :func:`load_mnist`);
            ignored for digits.
        download: For MNIST, fetch missing files; ignored for digits, which ships with
            scikit-learn.

    Returns:
        The data set (digits with the default 1500/297 split of :func:`load_digits`).

    Raises:
        ValueError: if ``name`` is not one of :data:`DATASETS`, and as
            :func:`load_mnist` / :func:`load_digits`.
        FileNotFoundError: MNIST files missing and ``download`` false.
        DownloadError: every mirror failed while downloading MNIST.
    """
    check_choice(name, "name", DATASETS)
    if name == "digits":
        return load_digits()
    return load_mnist(data_dir, download=download)
