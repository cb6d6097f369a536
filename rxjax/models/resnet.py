"""Residual networks (He et al., CVPR 2016): ImageNet and CIFAR families.

* `ResNet`: the ImageNet networks as torchvision builds them (ResNet-18,
  -34 with basic blocks; -50, -101, -152 with bottlenecks). Stem conv
  64@7x7/2 pad 3, batch norm, ReLU, max pool 3/2 pad 1; four stages of 64,
  128, 256, 512 base channels; global average pool; dense `num_classes`.
  Convolutions have no bias (batch norm follows each); projection shortcuts
  (1x1 conv + batch norm) where the shape changes. Bottlenecks stride in their
  3x3 convolution ("ResNet v1.5", torchvision's choice; the parameter count is
  the same as the paper's). ResNet-18: 11,689,512 parameters and ResNet-50:
  25,557,032 at 1000 classes, as torchvision's.
* `CifarResNet`: the depth 6n+2 CIFAR networks of section 4.2 (ResNet-20,
  -32, -44, -56, -110): conv 16@3x3, three stages of n basic blocks with 16,
  32, 64 channels, global average pool, dense `num_classes`. Shortcuts are
  option A as in the paper (identity; stride-2 subsampling and zero-padded
  channels where the shape changes, no parameters), or option B (1x1
  convolution + batch norm projections) with `shortcut="B"`. ResNet-20 has
  269,722 parameters and ResNet-56 853,018 at 10 classes with option A
  (Table 6: 0.27 M and 0.85 M); option B adds 2,752.

Every stride-2 layer pads symmetrically (PyTorch's rule, not "SAME"), so an
H-pixel axis becomes ceil(H / 2) and no input size collapses to 0. Batch
norm uses running averages unless `train`, with PyTorch's momentum 0.1 and
epsilon 1e-5. Both families count batch norm's scale and bias as parameters
and its running statistics (collection 'batch_stats') as state.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from rxjax import _checks
from rxjax.models import layers

# torchvision's and the paper's (Table 1) stage depths.
STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _conv(features, kernel, stride=1, name=None):
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=layers.relu_init, name=name)


def _norm(train, name=None):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a shortcut.

  Attributes:
    features: output channels.
    stride: stride of the first convolution (and of the shortcut).
    shortcut: "B" projects (1x1 conv + batch norm) when the shape changes,
      "A" subsamples and zero-pads channels instead (no parameters).
  """
  features: int
  stride: int = 1
  shortcut: str = "B"

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = _conv(self.features, 3, self.stride, name="conv1")(x)
    y = nn.relu(_norm(train, name="bn1")(y))
    y = _conv(self.features, 3, name="conv2")(y)
    y = _norm(train, name="bn2")(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      if self.shortcut == "A":
        x = x[:, ::self.stride, ::self.stride, :]
        extra = self.features - x.shape[-1]
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0),
                        (extra // 2, extra - extra // 2)))
      else:
        x = _conv(self.features, 1, self.stride, name="proj_conv")(x)
        x = _norm(train, name="proj_bn")(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand by 4, with a shortcut.

  Attributes:
    features: channels of the 3x3 convolution; the block outputs 4x that.
    stride: stride of the 3x3 convolution (and of the projection).
  """
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = 4 * self.features
    y = _conv(self.features, 1, name="conv1")(x)
    y = nn.relu(_norm(train, name="bn1")(y))
    y = _conv(self.features, 3, self.stride, name="conv2")(y)
    y = nn.relu(_norm(train, name="bn2")(y))
    y = _conv(out, 1, name="conv3")(y)
    y = _norm(train, name="bn3")(y)
    if self.stride != 1 or x.shape[-1] != out:
      x = _conv(out, 1, self.stride, name="proj_conv")(x)
      x = _norm(train, name="proj_bn")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """An ImageNet ResNet (ResNet-50 by default).

  Attributes:
    num_classes: size of the output layer.
    depth: 18, 34, 50, 101 or 152 (sets block type and stage depths).
  """
  num_classes: int
  depth: int = 50

  # Every stride-2 layer maps H to ceil(H / 2) >= 1.
  min_input: ClassVar[int] = 1

  def __post_init__(self):
    layers.check_num_classes(self.num_classes)
    _checks.check_choice("depth", self.depth, tuple(STAGES))
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits of a batch of images.

    Args:
      x: [B, H, W, C] images, float (224 x 224 x 3 for ImageNet).
      train: normalise with batch statistics and update the running ones
        (apply with `mutable=['batch_stats']`).

    Returns:
      [B, num_classes] logits.
    """
    layers.check_input(x, self.min_input, f"ResNet-{self.depth}")
    kind, stages = STAGES[self.depth]
    x = _conv(64, 7, 2, name="conv1")(x)
    x = nn.relu(_norm(train, name="bn1")(x))
    x = layers.pool(x, "max", 3, 2, pad=1, name="pool1")
    for i, blocks in enumerate(stages):
      for j in range(blocks):
        stride = 2 if i > 0 and j == 0 else 1
        name = f"layer{i + 1}_{j}"
        if kind == "basic":
          x = BasicBlock(64 * 2**i, stride, name=name)(x, train)
        else:
          x = Bottleneck(64 * 2**i, stride, name=name)(x, train)
    x = layers.global_avg_pool(x)
    return nn.Dense(self.num_classes, name="fc")(x)


class CifarResNet(nn.Module):
  """A CIFAR ResNet of depth 6n+2 (ResNet-20 by default).

  Attributes:
    num_classes: size of the output layer.
    depth: 6n + 2 for n >= 1 (20, 32, 44, 56, 110 in the paper).
    shortcut: "A" (the paper's, parameter-free) or "B" (projections).
  """
  num_classes: int
  depth: int = 20
  shortcut: str = "A"

  # Every stride-2 layer maps H to ceil(H / 2) >= 1.
  min_input: ClassVar[int] = 1

  def __post_init__(self):
    layers.check_num_classes(self.num_classes)
    if not (_checks.is_int(self.depth) and self.depth >= 8
            and (self.depth - 2) % 6 == 0):
      raise ValueError(f"`depth` must be 6n + 2 with n >= 1 (20, 32, 44, 56, "
                       f"110, ...), got {self.depth!r}")
    _checks.check_choice("shortcut", self.shortcut, ("A", "B"))
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits of a batch of images.

    Args:
      x: [B, H, W, C] images, float (32 x 32 x 3 for CIFAR).
      train: normalise with batch statistics and update the running ones
        (apply with `mutable=['batch_stats']`).

    Returns:
      [B, num_classes] logits.
    """
    layers.check_input(x, self.min_input, f"ResNet-{self.depth}")
    n = (self.depth - 2) // 6
    x = _conv(16, 3, name="conv1")(x)
    x = nn.relu(_norm(train, name="bn1")(x))
    for i in range(3):
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(16 * 2**i, stride, self.shortcut,
                       name=f"layer{i + 1}_{j}")(x, train)
    x = layers.global_avg_pool(x)
    return nn.Dense(self.num_classes, name="fc")(x)
