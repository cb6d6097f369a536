"""A multilayer perceptron: the 784-256-128-10 network of TxSim and aihwkit.

Flattens any input and applies `nn.Dense` layers of `hidden` widths with
ReLU, then the output layer (784 x 256 + 256 x 128 + 128 x 10 weights plus
biases = 235,146 parameters for 28 x 28 digits and 10 classes).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn

from rxjax.models import layers


class MLP(nn.Module):
  """Dense layers with ReLU.

  Attributes:
    num_classes: size of the output layer.
    hidden: widths of the hidden layers.
  """
  num_classes: int
  hidden: Sequence[int] = (256, 128)

  min_input: ClassVar[int] = 1

  def __post_init__(self):
    layers.check_num_classes(self.num_classes)
    if not all(isinstance(h, int) and h >= 1 for h in self.hidden):
      raise ValueError(f"`hidden` must be ints >= 1, got {self.hidden!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits `[B, num_classes]` of a batch `[B, ...]`."""
    del train
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)
