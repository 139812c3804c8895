"""Download the MNIST files, verified, with the standard library only.

Each missing file ``NAME`` is fetched as ``NAME.gz`` from the mirrors in order.
The download goes to a temporary file in the destination directory; the
SHA-256 of its *uncompressed* content is checked against :data:`MNIST_FILES`,
and only then is it renamed (atomically, :func:`os.replace`) to ``NAME.gz``. A
failed or interrupted download leaves nothing behind; a file under its final
name has always been verified. A mirror that fails (network error, HTTP error,
truncated or corrupt gzip, checksum mismatch) is followed by the next one; when
all fail, :class:`DownloadError` lists every URL tried and why.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .._validation import check_positive
from .paths import DATA_ENV_VAR, resolve_data_dir

__all__ = ["MNIST_FILES", "MNIST_MIRRORS", "DownloadError", "download_mnist", "missing_files"]

#: The four MNIST files (base names, without ``.gz``) and the SHA-256 of their
#: uncompressed content.
MNIST_FILES: Mapping[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Public mirrors of the MNIST ``.gz`` files, tried in this order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_CHUNK = 1 << 16
_USER_AGENT = "l2l-tune (Python urllib; MNIST download)"


class DownloadError(OSError):
    """Every mirror failed for a file.

    Attributes:
        attempts: ``(url, reason)`` for each URL tried, in order.
    """

    def __init__(self, message: str, attempts: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.attempts: tuple[tuple[str, str], ...] = tuple(attempts)

    def __str__(self) -> str:
        return str(self.args[0])


class _BadContent(Exception):
    """The response arrived but is not the expected file (reason in the message)."""


class _GunzipSha256:
    """SHA-256 of the decompressed content of a gzip stream fed in chunks."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._sha = hashlib.sha256()
        self._fed = 0
        self.size = 0

    def update(self, chunk: bytes) -> None:
        """Feed the next compressed bytes.

        Raises:
            _BadContent: if the bytes are not a gzip stream.
        """
        self._fed += len(chunk)
        while chunk:
            try:
                out = self._inflater.decompress(chunk)
            except zlib.error as exc:
                raise _BadContent(f"not a valid gzip file ({exc})") from None
            self._sha.update(out)
            self.size += len(out)
            chunk = self._inflater.unused_data if self._inflater.eof else b""
            if chunk:  # a further gzip member follows
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def hexdigest(self) -> str:
        """The digest of all content, once the stream is complete.

        Raises:
            _BadContent: if nothing arrived or the gzip stream is incomplete.
        """
        if self._fed == 0:
            raise _BadContent("empty response")
        if not self._inflater.eof:
            raise _BadContent("truncated gzip file (stream ends early)")
        return self._sha.hexdigest()


def missing_files(directory: Path, names: Sequence[str]) -> list[str]:
    """The names with neither ``directory/NAME`` nor ``directory/NAME.gz`` present."""
    return [
        name
        for name in names
        if not (directory / name).is_file() and not (directory / f"{name}.gz").is_file()
    ]


def _create_temp(dest: Path) -> tuple[int, Path]:
    """Create a new, empty temporary file next to ``dest`` (permissions follow the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def _fetch_verified(url: str, dest: Path, sha256: str, timeout: float, progress: bool) -> None:
    """Download ``url`` to ``dest`` atomically if its gunzipped SHA-256 is ``sha256``.

    Raises:
        _BadContent: wrong size, not gzip, truncated, or checksum mismatch.
        OSError, http.client.HTTPException: network or local I/O failures
            (``urllib.error.HTTPError`` for HTTP status errors).
    """
    fd, tmp = _create_temp(dest)
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                digest = _GunzipSha256()
                received = 0
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=not progress,
                ) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            if total is not None and received != total:
                raise _BadContent(f"truncated download: {received} of {total} bytes")
            actual = digest.hexdigest()
            if actual != sha256:
                raise _BadContent(
                    f"checksum mismatch: sha256 of the uncompressed content is {actual}, "
                    f"expected {sha256}"
                )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        done = True
    finally:
        if not done:
            tmp.unlink(missing_ok=True)


def _describe(exc: BaseException) -> str:
    """A one-line reason for a failed attempt."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return f"{type(reason).__name__}: {reason}"
        return str(reason)
    if isinstance(exc, _BadContent):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _url(mirror: str, name: str) -> str:
    return f"{mirror.rstrip('/')}/{name}.gz"


