"""Tests of l2l_tune.data: IDX parsing, verified downloads over local HTTP, and the loaders."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from l2l_tune.data import (
    DATASETS,
    MNIST_FILES,
    DownloadError,
    ImageDataset,
    default_data_dir,
    download_mnist,
    load_dataset,
    load_digits,
    load_mnist,
    read_idx,
    write_idx,
)
from l2l_tune.data.idx import parse_idx

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def _real_mnist_dir() -> Path | None:
    env = os.environ.get("L2L_TUNE_TEST_MNIST_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared/data/mnist"
    ok = all((path / f"{name}.gz").is_file() or (path / name).is_file() for name in MNIST_FILES)
    return path if ok else None


REAL_MNIST = _real_mnist_dir()
needs_real_mnist = pytest.mark.skipif(
    REAL_MNIST is None,
    reason="real MNIST not found (../shared/data/mnist or $L2L_TUNE_TEST_MNIST_DIR)",
)


# ---------------------------------------------------------------------- helpers
def _synthetic_arrays(n_train: int = 30, n_test: int = 12, side: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }


def _write_set(directory: Path, arrays: dict, *, gz: bool = True) -> dict[str, str]:
    """Write the arrays as IDX files; return the sha256 of each uncompressed file."""
    directory.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, array in arrays.items():
        path = write_idx(directory / (f"{name}.gz" if gz else name), array)
        raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
        sums[name] = hashlib.sha256(raw).hexdigest()
    return sums


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """Serve directories over HTTP on 127.0.0.1 (one server each); shut down afterwards."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 must not go through a proxy from the environment."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("L2L_TUNE_DATA", raising=False)


# ---------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path: Path, gz: bool, dtype: type) -> None:
    array: np.ndarray = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), array)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if gz else b"\x00\x00")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_idx_header_layout() -> None:
    """The bytes match the IDX spec: magic 0x00000803, big-endian sizes, row-major data."""
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes.fromhex("00000803000000020000000300000004") + bytes(range(24))
    np.testing.assert_array_equal(parse_idx(raw), array)
    labels = parse_idx(bytes.fromhex("0000080100000003") + b"\x07\x00\x09")
    assert labels.tolist() == [7, 0, 9]
    shorts = parse_idx(bytes.fromhex("00000b01000000020102fffe"))
    assert shorts.tolist() == [0x0102, -2]


