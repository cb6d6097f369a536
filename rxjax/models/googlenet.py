"""GoogLeNet (Szegedy et al., CVPR 2015, Table 1), without auxiliary heads.

Stem conv 64@7x7/2 pad 3, max pool 3/2, conv 64@1x1, conv 192@3x3 pad 1, max
pool 3/2; inception 3a, 3b, max pool 3/2, 4a-4e, max pool 3/2, 5a, 5b; global
average pool; dense `num_classes`. An inception module concatenates a 1x1
branch, a 1x1 -> 3x3 branch, a 1x1 -> 5x5 branch and a 3x3/1 max pool -> 1x1
branch. Max pools round up as in Caffe's `bvlc_googlenet`, the network RxNN
evaluated. The auxiliary classifiers exist only for training and are left out
(as for inference in the paper); so are local response normalisation (no
weights, never on a crossbar) and the 40 % dropout before the classifier.

* variant="paper" (default): every convolution has a bias and a ReLU, as in
  the paper and `bvlc_googlenet`; 6,998,552 parameters at 1000 classes
  (Table 1's column sums to 6.8 M; it omits the biases and rounds).
* variant="torchvision": torchvision's `googlenet` (aux_logits=False):
  convolutions without bias, each followed by batch norm (epsilon 1e-3), and
  a 3x3 convolution where the paper has 5x5 (torchvision keeps this for
  compatibility with its pretrained weights); 6,624,904 parameters. Its
  fourth max pool stays 3/2 here (torchvision's is 2/2; same 7 x 7 output at
  224, no parameters either way).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from rxjax import _checks
from rxjax.models import layers

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class _ConvReLU(nn.Module):
  """Convolution + ReLU, or bias-free convolution + batch norm + ReLU."""
  features: int
  kernel: int
  stride: int = 1
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    k, p = self.kernel, (self.kernel - 1) // 2
    x = nn.Conv(self.features, (k, k), (self.stride, self.stride),
                padding=((p, p), (p, p)), use_bias=not self.batch_norm,
                kernel_init=layers.relu_init, name="conv")(x)
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


class Inception(nn.Module):
  """One inception module.

  Attributes:
    widths: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
    big_kernel: kernel of the "5x5" branch (3 in torchvision).
    batch_norm: batch norm after each convolution instead of a bias.
  """
  widths: tuple
  big_kernel: int = 5
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    c1, c3r, c3, c5r, c5, cp = self.widths
    unit = lambda f, k, name: _ConvReLU(f, k, batch_norm=self.batch_norm,
                                        name=name)
    b1 = unit(c1, 1, "b1")(x, train)
    b2 = unit(c3, 3, "b2_3x3")(unit(c3r, 1, "b2_reduce")(x, train), train)
    b3 = unit(c5, self.big_kernel, "b3_5x5")(
        unit(c5r, 1, "b3_reduce")(x, train), train)
    b4 = unit(cp, 1, "b4_proj")(layers.pool(x, "max", 3, 1, pad=1), train)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class GoogLeNet(nn.Module):
  """GoogLeNet (Inception v1) without auxiliary classifiers.

  Attributes:
    num_classes: size of the output layer.
    variant: "paper" (biases, 5x5 branch) or "torchvision" (batch norm, 3x3).
  """
  num_classes: int
  variant: str = "paper"

  # 31 -> conv1 16 -> pools 8, 4, 2, 1 (ceil-mode 3/2 needs an axis >= 2).
  min_input: ClassVar[int] = 31

  def __post_init__(self):
    layers.check_num_classes(self.num_classes)
    _checks.check_choice("variant", self.variant, ("paper", "torchvision"))
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits of a batch of images.

    Args:
      x: [B, H, W, C] images, float (224 x 224 x 3 for ImageNet).
      train: batch statistics for the batch norms of the "torchvision"
        variant (apply with `mutable=['batch_stats']`); unused otherwise.

    Returns:
      [B, num_classes] logits.
    """
    layers.check_input(x, self.min_input, "GoogLeNet")
    bn = self.variant == "torchvision"
    big = 3 if bn else 5
    mpool = lambda x, name: layers.pool(x, "max", 3, 2, ceil_mode=True,
                                         name=name)
    x = _ConvReLU(64, 7, 2, bn, name="conv1")(x, train)
    x = mpool(x, "pool1")
    x = _ConvReLU(64, 1, batch_norm=bn, name="conv2_reduce")(x, train)
    x = _ConvReLU(192, 3, batch_norm=bn, name="conv2")(x, train)
    x = mpool(x, "pool2")
    for stage in ("3a", "3b", "pool3", "4a", "4b", "4c", "4d", "4e", "pool4",
                  "5a", "5b"):
      if stage.startswith("pool"):
        x = mpool(x, stage)
      else:
        x = Inception(INCEPTION[stage], big, bn,
                      name=f"inception{stage}")(x, train)
    x = layers.global_avg_pool(x)
    return nn.Dense(self.num_classes, name="fc")(x)
