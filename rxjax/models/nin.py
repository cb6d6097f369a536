"""Network in Network (Lin, Chen & Yan, ICLR 2014): CIFAR and ImageNet models.

Both are the Caffe models the authors released (Caffe Model Zoo gists
mavenlin/e56253735ef32c3c296d for CIFAR-10 and mavenlin/d802a5849de39225bcc6
for ImageNet), which are the two NiNs of RxNN's Table I (9 and 12
convolutional layers, no fully connected layer). Each "mlpconv" block is a
spatial convolution followed by two 1x1 convolutions ("cccp" layers), every
one with a bias and a ReLU, the last block has `num_classes` channels, and
global average pooling gives the logits. As in the released models the ReLU
after the last 1x1 convolution is kept (`final_relu`), so the logits are
non-negative. Pooling rounds up as Caffe does. The dropout layers of the
released models (after the first two blocks) are left out.

* `NiNCifar` (3 blocks): conv 192@5x5 - 160 - 96, max pool 3/2;
  conv 192@5x5 - 192 - 192, avg pool 3/2; conv 192@3x3 - 192 - classes;
  966,986 parameters for 10 classes.
* `NiN` (4 blocks, ImageNet): conv 96@11x11/4 - 96 - 96, max pool 3/2;
  conv 256@5x5 - 256 - 256, max pool 3/2; conv 384@3x3 - 384 - 384, max
  pool 3/2; conv 1024@3x3 - 1024 - classes; 7,595,176 parameters for 1000
  classes.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn

from rxjax.models import layers


class _MLPConv(nn.Module):
  """A spatial convolution and 1x1 convolutions, each with a ReLU."""
  features: Sequence[int]
  kernel: int
  stride: int
  pad: int
  final_relu: bool = True

  @nn.compact
  def __call__(self, x):
    k, p = self.kernel, self.pad
    for i, f in enumerate(self.features):
      last = i == len(self.features) - 1
      shape = (k, k) if i == 0 else (1, 1)
      strides = (self.stride, self.stride) if i == 0 else (1, 1)
      padding = ((p, p), (p, p)) if i == 0 else "VALID"
      x = nn.Conv(f, shape, strides, padding=padding,
                  kernel_init=layers.relu_init)(x)
      if not last or self.final_relu:
        x = nn.relu(x)
    return x


class _NiNBase(nn.Module):
  """mlpconv blocks, each but the last followed by a ceil-mode 3/2 pool.

  Subclasses set `blocks`: (widths of the block's convolutions without the
  last block's classes, kernel, stride, padding, pooling after or None).

  Attributes:
    num_classes: channels of the last 1x1 convolution (= logits).
    final_relu: apply the released model's ReLU to the last convolution.
  """
  num_classes: int
  final_relu: bool = True

  blocks: ClassVar[tuple] = ()
  min_input: ClassVar[int] = 1

  def __post_init__(self):
    layers.check_num_classes(self.num_classes)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits of a batch of images.

    Args:
      x: [B, H, W, C] images, float.
      train: unused (no batch norm, dropout left out).

    Returns:
      [B, num_classes] logits.
    """
    del train
    layers.check_input(x, self.min_input, type(self).__name__)
    for i, (widths, kernel, stride, pad, pool) in enumerate(self.blocks):
      last = i == len(self.blocks) - 1
      if last:
        widths = widths + (self.num_classes,)
      x = _MLPConv(widths, kernel, stride, pad,
                   self.final_relu if last else True, name=f"block{i + 1}")(x)
      if pool is not None:
        x = layers.pool(x, pool, 3, 2, ceil_mode=True, name=f"pool{i + 1}")
    return layers.global_avg_pool(x)


class NiNCifar(_NiNBase):
  """The CIFAR-10 Network in Network (9 convolutions; 32 x 32 x 3 input)."""

  blocks: ClassVar[tuple] = (((192, 160, 96), 5, 1, 2, "max"),
                             ((192, 192, 192), 5, 1, 2, "avg"),
                             ((192, 192), 3, 1, 1, None))
  # Ceil-mode 3/2 pooling twice: 4 -> 2 -> 1.
  min_input: ClassVar[int] = 4


class NiN(_NiNBase):
  """The ImageNet Network in Network (12 convolutions; 224 x 224 x 3)."""

  blocks: ClassVar[tuple] = (((96, 96, 96), 11, 4, 0, "max"),
                             ((256, 256, 256), 5, 1, 2, "max"),
                             ((384, 384, 384), 3, 1, 1, "max"),
                             ((1024, 1024), 3, 1, 1, None))
  # 39 -> conv1 8 -> pools 4, 2, 1 (ceil-mode 3/2 needs an axis >= 2).
  min_input: ClassVar[int] = 39