def _download_file(
    name: str, sha256: str, directory: Path, mirrors: Sequence[str], timeout: float, progress: bool
) -> Path:
    """Fetch ``name.gz`` into ``directory`` from the first mirror that serves it verified.

    Raises:
        DownloadError: if every mirror fails.
    """
    dest = directory / f"{name}.gz"
    attempts: list[tuple[str, str]] = []
    for mirror in mirrors:
        url = _url(mirror, name)
        try:
            _fetch_verified(url, dest, sha256, timeout, progress)
        except (_BadContent, OSError, http.client.HTTPException) as exc:
            attempts.append((url, _describe(exc)))
            continue
        return dest
    tried = "\n".join(f"  - {url}: {reason}" for url, reason in attempts)
    raise DownloadError(
        f"could not download {name}.gz into {directory}; every mirror failed:\n{tried}\n"
        f"If you are offline or behind a firewall, copy the MNIST files ({name}[.gz] and the "
        f"others) into a directory yourself and pass it as data_dir (CLI: --data-dir DIR) or "
        f"set ${DATA_ENV_VAR}; or pass mirrors=[...] (http(s):// or file:// URLs).",
        attempts,
    )


def _check_checksums(checksums: object) -> dict[str, str]:
    if not isinstance(checksums, Mapping) or not checksums:
        raise ValueError(
            "checksums must be a non-empty mapping of file name to sha256 hex digest, "
            f"got {checksums!r}"
        )
    out: dict[str, str] = {}
    for name, digest in checksums.items():
        if not isinstance(name, str) or not name or "/" in name or "\\" in name:
            raise ValueError(f"checksums: file names must be plain base names, got {name!r}")
        if (
            not isinstance(digest, str)
            or len(digest) != 64
            or any(c not in "0123456789abcdefABCDEF" for c in digest)
        ):
            raise ValueError(
                f"checksums[{name!r}] must be a sha256 hex digest (64 hex digits), got {digest!r}"
            )
        out[name] = digest.lower()
    return out


def _check_mirrors(mirrors: object) -> tuple[str, ...]:
    if isinstance(mirrors, str) or not isinstance(mirrors, Sequence) or not mirrors:
        raise ValueError(
            "mirrors must be a non-empty sequence of base URLs such as "
            f"{MNIST_MIRRORS[0]!r}, got {mirrors!r}"
        )
    for mirror in mirrors:
        if not isinstance(mirror, str) or "://" not in mirror:
            raise ValueError(
                "mirrors must hold base URLs with a scheme (http://, https:// or file://), "
                f"got {mirror!r}"
            )
    return tuple(mirrors)


def download_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> Path:
    """Download the MNIST files that are missing from ``data_dir``, verified.

    A file counts as present when ``NAME`` or ``NAME.gz`` exists; present files are
    neither fetched nor re-checked, so a complete directory needs no network.
    Missing files are saved as ``NAME.gz``, only after the SHA-256 of their
    uncompressed content matched.

    Args:
        data_dir: Destination directory (created if needed); ``None`` means
            ``$L2L_TUNE_DATA``, else the default cache directory (see
            :func:`~l2l_tune.data.default_data_dir`).
        mirrors: Base URLs tried in order for each file; ``NAME.gz`` is appended.
            Defaults to :data:`MNIST_MIRRORS`. ``file://`` URLs work too.
        timeout: Seconds to wait on each connection or read.
        progress: Show a tqdm progress bar per file (on stderr).
        checksums: File base names to fetch and the SHA-256 of their uncompressed
            content; defaults to :data:`MNIST_FILES`.

    Returns:
        The directory holding the files.

    Raises:
        ValueError: if ``timeout`` is not a finite number > 0, ``mirrors`` is not a
            non-empty sequence of URLs, ``checksums`` is not a non-empty mapping of
            base names to 64-digit hex digests, or ``data_dir`` is not a path.
        DownloadError: (an :class:`OSError`) if every mirror failed for a file; the
            message lists each URL tried and why.
        OSError: if the directory cannot be created.
    """
    limit = check_positive(timeout, "timeout")
    urls = _check_mirrors(MNIST_MIRRORS if mirrors is None else mirrors)
    expected = _check_checksums(MNIST_FILES if checksums is None else checksums)
    directory, _ = resolve_data_dir(data_dir)
    missing = missing_files(directory, list(expected))
    if not missing:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    for name in missing:
        _download_file(name, expected[name], directory, urls, limit, bool(progress))
    return directory
