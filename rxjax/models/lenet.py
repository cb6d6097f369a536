"""LeNet-5 (LeCun et al. 1998) for MNIST-sized inputs.

The classic geometry: conv 6@5x5, pool 2, conv 16@5x5, pool 2, dense 120, 84,
`num_classes` (61,706 parameters for 1 x 28 x 28 inputs and 10 classes).
LeCun et al. centre the 28 x 28 MNIST digits in a 32 x 32 field (section
II.B); here the first convolution zero-pads any input smaller than 32 x 32 up
to 32 x 32, so 28 x 28 digits see exactly the classic feature maps (28, 14,
10, 5) and the parameter count is the same for every input up to 32 x 32.
Modernised as is usual: ReLU instead of the scaled tanh, plain max (or
average) pooling instead of trainable subsampling, a full C3 table instead of
the sparse one, and C5 as the dense layer it is on a 5 x 5 map. RxNN's Table I
lists LeNet with 0.0005 billion synapses, which is this network (~0.42 M
multiply-accumulates per image).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from rxjax import _checks
from rxjax.models import layers


class LeNet5(nn.Module):
  """LeNet-5 with ReLU.

  Attributes:
    num_classes: size of the output layer.
    pooling: "max" (default) or "avg" subsampling after each convolution.
  """
  num_classes: int
  pooling: str = "max"

  # Inputs below 32 x 32 are padded up to it, so any size works.
  min_input: ClassVar[int] = 1
  # LeCun et al.'s input field (section II.B).
  field: ClassVar[int] = 32

  def __post_init__(self):
    layers.check_num_classes(self.num_classes)
    _checks.check_choice("pooling", self.pooling, ("max", "avg"))
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits of a batch of images.

    Args:
      x: [B, H, W, C] images, float.
      train: unused (no batch norm, no dropout); kept for a uniform signature.

    Returns:
      [B, num_classes] logits.
    """
    del train
    layers.check_input(x, self.min_input, "LeNet5")
    pads = []
    for n in x.shape[1:3]:
      total = max(0, self.field - n)
      pads.append((total // 2, total - total // 2))
    x = nn.Conv(6, (5, 5), padding=pads, kernel_init=layers.relu_init,
                name="conv1")(x)
    x = layers.pool(nn.relu(x), self.pooling, 2, 2, name="pool1")
    x = nn.Conv(16, (5, 5), padding="VALID", kernel_init=layers.relu_init,
                name="conv2")(x)
    x = layers.pool(nn.relu(x), self.pooling, 2, 2, name="pool2")
    x = layers.flatten(x)
    x = nn.relu(nn.Dense(120, kernel_init=layers.relu_init, name="fc1")(x))
    x = nn.relu(nn.Dense(84, kernel_init=layers.relu_init, name="fc2")(x))
    return nn.Dense(self.num_classes, name="fc3")(x)
