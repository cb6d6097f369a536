"""Tests for rxjax/models: parameter counts against published numbers, shapes.

Parameter counts are counted from `jax.eval_shape(model.init)` (nothing is
allocated); forward passes run jitted at each model's small input with
weights drawn in numpy from the init's shapes (tracing the real init of a
60-layer network costs far more than the forward pass).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rxjax import models
from rxjax.models import head, layers

IMAGENET = (224, 224, 3)
CIFAR = (32, 32, 3)
MNIST = (28, 28, 1)

# (name, kwargs, input [H, W, C], classes, published count, relative tol).
PUBLISHED = [
    # LeNet-5 with a full C3 table and dense F6/output: 156 + 2,416 +
    # 48,120 + 10,164 + 850 (LeCun et al. 1998, section II.B layer sizes).
    ("lenet5", {}, MNIST, 10, 61_706, 0),
    ("lenet5", {}, (32, 32, 1), 10, 61_706, 0),
    # TxSim's / aihwkit's MLP: 784*256+256 + 256*128+128 + 128*10+10.
    ("mlp", {}, MNIST, 10, 235_146, 0),
    # Caffe examples/cifar10/cifar10_quick_train_test.prototxt, layer by
    # layer: 5*5*3*32+32, 5*5*32*32+32, 5*5*32*64+64, 4*4*64*64+64, 64*10+10.
    ("convnet", {}, CIFAR, 10,
     2_432 + 25_632 + 51_264 + 65_600 + 650, 0),
    # NiN CIFAR-10 (Lin et al. 2014; Caffe gist mavenlin/e56253735ef32c3c296d):
    # conv1 + cccp1-2, conv2 + cccp3-4, conv3 + cccp5-6, with biases.
    ("nin_cifar", {}, CIFAR, 10,
     (14_592 + 30_880 + 15_456) + (460_992 + 37_056 + 37_056)
     + (331_968 + 37_056 + 1_930), 0),
    # NiN ImageNet (Caffe gist mavenlin/d802a5849de39225bcc6), per block:
    # 11*11*3*96 conv + two 96x96 cccp; 5*5*96*256 + two 256x256; 3*3*256*384
    # + two 384x384; 3*3*384*1024 + 1024x1024 + 1024x1000; all with biases.
    ("nin", {}, IMAGENET, 1000,
     (34_944 + 2 * 9_312) + (614_656 + 2 * 65_792)
     + (885_120 + 2 * 147_840) + (3_539_968 + 1_049_600 + 1_025_000), 0),
    # torchvision.models.alexnet: the single-tower "One weird trick" AlexNet.
    ("alexnet", {}, IMAGENET, 1000, 61_100_840, 0),
    # Caffe's models/bvlc_alexnet (two groups, the 2012 network): 60,965,224.
    ("alexnet", {"variant": "bvlc"}, (227, 227, 3), 1000, 60_965_224, 0),
    # OverFeat "fast", Sermanet et al. 2014 Table 4: "145 million" params
    # (231 x 231 input, rounded to the million).
    ("overfeat", {}, (231, 231, 3), 1000, 145_000_000, 0.01),
    # torchvision.models.vgg16 (configuration D, no batch norm).
    ("vgg16", {}, IMAGENET, 1000, 138_357_544, 0),
    # Szegedy et al. 2015 Table 1, "params" column summed (2.7K + 112K +
    # ... + 1000K = 6.8 M): weights only, rounded; with biases the network
    # (= Caffe bvlc_googlenet without aux heads) is 3 % larger.
    ("googlenet", {}, IMAGENET, 1000, 6_800_000, 0.04),
    # torchvision.models.googlenet(aux_logits=False, init_weights=True).
    ("googlenet", {"variant": "torchvision"}, IMAGENET, 1000, 6_624_904, 0),
    # torchvision.models.resnet18 / resnet50 (He et al. 2016 Table 1).
    ("resnet18", {}, IMAGENET, 1000, 11_689_512, 0),
    ("resnet50", {}, IMAGENET, 1000, 25_557_032, 0),
    # He et al. 2016 Table 6 (CIFAR-10): ResNet-20 0.27 M, ResNet-56 0.85 M.
    # Exactly: option A (identity/zero-pad shortcuts, the paper's) 269,722 and
    # 853,018; option B adds two 1x1 projections with batch norm, 16*32 + 64
    # and 32*64 + 128 = 2,752 more (272,474 and 855,770).
    ("resnet20", {}, CIFAR, 10, 270_000, 0.005),
    ("resnet20", {}, CIFAR, 10, 269_722, 0),
    ("resnet20", {"shortcut": "B"}, CIFAR, 10, 272_474, 0),
    ("resnet56", {}, CIFAR, 10, 850_000, 0.005),
    ("resnet56", {}, CIFAR, 10, 853_018, 0),
    ("resnet56", {"shortcut": "B"}, CIFAR, 10, 855_770, 0),
]


@pytest.mark.parametrize(
    "name,kw,shape,classes,published,rtol", PUBLISHED,
    ids=[f"{p[0]}-{'-'.join(map(str, p[1].values())) or 'default'}-{p[2][0]}"
         f"-{p[4]}" for p in PUBLISHED])
def test_param_count_matches_published(name, kw, shape, classes, published,
                                       rtol):
  count = models.count_params(models.get(name, classes, **kw), shape)
  if rtol == 0:
    assert count == published
  else:
    assert abs(count - published) <= rtol * published, count


@pytest.mark.parametrize("depth,published", [
    (34, 21_797_672), (101, 44_549_160), (152, 60_192_808)])
def test_other_resnet_depths_match_torchvision(depth, published):
  assert models.count_params(models.ResNet(1000, depth), IMAGENET) == published


def test_count_params_skips_batch_stats_and_allocates_nothing():
  model = models.get("resnet20", 10)
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.key(0),
                          jax.ShapeDtypeStruct((1,) + CIFAR, jnp.float32))
  stats = sum(math.prod(a.shape)
              for a in jax.tree_util.tree_leaves(shapes["batch_stats"]))
  # conv1's 16 channels plus 2 norms per block over 3 x 3 blocks of 16, 32,
  # 64 channels: a running mean and variance each.
  assert stats == 2 * (16 + 2 * 3 * (16 + 32 + 64))
  assert models.count_params(model, (7,) + CIFAR) == 269_722
  assert models.count_params(model, CIFAR) == 269_722
  with pytest.raises(ValueError, match="input_shape"):
    models.count_params(model, (32, 32))


@pytest.mark.parametrize("name", ["alexnet", "overfeat", "vgg16"])
def test_dense_heads_do_not_depend_on_input_size(name):
  model = models.get(name, 1000)
  small = (model.min_input, model.min_input, 3)
  assert (models.count_params(model, small)
          == models.count_params(model, IMAGENET))


def _macs(model, shape):
  """Multiply-accumulates of every nn.Dense / nn.Conv call for one image."""
  total = 0

  def count(next_fun, args, kwargs, context):
    nonlocal total
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == "__call__":
      if isinstance(module, nn.Dense):
        total += math.prod(out.shape[1:]) * args[0].shape[-1]
      elif isinstance(module, nn.Conv):
        fan_in = (math.prod(module.kernel_size) * args[0].shape[-1]
                  // module.feature_group_count)
        total += math.prod(out.shape[1:]) * fan_in
    return out

  with nn.intercept_methods(count):
    jax.eval_shape(functools.partial(model.init, train=False),
                   jax.random.key(0),
                   jax.ShapeDtypeStruct((1,) + shape, jnp.float32))
  return total


# RxNN (Jain et al.) Table I, "#Synapses (in billions)": our multiply-
# accumulates per image round to the printed digit. (LeNet 0.0004 vs 0.0005,
# CIFAR NiN 0.22 vs 0.3, AlexNet 0.71 vs 0.5, OverFeat 2.8 vs 2.6 and
# ResNet-50 4.1 vs 5.1 do not; the paper does not say how it counts.)
@pytest.mark.parametrize("name,shape,classes,billions,half_unit", [
    ("convnet", CIFAR, 10, 0.01, 0.005),
    ("nin", IMAGENET, 1000, 1.1, 0.05),
    ("vgg16", IMAGENET, 1000, 15.5, 0.05),
    ("googlenet", IMAGENET, 1000, 1.6, 0.05),
])
def test_synapses_match_rxnn_table1(name, shape, classes, billions, half_unit):
  macs = _macs(models.get(name, classes), shape) / 1e9
  assert abs(macs - billions) <= half_unit, macs


# One block of standard normals, repeated to fill every kernel: drawing
# VGG-16's 138 M weights afresh would cost more than its forward pass.
_NORMALS = np.random.default_rng(0).standard_normal(2**20 + 7,
                                                     dtype=np.float32)


def _random_variables(model, x):
  """Variables with init's shapes: He-scaled normal kernels, unit BN."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.key(0), x)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      kernel = np.resize(_NORMALS, leaf.shape)
      kernel *= np.float32(math.sqrt(2.0 / math.prod(leaf.shape[:-1])))
      return kernel
    if name in ("scale", "var"):
      return np.ones(leaf.shape, leaf.dtype)
    return np.zeros(leaf.shape, leaf.dtype)  # bias, mean

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _small_input(name):
  model = models.get(name, 10)
  if name == "lenet5":
    return model, MNIST
  side = max(model.min_input, 32)
  return model, (side, side, 3)


