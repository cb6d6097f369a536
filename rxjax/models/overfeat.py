"""OverFeat's "fast" model (Sermanet et al., ICLR 2014, Table 1).

Conv 96@11x11/4, max pool 2/2; conv 256@5x5, max pool 2/2; conv 512, 1024,
1024 @3x3 pad 1, max pool 2/2; dense 3072, 4096, `num_classes`. At the
paper's 231 x 231 input the last map is 6 x 6 x 1024 and the network has
145,920,872 parameters at 1000 classes (Table 4: "145 million"). This is the
5-convolution, 3-dense OverFeat of RxNN's Table I (the "accurate" model has 6
convolutions). Like AlexNet here, the classifier sees an adaptive average
pool to `pool_size` x `pool_size` (6), so the parameter count does not depend
on the input size and 224 x 224 or small inputs work. OverFeat uses no
contrast normalisation; its dropout is off unless `dropout_rate` > 0.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from rxjax.models import head, layers

# (features, kernel, stride, pad, max pool 2/2 after it), Table 1.
_LAYERS = ((96, 11, 4, 0, True), (256, 5, 1, 0, True), (512, 3, 1, 1, False),
           (1024, 3, 1, 1, False), (1024, 3, 1, 1, True))


class OverFeat(nn.Module):
  """OverFeat "fast" with an adaptive-pooled classifier.

  Attributes:
    num_classes: size of the output layer.
    pool_size: spatial size the first dense layer sees (6 as published).
    dropout_rate: dropout before the hidden dense layers when training.
  """
  num_classes: int
  pool_size: int = 6
  dropout_rate: float = 0.0

  # 71 -> conv1 16 -> pool 8 -> conv2 4 -> pool 2 -> pool 1.
  min_input: ClassVar[int] = 71

  def __post_init__(self):
    layers.check_num_classes(self.num_classes)
    head.check_head(self.pool_size, self.dropout_rate)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits of a batch of images.

    Args:
      x: [B, H, W, C] images, float (231 x 231 x 3 in the paper).
      train: enables dropout when `dropout_rate` > 0 (needs a 'dropout' rng).

    Returns:
      [B, num_classes] logits.
    """
    layers.check_input(x, self.min_input, "OverFeat")
    for i, (f, k, s, p, pooled) in enumerate(_LAYERS):
      x = nn.Conv(f, (k, k), (s, s), padding=((p, p), (p, p)),
                  kernel_init=layers.relu_init, name=f"conv{i + 1}")(x)
      x = nn.relu(x)
      if pooled:
        x = layers.pool(x, "max", 2, 2, name=f"pool{i + 1}")
    return head.FCHead(self.num_classes, (3072, 4096), self.pool_size,
                        self.dropout_rate, name="classifier")(x, train)
