"""What every phase of a run shares: the model, the data, the calibration
images and the device mesh, loaded once from a config."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from rxjax import data as data_lib
from rxjax import distributed
from rxjax import finite
from rxjax import models


@dataclasses.dataclass
class Setup:
  """What every phase of a run shares."""
  model: nn.Module
  data: data_lib.Dataset
  calib: np.ndarray  # Calibration images (training set).
  # The devices the run uses (`config.num_devices`; default all): the
  # training batch, the test batches and the Monte-Carlo chips are split
  # over its one axis.
  mesh: jax.sharding.Mesh | None = None

  def __post_init__(self):
    if self.mesh is None:
      self.mesh = distributed.make_mesh()


def setup(config: ml_collections.ConfigDict) -> Setup:
  """The run a config describes: its dataset (images checked finite), model,
  `eval.calibration_size` calibration images drawn from the training set
  with `config.seed`, and the mesh of `config.num_devices` devices."""
  data = data_lib.load(config.dataset, data_dir=config.data_dir,
                       seed=config.seed, image_size=config.image_size)
  for name in ("x_train", "x_test"):
    finite.check(f"{config.dataset}.{name}", getattr(data, name),
                 f"images of dataset {config.dataset!r}")
  if data.name == "synthetic":
    print("  data: SYNTHETIC random images (smoke test only; accuracies "
          "mean nothing)", flush=True)
  model = models.get(config.model, num_classes=data.num_classes)
  rng = np.random.default_rng(config.seed)
  idx = rng.choice(len(data.x_train), min(config.eval.calibration_size,
                                          len(data.x_train)), replace=False)
  mesh = distributed.make_mesh(config.get("num_devices"))
  return Setup(model, data, data.x_train[np.sort(idx)], mesh)


def init_variables(model, x, seed) -> dict:
  """The model's initial variables for inputs shaped like `x[:1]`, from
  `seed` (what `train` starts from)."""
  variables = jax.jit(lambda k: model.init(k, x[:1]))(
      jax.random.key(seed))
  return dict(variables)