def _corrupt(raw: bytes, kind: str) -> bytes:
    if kind == "magic":
        return b"\x01\x02" + raw[2:]
    if kind == "dtype":
        return raw[:2] + b"\x42" + raw[3:]
    if kind == "truncated":
        return raw[:-5]
    if kind == "trailing":
        return raw + b"\x00"
    if kind == "short-header":
        return raw[:6]
    if kind == "empty":
        return b""
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("magic", "magic"),
        ("dtype", "unknown element type"),
        ("truncated", "size mismatch"),
        ("trailing", "size mismatch"),
        ("short-header", "truncated IDX header"),
        ("empty", "not an IDX file"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_idx_corrupt_names_file(tmp_path: Path, kind: str, needle: str, gz: bool) -> None:
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    raw_path = write_idx(tmp_path / "ok", array, compress=False)
    bad = _corrupt(raw_path.read_bytes(), kind)
    path = tmp_path / ("bad-file.gz" if gz else "bad-file")
    path.write_bytes(gzip.compress(bad) if gz else bad)
    with pytest.raises(ValueError, match=needle) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_truncated_gzip_names_file(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.gz", np.arange(1000, dtype=np.uint8).reshape(10, 100))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_expected_type_and_rank(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "f", np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 was expected"):
        read_idx(path, dtype=np.uint8)
    with pytest.raises(ValueError, match="3 were expected"):
        read_idx(path, ndim=3)
    with pytest.raises(ValueError, match="dtype"):
        write_idx(tmp_path / "g", np.zeros(3, dtype=np.int64))


# ---------------------------------------------------------------------- loading
@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_synthetic(tmp_path: Path, gz: bool) -> None:
    arrays = _synthetic_arrays()
    _write_set(tmp_path, arrays, gz=gz)
    data = load_mnist(tmp_path)
    assert isinstance(data, ImageDataset) and data.name == "mnist"
    assert data.train_images.shape == (30, 16) and data.test_images.shape == (12, 16)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.n_features == 16 and data.max_pixel == 255.0 and data.n_classes == 10
    np.testing.assert_array_equal(
        data.train_images, arrays["train-images-idx3-ubyte"].reshape(30, 16)
    )
    np.testing.assert_array_equal(data.test_labels, arrays["t10k-labels-idx1-ubyte"])
    np.testing.assert_allclose(data.features("test"), data.test_images / 255.0)
    assert "n_train=30" in repr(data)


def test_load_mnist_count_mismatch(tmp_path: Path) -> None:
    arrays = _synthetic_arrays()
    arrays["t10k-labels-idx1-ubyte"] = arrays["t10k-labels-idx1-ubyte"][:-1]
    _write_set(tmp_path, arrays)
    with pytest.raises(ValueError, match="12 images but .*11 labels"):
        load_mnist(tmp_path)


def test_load_mnist_wrong_kind_of_file(tmp_path: Path) -> None:
    arrays = _synthetic_arrays()
    arrays["train-labels-idx1-ubyte"] = arrays["train-images-idx3-ubyte"]
    _write_set(tmp_path, arrays)
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz.*3 dimensions"):
        load_mnist(tmp_path)


def test_load_mnist_missing_files_message(tmp_path: Path) -> None:
    arrays = _synthetic_arrays()
    del arrays["t10k-images-idx3-ubyte"]
    _write_set(tmp_path, arrays)
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "t10k-images-idx3-ubyte" in message and "train-images" not in message
    for hint in ("data_dir", "L2L_TUNE_DATA", "download=True", "--download", "--data-dir"):
        assert hint in message


def test_env_var_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_set(tmp_path / "env", _synthetic_arrays())
    monkeypatch.setenv("L2L_TUNE_DATA", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    assert load_mnist().n_train == 30
    assert load_dataset("mnist").n_test == 12
    monkeypatch.setenv("L2L_TUNE_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"\$L2L_TUNE_DATA"):
        load_mnist()
    # an explicit data_dir wins over the variable
    assert load_mnist(tmp_path / "env").n_train == 30


def test_default_data_dir_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "l2l-tune" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "l2l-tune" / "mnist"
    with pytest.raises(FileNotFoundError, match="default cache directory"):
        load_mnist()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="name must be one of 'mnist', 'digits'"):
        load_dataset("cifar10")
    assert DATASETS == ("mnist", "digits")
    with pytest.raises(ValueError, match="timeout"):
        download_mnist("unused", timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        download_mnist("unused", timeout=float("nan"))
    with pytest.raises(ValueError, match="mirrors"):
        download_mnist("unused", mirrors="http://example.com/")
    with pytest.raises(ValueError, match="mirrors"):
        download_mnist("unused", mirrors=["example.com/mnist"])
    with pytest.raises(ValueError, match="checksums"):
        download_mnist("unused", checksums={"a": "not-a-digest"})
    with pytest.raises(ValueError, match="data_dir"):
        load_mnist(data_dir=3)  # type: ignore[arg-type]
    for size in (0, 9, 1788, 2.5, True):
        with pytest.raises(ValueError, match="test_size"):
            load_digits(test_size=size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        load_digits(seed=-1)


def test_image_dataset_validates() -> None:
    images = np.zeros((3, 4), dtype=np.uint8)
    labels = np.array([0, 1, 2], dtype=np.int64)
    with pytest.raises(ValueError, match="train_labels"):
        ImageDataset("x", images, labels[:2], images, labels, 255.0)
    with pytest.raises(ValueError, match="test_labels must lie"):
        ImageDataset("x", images, labels, images, labels + 8, 255.0)
    with pytest.raises(ValueError, match="train_images must be a 2-d uint8"):
        ImageDataset("x", images.astype(np.float64), labels, images, labels, 255.0)
    with pytest.raises(ValueError, match="max_pixel"):
        ImageDataset("x", images + 20, labels, images, labels, 16.0)


# ---------------------------------------------------------------------- download
def test_download_synthetic(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    sums = _write_set(tmp_path / "mirror", _synthetic_arrays())
    url = serve(tmp_path / "mirror")
    dest = tmp_path / "nested" / "data"
    out = download_mnist(dest, mirrors=[url], checksums=sums, progress=False)
    assert out == dest
    assert _listing(dest) == sorted(f"{name}.gz" for name in sums)
    data = load_mnist(dest)
    assert data.n_train == 30 and data.n_test == 12 and data.n_features == 16
    # present files are not fetched again: a dead mirror is never contacted
    assert download_mnist(dest, mirrors=["http://127.0.0.1:1/"], checksums=sums) == dest


def test_download_progress_bar_and_file_mirror(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arrays = _synthetic_arrays()
    name = "t10k-labels-idx1-ubyte"
    sums = _write_set(tmp_path / "mirror", {name: arrays[name]})
    dest = tmp_path / "d"
    download_mnist(dest, mirrors=[(tmp_path / "mirror").as_uri()], checksums=sums, progress=True)
    assert _listing(dest) == [f"{name}.gz"]
    assert f"{name}.gz" in capsys.readouterr().err


def test_download_checksum_mismatch_falls_back(
    tmp_path: Path, serve: Callable[[Path], str]
) -> None:
    good = _synthetic_arrays(seed=0)
    sums = _write_set(tmp_path / "good", good)
    _write_set(tmp_path / "wrong", _synthetic_arrays(seed=1))  # same names, other content
    (tmp_path / "empty").mkdir()
    mirrors = [
        "http://127.0.0.1:1/",
        serve(tmp_path / "empty"),
        serve(tmp_path / "wrong"),
        serve(tmp_path / "good"),
    ]
    dest = tmp_path / "dest"
    download_mnist(dest, mirrors=mirrors, checksums=sums, progress=False)
    assert _listing(dest) == sorted(f"{name}.gz" for name in sums)
    data = load_mnist(dest)
    np.testing.assert_array_equal(
        data.train_images, good["train-images-idx3-ubyte"].reshape(30, -1)
    )


def test_download_all_mirrors_fail(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    sums = _write_set(tmp_path / "wrong", _synthetic_arrays(seed=1))
    sums = {name: hashlib.sha256(name.encode()).hexdigest() for name in sums}  # never matches
    (tmp_path / "empty").mkdir()
    (tmp_path / "notgz").mkdir()
    for name in sums:
        (tmp_path / "notgz" / f"{name}.gz").write_bytes(b"plain text, not gzip")
    mirrors = [
        "http://127.0.0.1:1/",
        serve(tmp_path / "empty"),
        serve(tmp_path / "notgz"),
        serve(tmp_path / "wrong"),
    ]
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError) as info:
        download_mnist(dest, mirrors=mirrors, checksums=sums, progress=False, timeout=5)
    error = info.value
    assert isinstance(error, OSError)
    message = str(error)
    first = next(iter(sums))
    assert len(error.attempts) == 4
    for mirror in mirrors:
        assert f"{mirror}{first}.gz" in message
    assert "HTTP 404" in message
    assert "not a valid gzip" in message
    assert "checksum mismatch" in message
    assert "data_dir" in message and "L2L_TUNE_DATA" in message
    assert _listing(dest) == []  # no partial, temporary or unverified file


def test_download_truncated_response_leaves_nothing(
    tmp_path: Path, serve: Callable[[Path], str]
) -> None:
    arrays = _synthetic_arrays(n_train=300)
    name = "train-images-idx3-ubyte"
    sums = _write_set(tmp_path / "full", {name: arrays[name]})
    (tmp_path / "cut").mkdir()
    full = (tmp_path / "full" / f"{name}.gz").read_bytes()
    (tmp_path / "cut" / f"{name}.gz").write_bytes(full[: len(full) // 2])
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="truncated"):
        download_mnist(dest, mirrors=[serve(tmp_path / "cut")], checksums=sums, progress=False)
    assert _listing(dest) == []


def test_load_mnist_download_flag(tmp_path: Path) -> None:
    """load_mnist(download=True) with files present needs no network."""
    _write_set(tmp_path, _synthetic_arrays())
    assert load_mnist(tmp_path, download=True).n_train == 30


@needs_real_mnist
def test_download_real_mnist(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    assert REAL_MNIST is not None
    (tmp_path / "mirror").mkdir()
    for name in MNIST_FILES:  # serve only the .gz files (the folder may hold others)
        shutil.copy(REAL_MNIST / f"{name}.gz", tmp_path / "mirror" / f"{name}.gz")
    dest = tmp_path / "dest"
    mirrors = ["http://127.0.0.1:1/", serve(tmp_path / "mirror")]
    download_mnist(dest, mirrors=mirrors, progress=False)
    assert _listing(dest) == sorted(f"{name}.gz" for name in MNIST_FILES)
    data = load_mnist(dest)
    assert data.train_images.shape == (60000, 784) and data.test_images.shape == (10000, 784)
    assert np.bincount(data.train_labels).tolist() == MNIST_TRAIN_COUNTS


# ---------------------------------------------------------------------- real data
@needs_real_mnist
def test_load_real_mnist() -> None:
    data = load_mnist(data_dir=REAL_MNIST)
    assert data.train_images.shape == (60000, 784) and data.test_images.shape == (10000, 784)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert np.bincount(data.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert data.test_labels.shape == (10000,) and set(np.unique(data.test_labels)) == set(range(10))
    assert data.train_images.max() == 255 and data.max_pixel == 255.0


# ---------------------------------------------------------------------- digits
def test_load_digits() -> None:
    pytest.importorskip("sklearn")
    data = load_digits()
    assert data.name == "digits" and data.max_pixel == 16.0 and data.n_features == 64
    assert data.train_images.shape == (1500, 64) and data.test_images.shape == (297, 64)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.train_images.max() <= 16 and data.test_images.max() <= 16
    for labels in (data.train_labels, data.test_labels):
        assert labels.min() >= 0 and labels.max() <= 9
        assert set(np.unique(labels).tolist()) == set(range(10))
    # stratified: each class has 16-17 % of its examples in the test set
    test_share = np.bincount(data.test_labels) / (
        np.bincount(data.test_labels) + np.bincount(data.train_labels)
    )
    assert np.all(np.abs(test_share - 297 / 1797) < 0.01)
    again = load_digits()
    np.testing.assert_array_equal(again.train_images, data.train_images)
    np.testing.assert_array_equal(again.test_labels, data.test_labels)
    other = load_digits(seed=1)
    assert not np.array_equal(other.test_labels, data.test_labels)
    small = load_digits(test_size=10)
    assert small.n_test == 10 and set(small.test_labels.tolist()) == set(range(10))
    assert load_dataset("digits").n_train == 1500
