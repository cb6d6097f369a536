"""Tests for rxjax/data.py: bundled datasets, file formats and batching."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from rxjax import data


@pytest.fixture(scope="module")
def mnist():
  return data.load("mnist_bundled", seed=0)


def test_mnist_bundled_shapes_values_labels(mnist):
  assert mnist.x_train.shape == (4000, 28, 28, 1)
  assert mnist.x_test.shape == (1000, 28, 28, 1)
  assert mnist.y_train.shape == (4000,) and mnist.y_test.shape == (1000,)
  assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int32
  for x in (mnist.x_train, mnist.x_test):
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.max() == 1.0  # Scaled from 0..255, not left as raw bytes.
  for y in (mnist.y_train, mnist.y_test):
    assert set(np.unique(y).tolist()) == set(range(10))
  assert mnist.num_classes == 10
  assert "NOT real" not in mnist.name


def test_mnist_bundled_is_default_and_seeded(mnist):
  assert data.DEFAULT_DATASET == "mnist_bundled"
  same = data.load(seed=0)
  np.testing.assert_array_equal(same.x_train, mnist.x_train)
  np.testing.assert_array_equal(same.y_test, mnist.y_test)
  other = data.load("mnist_bundled", seed=1)
  assert not np.array_equal(other.y_train, mnist.y_train)
  # Same 5,000 examples, differently split: train + test is a partition.
  fingerprint = lambda d: np.sort(np.concatenate([
      d.x_train.reshape(4000, -1) @ np.arange(784.0),
      d.x_test.reshape(1000, -1) @ np.arange(784.0)]))
  np.testing.assert_allclose(fingerprint(other), fingerprint(mnist))


def test_digits_shapes():
  d = data.load("digits", seed=0)
  assert d.x_train.shape == (1438, 8, 8, 1)
  assert d.x_test.shape == (359, 8, 8, 1)
  assert d.x_train.min() >= 0.0 and d.x_train.max() == 1.0
  assert d.num_classes == 10
  assert set(np.unique(d.y_train).tolist()) == set(range(10))


def test_synthetic_is_labelled_as_such():
  d = data.load("synthetic", seed=3)
  assert "synthetic (NOT real data)" in d.name
  assert d.x_train.ndim == 4 and d.x_train.dtype == np.float32
  assert d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match="mnist_bundled.*cifar100.*synthetic"):
    data.load("imagenet")


# ----------------------------------------------------------------- IDX


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
  header = magic.to_bytes(4, "big") + b"".join(
      int(d).to_bytes(4, "big") for d in arr.shape)
  return header + arr.astype(np.uint8).tobytes()


def _write_idx(tmp_path, rng, n_train=7, n_test=5, gz=False):
  arrays = {
      "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28)),
                                  2051),
      "train-labels-idx1-ubyte": (rng.integers(0, 10, n_train), 2049),
      "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28)), 2051),
      "t10k-labels-idx1-ubyte": (rng.integers(0, 10, n_test), 2049),
  }
  for fname, (arr, magic) in arrays.items():
    raw = _idx_bytes(arr, magic)
    if gz:
      with gzip.open(tmp_path / (fname + ".gz"), "wb") as f:
        f.write(raw)
    else:
      (tmp_path / fname).write_bytes(raw)
  return {k: v[0] for k, v in arrays.items()}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist_idx", "fashion_mnist_idx"])
def test_idx_roundtrip(tmp_path, gz, name):
  arrays = _write_idx(tmp_path, np.random.default_rng(0), gz=gz)
  d = data.load(name, data_dir=str(tmp_path))
  assert d.x_train.shape == (7, 28, 28, 1) and d.x_test.shape == (5, 28, 28, 1)
  np.testing.assert_array_equal(
      np.round(d.x_train[..., 0] * 255).astype(int),
      arrays["train-images-idx3-ubyte"])
  np.testing.assert_array_equal(
      np.round(d.x_test[..., 0] * 255).astype(int),
      arrays["t10k-images-idx3-ubyte"])
  np.testing.assert_array_equal(d.y_train, arrays["train-labels-idx1-ubyte"])
  np.testing.assert_array_equal(d.y_test, arrays["t10k-labels-idx1-ubyte"])
  assert d.y_train.dtype == np.int32 and d.num_classes == 10


def test_idx_bad_magic_names_file(tmp_path):
  _write_idx(tmp_path, np.random.default_rng(0))
  path = tmp_path / "train-images-idx3-ubyte"
  raw = bytearray(path.read_bytes())
  raw[:4] = (2049).to_bytes(4, "big")
  path.write_bytes(bytes(raw))
  with pytest.raises(ValueError, match="train-images-idx3-ubyte.*magic"):
    data.load("mnist_idx", data_dir=str(tmp_path))


def test_idx_truncated_names_file(tmp_path):
  _write_idx(tmp_path, np.random.default_rng(0))
  path = tmp_path / "t10k-images-idx3-ubyte"
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*truncated"):
    data.load("mnist_idx", data_dir=str(tmp_path))


def test_idx_count_mismatch_names_files(tmp_path):
  rng = np.random.default_rng(0)
  _write_idx(tmp_path, rng)
  (tmp_path / "train-labels-idx1-ubyte").write_bytes(
      _idx_bytes(rng.integers(0, 10, 6), 2049))
  with pytest.raises(ValueError, match="train-images.*7 images.*6 labels"):
    data.load("mnist_idx", data_dir=str(tmp_path))


def test_idx_missing_files_named(tmp_path):
  _write_idx(tmp_path, np.random.default_rng(0))
  (tmp_path / "t10k-labels-idx1-ubyte").unlink()
  with pytest.raises(FileNotFoundError) as e:
    data.load("mnist_idx", data_dir=str(tmp_path))
  msg = str(e.value)
  assert str(tmp_path) in msg and "lacks t10k-labels-idx1-ubyte" in msg


@pytest.mark.parametrize("name", ["mnist_idx", "cifar10", "cifar100",
                                  "image_folder"])
def test_missing_dir_names_dir_and_expected_files(tmp_path, name):
  missing = tmp_path / "nope"
  with pytest.raises(FileNotFoundError) as e:
    data.load(name, data_dir=str(missing))
  msg = str(e.value)
  assert str(missing) in msg
  expected = {"mnist_idx": "train-images-idx3-ubyte", "cifar10": "data_batch_1",
              "cifar100": "train", "image_folder": "train/<class>"}[name]
  assert expected in msg
  with pytest.raises(ValueError, match="needs data_dir"):
    data.load(name)


# ----------------------------------------------------------------- CIFAR


def _cifar_images(rng, n):
  """`n` random CIFAR rows plus a marker: pixel (1, 2) pure red-ish."""
  x = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
  x[:, :, 1, 2] = [200, 10, 50]  # channel-major: R, G, B planes.
  return x


def test_cifar10_roundtrip_nhwc(tmp_path):
  rng = np.random.default_rng(0)
  chw = {}
  for i in range(1, 6):
    chw[i] = _cifar_images(rng, 3)
    with open(tmp_path / f"data_batch_{i}", "wb") as f:
      pickle.dump({b"data": chw[i].reshape(3, 3072),
                   b"labels": [i, i + 1, 0]}, f)
  test = _cifar_images(rng, 2)
  with open(tmp_path / "test_batch", "wb") as f:
    pickle.dump({b"data": test.reshape(2, 3072), b"labels": [9, 4]}, f)
  d = data.load("cifar10", data_dir=str(tmp_path))
  assert d.x_train.shape == (15, 32, 32, 3) and d.x_test.shape == (2, 32, 32, 3)
  assert d.num_classes == 10
  np.testing.assert_array_equal(d.y_train,
                                [1, 2, 0, 2, 3, 0, 3, 4, 0, 4, 5, 0, 5, 6, 0])
  np.testing.assert_array_equal(d.y_test, [9, 4])
  # Row 1, column 2 holds (R, G, B) = (200, 10, 50) in the last axis.
  np.testing.assert_allclose(d.x_train[:, 1, 2, :] * 255,
                             np.tile([200, 10, 50], (15, 1)), atol=1e-3)
  np.testing.assert_allclose(d.x_test * 255, test.transpose(0, 2, 3, 1),
                             atol=1e-3)


def test_cifar100_roundtrip_nhwc(tmp_path):
  rng = np.random.default_rng(1)
  train, test = _cifar_images(rng, 4), _cifar_images(rng, 2)
  with open(tmp_path / "train", "wb") as f:
    pickle.dump({b"data": train.reshape(4, 3072),
                 b"fine_labels": [99, 0, 50, 7],
                 b"coarse_labels": [1, 2, 3, 4]}, f)
  with open(tmp_path / "test", "wb") as f:
    pickle.dump({b"data": test.reshape(2, 3072), b"fine_labels": [3, 98],
                 b"coarse_labels": [0, 0]}, f)
  d = data.load("cifar100", data_dir=str(tmp_path))
  assert d.num_classes == 100
  np.testing.assert_array_equal(d.y_train, [99, 0, 50, 7])
  np.testing.assert_array_equal(d.y_test, [3, 98])
  np.testing.assert_allclose(d.x_train[:, 1, 2, :] * 255,
                             np.tile([200, 10, 50], (4, 1)), atol=1e-3)
  np.testing.assert_allclose(d.x_train * 255, train.transpose(0, 2, 3, 1),
                             atol=1e-3)


def test_cifar_missing_batch_named(tmp_path):
  with open(tmp_path / "train", "wb") as f:
    pickle.dump({b"data": np.zeros((1, 3072), np.uint8),
                 b"fine_labels": [0]}, f)
  with pytest.raises(FileNotFoundError, match="lacks test"):
    data.load("cifar100", data_dir=str(tmp_path))


# ----------------------------------------------------------------- folders


def test_image_folder_labels(tmp_path):
  from PIL import Image
  colors = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
  for split in ("train", "val"):
    for cls, color in colors.items():
      (tmp_path / split / cls).mkdir(parents=True)
      for k in range(2):
        Image.new("RGB", (5, 7), color).save(
            tmp_path / split / cls / f"{k}.png")
  d = data.load("image_folder", data_dir=str(tmp_path), image_size=4)
  assert d.num_classes == 2
  assert d.x_train.shape == (4, 4, 4, 3) and d.x_test.shape == (4, 4, 4, 3)
  np.testing.assert_array_equal(d.y_train, [0, 0, 1, 1])
  np.testing.assert_array_equal(d.y_test, [0, 0, 1, 1])
  # cat (label 0) is red, dog (label 1) is blue.
  for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
    np.testing.assert_allclose(x[y == 0],
                               np.broadcast_to([1, 0, 0], (2, 4, 4, 3)))
    np.testing.assert_allclose(x[y == 1],
                               np.broadcast_to([0, 0, 1], (2, 4, 4, 3)))


def test_image_folder_missing_val(tmp_path):
  (tmp_path / "train" / "a").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="val.*train/<class>"):
    data.load("image_folder", data_dir=str(tmp_path))


# ----------------------------------------------------------------- batches


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_each_example_once(shuffle):
  x = np.arange(23)[:, None] * np.ones((1, 3))
  y = np.arange(23)
  out = list(data.batches(x, y, 5, key_or_seed=0, shuffle=shuffle))
  assert [len(b[1]) for b in out] == [5, 5, 5, 5, 3]
  seen = np.concatenate([b[1] for b in out])
  assert sorted(seen.tolist()) == list(range(23))
  if not shuffle:
    np.testing.assert_array_equal(seen, y)
  for bx, by in out:
    np.testing.assert_array_equal(bx[:, 0], by)  # x and y stay paired.


def test_batches_deterministic_and_drop_remainder():
  x, y = np.arange(23), np.arange(23)
  run = lambda s: np.concatenate(
      [b[1] for b in data.batches(x, y, 4, key_or_seed=s)])
  np.testing.assert_array_equal(run(7), run(7))
  assert not np.array_equal(run(7), run(8))
  dropped = list(data.batches(x, y, 4, key_or_seed=7, drop_remainder=True))
  assert [len(b[1]) for b in dropped] == [4] * 5
  np.testing.assert_array_equal(np.concatenate([b[1] for b in dropped]),
                                run(7)[:20])


def test_batches_accepts_jax_key():
  import jax
  x, y = np.arange(10), np.arange(10)
  k = jax.random.PRNGKey(3)
  a = np.concatenate([b[1] for b in data.batches(x, y, 3, key_or_seed=k)])
  b = np.concatenate([b[1] for b in data.batches(x, y, 3, key_or_seed=k)])
  np.testing.assert_array_equal(a, b)
  assert sorted(a.tolist()) == list(range(10))
  typed = jax.random.key(3)
  c = np.concatenate([b[1] for b in data.batches(x, y, 3, key_or_seed=typed)])
  assert sorted(c.tolist()) == list(range(10))


def test_batches_rejects_bad_args():
  with pytest.raises(ValueError, match="batch_size"):
    next(data.batches(np.zeros(3), np.zeros(3), 0, key_or_seed=0))
  with pytest.raises(ValueError, match="same length"):
    next(data.batches(np.zeros(3), np.zeros(4), 2, key_or_seed=0))
