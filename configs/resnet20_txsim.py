"""ResNet-20 (CIFAR-style, He et al. option A) trained ON crossbars (TxSim).

    python train.py --config=configs/resnet20_txsim.py:cifar10 \
        --config.data_dir=/path/to/cifar-10-batches-py --workdir=/tmp/r20
    python train.py --config=configs/resnet20_txsim.py --workdir=/tmp/r20

With the argument `cifar10` it trains on the CIFAR-10 python batches in
`data_dir` (the directory `cifar-10-batches-py`, or its parent); nothing is
downloaded, and a missing directory is an error that names the files
expected. Without it, on the bundled MNIST digits (28 x 28 x 1: 4,000 train,
1,000 test), which runs anywhere. TxSim's chip and device
(`configs/lenet_mnist_txsim.py`: 64x64 tiles, 100 kOhm - 1 MOhm, nu = 0.01,
gamma = 5, interpolated G_eff with L = 10); batch-norm statistics, pooling
and the residual additions stay digital. Trains digitally, on Cross-Ideal
and on Cross-NI from one initialization and writes DIR/summary.json.

Cost: each of the 20 layers is read through its tiles forwards and (for the
errors) backwards. Measured at batch 32 on the quiet 2-core CPU
(2026-11-24): 0.50 s per Cross-NI step, 1.35 s per exact programming (every
10 steps), 13 s to compile the programming and 10 s the step; about 1.5
minutes per epoch of the bundled digits (125 steps) and 17 minutes per
CIFAR-10 epoch (1,563 steps).
"""

import ml_collections

from configs import lenet_mnist_txsim


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "cifar10", "mnist"):
    raise ValueError(f"configs/resnet20_txsim.py takes 'cifar10' or "
                     f"nothing (bundled MNIST), got {arg!r}")
  config = lenet_mnist_txsim.get_config()
  config.model = "resnet20"  # rxjax.models name (269,722 parameters).
  if arg == "cifar10":
    config.dataset = "cifar10"  # Needs --config.data_dir.
  config.batch_size = 32  # Training images per step.
  config.learning_rate = 0.05  # Peak SGD step, cosine-decayed.
  return config
