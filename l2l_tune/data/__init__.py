"""Image classification data for the MNIST task: MNIST (IDX files) and scikit-learn's digits.

No torch or torchvision is needed: the IDX files are parsed with numpy, the
download uses :mod:`urllib` with SHA-256 verification, and the digits come
with scikit-learn.

* :func:`load_dataset` (``"mnist"`` or ``"digits"``), :func:`load_mnist`,
  :func:`load_digits` return an :class:`ImageDataset` (flattened ``uint8``
  images, ``int64`` labels, ``features = images / max_pixel``).
* MNIST is read from ``data_dir``, else ``$L2L_TUNE_DATA``, else
  :func:`default_data_dir`; :func:`download_mnist` (or ``download=True``) fetches
  missing files from public mirrors.
"""

from __future__ import annotations

from .datasets import DATASETS, ImageDataset, load_dataset, load_digits, load_mnist
from .download import MNIST_FILES, MNIST_MIRRORS, DownloadError, download_mnist
from .idx import read_idx, write_idx
from .paths import DATA_ENV_VAR, default_data_dir

__all__ = [
    "DATASETS",
    "DATA_ENV_VAR",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "DownloadError",
    "ImageDataset",
    "default_data_dir",
    "download_mnist",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "read_idx",
    "write_idx",
]
