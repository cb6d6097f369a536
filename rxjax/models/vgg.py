"""VGG (Simonyan & Zisserman, ICLR 2015), configuration D = VGG-16.

Thirteen 3x3 convolutions with bias and ReLU in five stages (64, 128, 256,
512, 512 channels) each ending in a 2/2 max pool, then torchvision's
classifier: adaptive average pool to 7 x 7, dense 4096, 4096, `num_classes`.
138,357,544 parameters at 1000 classes (torchvision's `vgg16`, no batch
norm). The adaptive pooling is the identity at 224 x 224 and lets the same
network run at 32 x 32 (where the last map is 1 x 1 and is repeated 7 x 7);
`pool_size=1` gives the smaller 512-input classifier common for CIFAR.
Dropout in the classifier is off unless `dropout_rate` > 0.
"""

from __future__ import annotations

from typing import Sequence, Union

import flax.linen as nn

from rxjax.models import head, layers

# Table 1 of the paper; "M" is a 2/2 max pool.
CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512,
              512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512,
              "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512,
              512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
  """A VGG network (VGG-16 by default).

  Attributes:
    num_classes: size of the output layer.
    config: conv widths and "M" (max pool 2/2) markers, e.g. CONFIGS["vgg16"].
    batch_norm: add batch norm after each convolution (torchvision's
      `vgg16_bn`; the convolutions keep their bias as there).
    pool_size: spatial size the first dense layer sees (7 as published).
    dropout_rate: dropout before the hidden dense layers when training.
  """
  num_classes: int
  config: Sequence[Union[int, str]] = CONFIGS["vgg16"]
  batch_norm: bool = False
  pool_size: int = 7
  dropout_rate: float = 0.0


  def __post_init__(self):
    layers.check_num_classes(self.num_classes)
    head.check_head(self.pool_size, self.dropout_rate)
    for item in self.config:
      if item != "M" and not (isinstance(item, int) and item >= 1):
        raise ValueError(f"`config` must hold ints >= 1 and 'M', got "
                         f"{item!r} in {self.config!r}")
    super().__post_init__()

  @property
  def min_input(self) -> int:
    """Smallest input side: each 2/2 max pool halves it (32 for VGG-16)."""
    return 2**sum(1 for item in self.config if item == "M")

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits of a batch of images.

    Args:
      x: [B, H, W, C] images, float (224 x 224 x 3 for ImageNet).
      train: batch statistics (if `batch_norm`) and dropout (if
        `dropout_rate` > 0, needs a 'dropout' rng) when True.

    Returns:
      [B, num_classes] logits.
    """
    layers.check_input(x, self.min_input, "VGG")
    conv, pool = 0, 0
    for item in self.config:
      if item == "M":
        pool += 1
        x = layers.pool(x, "max", 2, 2, name=f"pool{pool}")
        continue
      conv += 1
      x = nn.Conv(item, (3, 3), padding=((1, 1), (1, 1)),
                  kernel_init=layers.relu_init, name=f"conv{conv}")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         epsilon=1e-5, name=f"bn{conv}")(x)
      x = nn.relu(x)
    return head.FCHead(self.num_classes, (4096, 4096), self.pool_size,
                        self.dropout_rate, name="classifier")(x, train)
