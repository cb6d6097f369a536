"""The CIFAR-10 ConvNet of RxNN's Table I: Caffe's `cifar10_quick`.

RxNN (Jain et al., Table I) lists a CIFAR-10 "ConvNet" with 3 convolutional
and 2 fully connected layers, 0.01 billion synapses and 0.05 million neurons,
run in Caffe, without giving its layers. Caffe's own CIFAR-10 example
`examples/cifar10/cifar10_quick_train_test.prototxt` (BVLC/caffe) has exactly
that shape and size: conv 32@5x5 pad 2, max pool 3/2, conv 32@5x5 pad 2, avg
pool 3/2, conv 64@5x5 pad 2, avg pool 3/2, dense 64, dense `num_classes`,
ReLU after each convolution; 12.4 M multiply-accumulates and 45 k neurons per
32 x 32 image; 145,578 parameters for 10 classes. As in the prototxt there is
no nonlinearity between the two dense layers, and pooling rounds up (Caffe's
ceil mode: 32 -> 16 -> 8 -> 4).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from rxjax.models import layers


class ConvNet(nn.Module):
  """Caffe's `cifar10_quick` network.

  Attributes:
    num_classes: size of the output layer.
  """
  num_classes: int

  # Each ceil-mode 3/2 pooling needs an axis of at least 2: 8 -> 4 -> 2 -> 1.
  min_input: ClassVar[int] = 8

  def __post_init__(self):
    layers.check_num_classes(self.num_classes)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits of a batch of images.

    Args:
      x: [B, H, W, C] images, float (32 x 32 x 3 for CIFAR).
      train: unused (no batch norm, no dropout); kept for a uniform signature.

    Returns:
      [B, num_classes] logits.
    """
    del train
    layers.check_input(x, self.min_input, "ConvNet")
    conv = lambda f, name: nn.Conv(f, (5, 5), padding=((2, 2), (2, 2)),
                                   kernel_init=layers.relu_init, name=name)
    # The prototxt pools before the first ReLU; max pooling and ReLU commute.
    x = nn.relu(conv(32, "conv1")(x))
    x = layers.pool(x, "max", 3, 2, ceil_mode=True, name="pool1")
    x = nn.relu(conv(32, "conv2")(x))
    x = layers.pool(x, "avg", 3, 2, ceil_mode=True, name="pool2")
    x = nn.relu(conv(64, "conv3")(x))
    x = layers.pool(x, "avg", 3, 2, ceil_mode=True, name="pool3")
    x = nn.Dense(64, name="ip1")(layers.flatten(x))
    return nn.Dense(self.num_classes, name="ip2")(x)
