"""The 784-256-128-10 MLP trained ON crossbars (TxSim) on the bundled MNIST.

    python train.py --config=configs/mlp_mnist_txsim.py --workdir=/tmp/mlp_txsim

The network and batch of IBM aihwkit's analog-training example (batch 64),
with TxSim's chip and device (`configs/lenet_mnist_txsim.py`): trains the
MLP digitally, on Cross-Ideal and on Cross-NI from one initialization and
writes DIR/summary.json as {"cross_ideal": a, "cross_ni": a, "digital": a,
"seconds": t}. `benchmarks/train_bench.py` times its epochs.
"""

import ml_collections

from configs import lenet_mnist_txsim


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = lenet_mnist_txsim.get_config(arg)
  config.model = "mlp"  # rxjax.models.MLP, hidden (256, 128): 784-256-128-10.
  config.batch_size = 64  # Training images per step (aihwkit's example).
  config.learning_rate = 0.1  # Peak SGD step, cosine-decayed.
  return config