@pytest.mark.parametrize("name", models.NAMES)
def test_forward_at_small_input(name):
  model, shape = _small_input(name)
  x = jax.random.normal(jax.random.key(1), (2,) + shape, jnp.float32)
  variables = _random_variables(model, x)
  logits = jax.jit(model.apply)(variables, x)
  assert logits.shape == (2, 10)
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  # Two different images give different logits (no collapsed feature map).
  assert not np.allclose(logits[0], logits[1])


def test_lenet_float64_and_28_is_32_padded():
  model = models.get("lenet5", 10)
  x28 = jax.random.uniform(jax.random.key(2), (2,) + MNIST, jnp.float64)
  variables = _random_variables(model, x28.astype(jnp.float32))
  apply = jax.jit(model.apply)
  y28 = apply(variables, x28)
  assert y28.dtype == jnp.float64  # Follows the input dtype.
  # LeCun et al.'s 32 x 32 field: a 28 x 28 digit behaves as if centred in
  # zeros, with the same parameters.
  x32 = jnp.pad(x28, ((0, 0), (2, 2), (2, 2), (0, 0)))
  np.testing.assert_allclose(apply(variables, x32), y28, rtol=1e-12,
                             atol=1e-12)
  y32 = apply(variables, x32.astype(jnp.float32))
  np.testing.assert_allclose(y32, y28, rtol=1e-4, atol=1e-5)


