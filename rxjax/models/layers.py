"""Weight-free pieces the model zoo shares: pooling, input checks, inits.

Everything here is pure array code with no parameters, so none of it goes
through `nn.Dense` / `nn.Conv` and none of it is ever mapped to a crossbar
(RxNN runs pooling on the host, Jain et al. section VII). The pooling helpers
reproduce the output sizes of the frameworks the published networks were
defined in: Caffe's ceil-mode pooling (NiN, GoogLeNet, the CIFAR ConvNet) and
PyTorch's floor-mode and adaptive average pooling (torchvision's AlexNet,
VGG and ResNet). They raise a ValueError at trace time when an input is too
small for the network instead of letting a spatial dimension reach 0.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from rxjax import _checks

# He et al. 2015 ("Delving deep into rectifiers") for layers followed by a
# ReLU, as torchvision initialises its ResNets and VGGs; classifiers keep
# Flax's default LeCun-normal init.
relu_init = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


def check_num_classes(num_classes) -> None:
  """Raises a ValueError unless `num_classes` is an int >= 1."""
  if not (_checks.is_int(num_classes) and num_classes >= 1):
    raise ValueError(f"`num_classes` must be an int >= 1, got {num_classes!r}")


def check_input(x, min_input: int, model: str) -> None:
  """Checks that `x` is an NHWC batch of at least `min_input` x `min_input`.

  Args:
    x: [B, H, W, C] images.
    min_input: the smallest H and W the model supports.
    model: the model's name, for the message.

  Raises:
    ValueError: when `x` is not rank 4 or H or W is below `min_input`.
  """
  if x.ndim != 4:
    raise ValueError(f"{model}: `x` must be NHWC [B, H, W, C], got shape "
                     f"{tuple(x.shape)}")
  h, w = x.shape[1], x.shape[2]
  if h < min_input or w < min_input:
    raise ValueError(f"{model}: `x` must be at least {min_input}x{min_input} "
                     f"(its `min_input`), got {h}x{w}")


def _pool_size(n: int, window: int, stride: int, pad: int, ceil_mode: bool,
               name: str) -> tuple[int, int]:
  """Output size and extra high-side padding of one pooled axis.

  Caffe's rule in ceil mode (pooling_layer.cpp): `ceil((n + 2 pad - k) / s)
  + 1`, minus one if the last window would start inside the high padding.
  """
  span = n + 2 * pad - window
  out = (-(-span // stride) if ceil_mode else span // stride) + 1
  if ceil_mode and pad > 0 and (out - 1) * stride >= n + pad:
    out -= 1
  if n < 1 or out < 1:
    raise ValueError(f"{name}: a {n}-pixel axis is too small for a "
                     f"{window}x{window} window (stride {stride}, pad {pad}); "
                     f"use a larger input (see the model's `min_input`)")
  return out, max(0, (out - 1) * stride + window - (n + 2 * pad))


def pool(x, kind: str, window: int, stride: int, pad: int = 0,
         ceil_mode: bool = False, name: str = "pool"):
  """Max or average pooling with Caffe / PyTorch output sizes.

  Args:
    x: [B, H, W, C].
    kind: "max" or "avg".
    window: square window size k.
    stride: stride s.
    pad: zero padding on each side (max pooling ignores it; average pooling
      counts only real pixels, Caffe's and PyTorch's rule at pad 0, which is
      how every average pool in the zoo is used).
    ceil_mode: round the output size up (Caffe) instead of down (PyTorch's
      default); the windows that overhang the high edge see only real pixels.
    name: layer name for error messages.

  Returns:
    [B, H', W', C].

  Raises:
    ValueError: when an axis is too small to give at least one output.
  """
  _checks.check_choice("kind", kind, ("max", "avg"))
  pads = []
  for n in x.shape[1:3]:
    _, extra = _pool_size(n, window, stride, pad, ceil_mode, name)
    pads.append((pad, pad + extra))
  if kind == "max":
    return nn.max_pool(x, (window, window), (stride, stride), padding=pads)
  # Flax counts the pixels in a default-dtype array: float64 under x64.
  return nn.avg_pool(x, (window, window), (stride, stride), padding=pads,
                     count_include_pad=False).astype(x.dtype)


def _adaptive_axis(x, axis: int, size: int):
  """PyTorch's adaptive average pooling along one axis."""
  n = x.shape[axis]
  if n == size:
    return x
  if n % size == 0:
    shape = x.shape[:axis] + (size, n // size) + x.shape[axis + 1:]
    return x.reshape(shape).mean(axis=axis + 1)
  # Bin i averages [floor(i n / size), ceil((i + 1) n / size)), which
  # overlap or repeat when n does not divide evenly (n < size included).
  bins = []
  for i in range(size):
    start, stop = (i * n) // size, -(-((i + 1) * n) // size)
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    bins.append(x[tuple(index)].mean(axis=axis, keepdims=True))
  return jnp.concatenate(bins, axis=axis)


def _check_not_collapsed(x, name: str) -> None:
  """ValueError naming the pooling layer when H or W of `x` is 0."""
  if min(x.shape[1:3]) < 1:
    raise ValueError(f"{name}: the feature map collapsed to "
                     f"{x.shape[1]}x{x.shape[2]}; use a larger input (see the "
                     f"model's `min_input`)")


def adaptive_avg_pool(x, size: int, name: str = "adaptive_avg_pool"):
  """Averages [B, H, W, C] down (or up) to [B, size, size, C].

  The classifier heads of torchvision's AlexNet and VGG see a fixed spatial
  size this way, so their parameter count does not depend on the input size;
  at the published input size the pooling is the identity.

  Raises:
    ValueError: when H or W is 0.
  """
  _check_not_collapsed(x, name)
  return _adaptive_axis(_adaptive_axis(x, 1, size), 2, size)


def global_avg_pool(x, name: str = "global_avg_pool"):
  """Averages [B, H, W, C] over H and W to [B, C].

  Raises:
    ValueError: when H or W is 0.
  """
  _check_not_collapsed(x, name)
  return jnp.mean(x, axis=(1, 2))


def flatten(x):
  """[B, ...] -> [B, prod(...)] (NHWC order)."""
  return x.reshape(x.shape[0], math.prod(x.shape[1:]))
