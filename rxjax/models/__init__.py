"""The model zoo: the networks of RxNN (Jain et al.) and TxSim, in Flax Linen.

Owns the network definitions, a registry (`get`, `NAMES`) and parameter
counting (`count_params`). It does not own crossbars: every model is built
only from `nn.Dense` and `nn.Conv` (plus batch norm, pooling and ReLU), so
the code that runs a Linen model on crossbars by intercepting those two
layers runs any model here unchanged.

Every model is `Model(num_classes, ...)` with `__call__(x, train=False)`:
`x` is NHWC [B, H, W, C] float, the result is [B, num_classes] logits, batch
norm uses running averages unless `train` (then apply with
`mutable=['batch_stats']`), and nothing needs a 'dropout' rng unless a
`dropout_rate` > 0 is asked for. A model runs at any input side of at least
`model.min_input`; networks with a dense classifier pool adaptively to the
published spatial size, so their parameter count is the published one at any
input size.

| name      | network                           | params @1000 cls | min_input |
|-----------|-----------------------------------|------------------|-----------|
| mlp       | 784-256-128-10 perceptron         | 235,146 (10 cls) | 1         |
| lenet5    | LeNet-5, 28 or 32 px              | 61,706 (10 cls)  | 1         |
| convnet   | Caffe `cifar10_quick`             | 145,578 (10 cls) | 8         |
| nin_cifar | NiN, CIFAR-10                     | 966,986 (10 cls) | 4         |
| nin       | NiN, ImageNet                     | 7,595,176        | 39        |
| alexnet   | AlexNet (torchvision)             | 61,100,840       | 63        |
| overfeat  | OverFeat "fast"                   | 145,920,872      | 71        |
| vgg16     | VGG-16 (torchvision)              | 138,357,544      | 32        |
| googlenet | GoogLeNet (paper, bvlc_googlenet) | 6,998,552        | 31        |
| resnet18  | ResNet-18 (torchvision)           | 11,689,512       | 1         |
| resnet50  | ResNet-50 (torchvision, v1.5)     | 25,557,032       | 1         |
| resnet20  | CIFAR ResNet-20, option A         | 269,722 (10 cls) | 1         |
| resnet56  | CIFAR ResNet-56, option A         | 853,018 (10 cls) | 1         |

Example:

  model = rxjax.models.get("resnet20", num_classes=10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  logits = model.apply(variables, images)              # [B, 10]
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rxjax.models.alexnet import AlexNet
from rxjax.models.convnet import ConvNet
from rxjax.models.googlenet import GoogLeNet, Inception
from rxjax.models.lenet import LeNet5
from rxjax.models.mlp import MLP
from rxjax.models.nin import NiN, NiNCifar
from rxjax.models.overfeat import OverFeat
from rxjax.models.resnet import BasicBlock, Bottleneck, CifarResNet, ResNet
from rxjax.models.vgg import CONFIGS as VGG_CONFIGS
from rxjax.models.vgg import VGG

# name -> (class, fixed keyword arguments); `get` passes **kw on top.
_REGISTRY = {
    "lenet5": (LeNet5, {}),
    "convnet": (ConvNet, {}),
    "nin_cifar": (NiNCifar, {}),
    "nin": (NiN, {}),
    "alexnet": (AlexNet, {}),
    "overfeat": (OverFeat, {}),
    "vgg16": (VGG, {"config": VGG_CONFIGS["vgg16"]}),
    "googlenet": (GoogLeNet, {}),
    "resnet18": (ResNet, {"depth": 18}),
    "resnet50": (ResNet, {"depth": 50}),
    "resnet20": (CifarResNet, {"depth": 20}),
    "resnet56": (CifarResNet, {"depth": 56}),
    "mlp": (MLP, {}),
}
NAMES = tuple(_REGISTRY)


def get(name: str, num_classes: int, **kw) -> nn.Module:
  """Builds a registered model.

  Args:
    name: one of `NAMES`, e.g. "resnet50".
    num_classes: size of the output layer.
    **kw: further fields of the model class (e.g. `variant="bvlc"` for
      AlexNet, `shortcut="B"` for the CIFAR ResNets, `dropout_rate=0.5`).

  Returns:
    The unbound Flax module.

  Raises:
    ValueError: for an unknown name, or a field out of range.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; valid names: "
                     f"{', '.join(NAMES)}")
  cls, fixed = _REGISTRY[name]
  clash = set(fixed) & set(kw)
  if clash:
    raise ValueError(f"model {name!r} fixes {sorted(clash)}; use the class "
                     f"{cls.__name__} directly to change them")
  return cls(num_classes=num_classes, **fixed, **kw)


def count_params(model: nn.Module, input_shape: Sequence[int]) -> int:
  """Number of trainable parameters, without allocating any.

  Counts the 'params' collection (weights, biases, batch norm scales and
  offsets) and not batch norm's running statistics ('batch_stats'), the
  convention of torchvision's and the papers' counts. Shapes come from
  `jax.eval_shape(model.init, ...)`, so even VGG-16 at 224 x 224 costs only
  a trace.

  Args:
    model: an unbound Flax module taking NHWC images.
    input_shape: [B, H, W, C], or [H, W, C] for a batch of one.

  Returns:
    The total number of parameter entries.

  Raises:
    ValueError: if `input_shape` has neither 3 nor 4 entries.
  """
  shape = tuple(int(n) for n in input_shape)
  if len(shape) == 3:
    shape = (1,) + shape
  if len(shape) != 4:
    raise ValueError(f"`input_shape` must be [B, H, W, C] or [H, W, C], got "
                     f"{tuple(input_shape)!r}")
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  init = functools.partial(model.init, train=False)
  shapes = jax.eval_shape(init, jax.random.key(0), x)
  return sum(math.prod(leaf.shape)
             for leaf in jax.tree_util.tree_leaves(shapes.get("params", {})))


__all__ = [
    "AlexNet", "BasicBlock", "Bottleneck", "CifarResNet", "ConvNet",
    "GoogLeNet", "Inception", "LeNet5", "NAMES", "NiN", "NiNCifar",
    "OverFeat", "ResNet", "VGG", "VGG_CONFIGS", "count_params", "get",
]