def test_batch_norm_train_updates_running_stats():
  model = models.CifarResNet(10, depth=8)  # ResNet-20's blocks, fewer.
  x = jax.random.normal(jax.random.key(3), (4,) + CIFAR, jnp.float32)
  variables = _random_variables(model, x)
  logits, updates = jax.jit(
      functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
          variables, x)
  assert logits.shape == (4, 10)
  before = jax.tree_util.tree_leaves(variables["batch_stats"])
  after = jax.tree_util.tree_leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_dropout_only_when_training():
  fc = head.FCHead(3, (16, 16), 2, dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(4), (2, 5, 5, 4), jnp.float32)
  variables = _random_variables(fc, x)
  apply = jax.jit(fc.apply, static_argnames="train")
  np.testing.assert_array_equal(apply(variables, x),
                                apply(variables, x))  # no rng needed
  a = apply(variables, x, train=True, rngs={"dropout": jax.random.key(5)})
  b = apply(variables, x, train=True, rngs={"dropout": jax.random.key(6)})
  assert not np.allclose(a, b)


def _init_shapes(model, side, channels=3):
  return jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0),
      jax.ShapeDtypeStruct((1, side, side, channels), jnp.float32))


@pytest.mark.parametrize("name,kw", [(n, {}) for n in models.NAMES] + [
    ("alexnet", {"variant": "bvlc"}),
    ("googlenet", {"variant": "torchvision"})])
def test_min_input_is_exact(name, kw, monkeypatch):
  model = models.get(name, 10, **kw)
  side = model.min_input
  _init_shapes(model, side)  # Runs at min_input.
  if side > 1:
    with pytest.raises(ValueError, match="min_input"):
      _init_shapes(model, side - 1)
    # Without the entry check the network itself runs out of pixels.
    monkeypatch.setattr(layers, "check_input", lambda *args: None)
    with pytest.raises(ValueError, match="too small|collapsed"):
      _init_shapes(model, side - 1)


