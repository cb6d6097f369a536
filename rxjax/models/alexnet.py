"""AlexNet (Krizhevsky, Sutskever & Hinton 2012), in its two common forms.

* variant="torchvision" (default): torchvision's `alexnet`, the single-tower
  network of Krizhevsky's "One weird trick" (arXiv:1404.5997): conv 64@11x11/4
  pad 2, max pool 3/2, conv 192@5x5 pad 2, max pool 3/2, conv 384, 256, 256
  @3x3 pad 1, max pool 3/2, adaptive average pool to 6 x 6, dense 4096, 4096,
  `num_classes`. 61,100,840 parameters at 1000 classes.
* variant="bvlc": the original two-tower network as Caffe's reference
  `bvlc_alexnet` (the AlexNet RxNN evaluated in Caffe): conv 96@11x11/4,
  conv 256@5x5 pad 2 in 2 groups, conv 384@3x3, conv 384 and 256@3x3 in 2
  groups; same pooling and classifier. 60,965,224 parameters at 1000
  classes at its native 227 x 227 input (at 224 the last map is 5 x 5 and the
  adaptive pooling spreads it to 6 x 6).

Grouped convolutions are `nn.Conv(feature_group_count=2)`. Local response
normalisation (bvlc) is left out: it has no weights and never runs on a
crossbar. Dropout in the classifier is off unless `dropout_rate` > 0.
Both variants use max pooling that rounds down (the Caffe pools round up,
which gives the same sizes at 227).
"""

from __future__ import annotations

import flax.linen as nn

from rxjax import _checks
from rxjax.models import head, layers

# (features, kernel, stride, pad, groups, max pool 3/2 after it)
_LAYERS = {
    "torchvision": ((64, 11, 4, 2, 1, True), (192, 5, 1, 2, 1, True),
                    (384, 3, 1, 1, 1, False), (256, 3, 1, 1, 1, False),
                    (256, 3, 1, 1, 1, True)),
    "bvlc": ((96, 11, 4, 0, 1, True), (256, 5, 1, 2, 2, True),
             (384, 3, 1, 1, 1, False), (384, 3, 1, 1, 2, False),
             (256, 3, 1, 1, 2, True)),
}
# conv1 must give 15 for the three 3/2 max pools (15 -> 7 -> 3 -> 1):
# (63 + 4 - 11) / 4 + 1 = 15 and (67 - 11) / 4 + 1 = 15.
_MIN_INPUT = {"torchvision": 63, "bvlc": 67}


class AlexNet(nn.Module):
  """AlexNet with torchvision's classifier head.

  Attributes:
    num_classes: size of the output layer.
    variant: "torchvision" (single tower) or "bvlc" (two groups, Caffe).
    pool_size: spatial size the first dense layer sees (6 as published).
    dropout_rate: dropout before the hidden dense layers when training.
  """
  num_classes: int
  variant: str = "torchvision"
  pool_size: int = 6
  dropout_rate: float = 0.0


  def __post_init__(self):
    layers.check_num_classes(self.num_classes)
    _checks.check_choice("variant", self.variant, tuple(_LAYERS))
    head.check_head(self.pool_size, self.dropout_rate)
    super().__post_init__()

  @property
  def min_input(self) -> int:
    """Smallest input side this variant supports."""
    return _MIN_INPUT[self.variant]

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits of a batch of images.

    Args:
      x: [B, H, W, C] images, float (224 x 224 x 3 for ImageNet).
      train: enables dropout when `dropout_rate` > 0 (needs a 'dropout' rng).

    Returns:
      [B, num_classes] logits.
    """
    layers.check_input(x, self.min_input, "AlexNet")
    for i, (f, k, s, p, g, pooled) in enumerate(_LAYERS[self.variant]):
      x = nn.Conv(f, (k, k), (s, s), padding=((p, p), (p, p)),
                  feature_group_count=g, kernel_init=layers.relu_init,
                  name=f"conv{i + 1}")(x)
      x = nn.relu(x)
      if pooled:
        x = layers.pool(x, "max", 3, 2, name=f"pool{i + 1}")
    return head.FCHead(self.num_classes, (4096, 4096), self.pool_size,
                        self.dropout_rate, name="classifier")(x, train)
