"""The fully connected classifier of AlexNet, OverFeat and VGG.

Adaptive average pooling to `pool_size` x `pool_size` (torchvision's
`AdaptiveAvgPool2d`), flatten, hidden dense layers with ReLU, then the
`num_classes` output layer. Pooling to a fixed size makes the parameter count
independent of the input size: it is the identity at the published input
size and lets the same network run on small images.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from rxjax import _checks
from rxjax.models import layers


class FCHead(nn.Module):
  """Adaptive pool, flatten, dense + ReLU (+ dropout) layers, dense logits.

  Attributes:
    num_classes: size of the output layer.
    hidden: widths of the hidden dense layers.
    pool_size: spatial size the first dense layer sees.
    dropout_rate: dropout before each hidden dense layer when training (the
      published networks use 0.5; 0 leaves it out and needs no 'dropout' rng).
  """
  num_classes: int
  hidden: Sequence[int]
  pool_size: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.flatten(layers.adaptive_avg_pool(x, self.pool_size))
    for i, width in enumerate(self.hidden):
      if self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(width, kernel_init=layers.relu_init,
                           name=f"fc{i + 1}")(x))
    return nn.Dense(self.num_classes, name=f"fc{len(self.hidden) + 1}")(x)


def check_head(pool_size, dropout_rate) -> None:
  """Validates the head fields of a model (ValueError naming the field)."""
  if not (_checks.is_int(pool_size) and pool_size >= 1):
    raise ValueError(f"`pool_size` must be an int >= 1, got {pool_size!r}")
  rate = _checks.as_finite_float("dropout_rate", dropout_rate, "in [0, 1)")
  if not 0 <= rate < 1:
    raise ValueError(f"`dropout_rate` must be in [0, 1), got {dropout_rate!r}")