def test_get_rejects_unknown_names_and_bad_fields():
  with pytest.raises(ValueError, match="valid names: lenet5, convnet"):
    models.get("resnet51", 10)
  with pytest.raises(ValueError, match="num_classes"):
    models.get("lenet5", 0)
  with pytest.raises(ValueError, match="depth"):
    models.get("resnet20", 10, depth=56)  # The name fixes the depth.
  with pytest.raises(ValueError, match="depth"):
    models.CifarResNet(10, depth=21)
  with pytest.raises(ValueError, match="variant"):
    models.get("alexnet", 10, variant="caffe")
  with pytest.raises(ValueError, match="dropout_rate"):
    models.get("vgg16", 10, dropout_rate=1.0)
  assert set(models.NAMES) >= {
      "lenet5", "convnet", "nin", "alexnet", "vgg16", "resnet18", "resnet20",
      "resnet50", "resnet56", "googlenet", "overfeat"}


def test_pool_sizes_follow_caffe_and_pytorch():
  x = jnp.zeros((1, 54, 27, 1))
  # Caffe ceil mode (NiN ImageNet: 54 -> 27, 27 -> 13) and floor mode.
  assert layers.pool(x, "max", 3, 2, ceil_mode=True).shape == (1, 27, 13, 1)
  assert layers.pool(x, "max", 3, 2).shape == (1, 26, 13, 1)
  # Overhanging ceil-mode windows average only real pixels (Caffe, pad 0).
  row = jnp.arange(4.0).reshape(1, 1, 4, 1)
  out = layers.pool(jnp.tile(row, (1, 3, 1, 1)), "avg", 3, 2, ceil_mode=True)
  np.testing.assert_allclose(out[0, 0, :, 0], [1.0, 2.5])
  with pytest.raises(ValueError, match="too small"):
    layers.pool(jnp.zeros((1, 1, 1, 1)), "max", 3, 2, ceil_mode=True)


# H = n and W = n + 1 cover identity, even bins, overlapping bins, repeated
# bins (n < size) and a single pixel.
@pytest.mark.parametrize("n,size", [(7, 7), (14, 7), (13, 6), (1, 7)])
def test_adaptive_avg_pool_matches_pytorch_bins(n, size):
  x = jax.random.normal(jax.random.key(7), (2, n, n + 1, 3), jnp.float64)
  got = jax.jit(layers.adaptive_avg_pool, static_argnums=1)(x, size)
  xn = np.asarray(x)
  want = np.zeros((2, size, size, 3))
  for i in range(size):
    for j in range(size):
      # PyTorch: bin i covers [floor(i n / s), ceil((i + 1) n / s)).
      h0, h1 = (i * n) // size, -(-((i + 1) * n) // size)
      w0, w1 = (j * (n + 1)) // size, -(-((j + 1) * (n + 1)) // size)
      want[:, i, j] = xn[:, h0:h1, w0:w1].mean(axis=(1, 2))
  np.testing.assert_allclose(got, want, rtol=1e-12)


def _analog_cross_ideal():
  """Analog weights, full-precision converters, ideal wires: equals x @ W."""
  import dataclasses
  from rxjax import crossbar
  spec = crossbar.ChipSpec.ideal()
  return spec.replace(mapping=dataclasses.replace(spec.mapping,
                                                  weight_bits=None))


@pytest.mark.parametrize("name", models.NAMES)
def test_every_model_runs_on_crossbars(name):
  """Each model's conv / dense layers run on chips (rxjax.nn interceptor).

  Analog, ideal-wire chips must reproduce the digital logits (the x @ W
  limit), which checks that every layer's geometry (strides, padding,
  groups) maps onto crossbars. Non-ideal chips are tested layer by layer in
  nn_test.py and on LeNet-5 by the main job.
  """
  from rxjax import crossbar
  from rxjax import nn as rnn
  model, shape = _small_input(name)
  x = jax.random.uniform(jax.random.key(1), (2,) + shape, jnp.float32)
  variables = _random_variables(model, x)
  digital = jax.jit(model.apply)(variables, x)
  spec = _analog_cross_ideal()
  @jax.jit
  def on_chips(variables, x):  # One compilation for all layers.
    chips = rnn.program(model, variables, x, spec, key=jax.random.key(2))
    return rnn.apply(model, variables, chips, x, spec), chips

  logits, chips = on_chips(variables, x)
  scale = float(jnp.abs(digital).max())
  assert float(jnp.abs(logits - digital).max()) < 1e-4 * scale
  n_layers = sum(1 for p, _ in jax.tree_util.tree_leaves_with_path(
      variables["params"]) if p[-1].key == "kernel")
  assert len(jax.tree.leaves(chips)) >= n_layers  # Every layer programmed.
