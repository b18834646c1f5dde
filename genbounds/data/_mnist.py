"""Real MNIST from the IDX files, downloaded once into a cache directory and checksummed.

LeCun, Cortes & Burges, "The MNIST database of handwritten digits". The four IDX files (60000
training and 10000 test images of 28x28 bytes, and their labels) are fetched from the mirrors
TensorFlow and torchvision use. Every file is checked against its published SHA-256 and MD5
before it is read; a mismatch is an error (the file is never silently replaced or re-fetched).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ._dataset import Pool

MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)

# The four files as distributed (gzip), with SHA-256 (as listed by tensorflow-datasets and
# others) and MD5 (as listed by torchvision).
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); data big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def default_cache_dir() -> Path:
    """``$GENBOUNDS_DATA`` if set, else ``~/.cache/genbounds``."""
    env = os.environ.get("GENBOUNDS_DATA")
    return Path(env) if env else Path.home() / ".cache" / "genbounds"


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parses the bytes of an (uncompressed) IDX file into an array.

    Raises:
      ValueError: the header is malformed or the payload size does not match the header.
    """
    if len(data) < 4:
        raise ValueError(f"{name} is not an IDX file: only {len(data)} bytes")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{name} is not an IDX file: bad magic number 0x{data[:4].hex()} "
            "(expected 0x0000TTNN with a known type code TT)"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{name} is corrupt: truncated IDX header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{name} is corrupt: its header announces shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(data) - header} bytes of data"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file, gzip-compressed (recognised by its magic bytes) or raw."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path} is corrupt: it cannot be decompressed ({e})") from e
    return parse_idx(data, name=str(path))


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: Path, expected: str) -> None:
    """Checks a file against a hex digest: 64 characters = SHA-256, 32 = MD5."""
    algorithm = {64: "sha256", 32: "md5"}.get(len(expected))
    if algorithm is None:
        raise ValueError(
            f"checksum for {path.name} must be a SHA-256 or MD5 hex digest, got {expected!r}"
        )
    got = _digest(path, algorithm)
    if got != expected.lower():
        raise ValueError(
            f"checksum mismatch for {path}: expected {algorithm} {expected}, got {got}. "
            "The file is damaged or not the MNIST release; delete it to download it again."
        )


def _download(filename: str, dest_dir: Path, expected_sha256: str, timeout: float) -> Path:
    """Fetches `filename` from the mirrors into `dest_dir` atomically, verified before the move."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in MIRRORS:
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.", suffix=".part")
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(base + filename, timeout=timeout) as r,
            ):
                while block := r.read(1 << 20):
                    out.write(block)
            verify_checksum(Path(tmp), expected_sha256)
            os.replace(tmp, dest_dir / filename)
            return dest_dir / filename
        except Exception as e:  # noqa: BLE001 - every mirror is tried, then all errors reported
            errors.append(f"{base}{filename}: {e}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise OSError("could not download MNIST file " + filename + ":\n  " + "\n  ".join(errors))


def mnist_files(
    cache_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> dict[str, np.ndarray]:
    """Finds (or downloads) and reads the four MNIST IDX files.

    In ``cache_dir/mnist/`` each file is looked for as ``<name>.gz`` first, then as the raw
    ``<name>``. The file found is checked against ``checksums[filename]`` (SHA-256 or MD5 hex);
    the default table holds the official digests of the ``.gz`` files, so a raw file needs a
    checksum passed in. A missing ``.gz`` file is downloaded when `download` is True.

    Raises:
      FileNotFoundError: a file is missing and `download` is False.
      ValueError: a checksum mismatch, no known checksum, or a corrupt file.
    """
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "mnist"
    table = dict(SHA256) if checksums is None else dict(checksums)
    out = {}
    for key, name in FILES.items():
        gz, raw = root / (name + ".gz"), root / name
        if gz.exists():
            path = gz
        elif raw.exists():
            path = raw
        elif download:
            path = _download(gz.name, root, SHA256[gz.name], timeout)
        else:
            raise FileNotFoundError(
                f"MNIST file {gz.name} (or {raw.name}) not found in {root}, and download=False"
            )
        if path.name not in table:
            raise ValueError(
                f"no checksum known for {path}; pass checksums={{{path.name!r}: '<sha256>'}} "
                "(the official digests cover the .gz files only)"
            )
        verify_checksum(path, table[path.name])
        if checksums is None:
            verify_checksum(path, MD5[path.name])
        out[key] = read_idx(path)
    return out


def mnist_pool(
    cache_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> Pool:
    """MNIST with its official 60000/10000 split; pixels scaled to [0, 1] (divided by 255)."""
    f = mnist_files(cache_dir, download=download, checksums=checksums)
    for part in ("train", "test"):
        images, labels = f[f"{part}_images"], f[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"MNIST {part} images must have shape (N, 28, 28), got {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"MNIST {part} labels must have shape ({images.shape[0]},), got {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"MNIST {part} labels must be integers, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(
                f"MNIST {part} labels must lie in 0..9, got range [{labels.min()}, {labels.max()}]"
            )
        if np.issubdtype(images.dtype, np.floating):
            if not np.all(np.isfinite(images)):
                bad = int(images.size - np.count_nonzero(np.isfinite(images)))
                raise ValueError(f"MNIST {part} images hold {bad} NaN or infinite pixels")
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(
                f"MNIST {part} pixels must lie in 0..255, got range [{images.min()}, "
                f"{images.max()}]"
            )
    X = np.concatenate([f["train_images"], f["test_images"]]).astype(np.float32) / np.float32(255)
    y = np.concatenate([f["train_labels"], f["test_labels"]]).astype(np.int32)
    n_tr = f["train_images"].shape[0]
    return Pool(
        X=X[..., None],
        y=y,
        image_shape=(28, 28, 1),
        num_classes=10,
        source="MNIST IDX files (LeCun, Cortes & Burges), pixels / 255",
        official_split=(np.arange(n_tr), np.arange(n_tr, X.shape[0])),
        metadata={
            "cache_dir": str(Path(cache_dir) if cache_dir is not None else default_cache_dir())
        },
    )
