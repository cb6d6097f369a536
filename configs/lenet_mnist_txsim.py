"""LeNet-5 trained ON crossbars (TxSim): Cross-Ideal vs Cross-NI vs digital.

    python train.py --config=configs/lenet_mnist_txsim.py --workdir=/tmp/txsim

Trains LeNet-5 three times from the same initialization on the bundled
MNIST digits: digitally, on an ideal crossbar (Cross-Ideal: 8-bit
converters only, ideal device updates) and on a non-ideal one (Cross-NI:
wires, nu = 0.01, gamma = 5); forward and backward passes run on the chip
(the backward pass is the transposed read), the update goes through the
device response (TxSim eq. 1). Writes DIR/summary.json as {"cross_ideal":
a, "cross_ni": a, "digital": a, "seconds": t}.
"""

import ml_collections

from configs import lenet_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = lenet_mnist.get_config(arg)
  config.mode = "txsim"
  config.num_epochs = 3  # Epochs of each of the three trainings.
  config.optimizer = "sgd"  # Plain SGD: write noise ~ step size (TxSim).
  config.momentum = 0.0
  config.learning_rate = 0.05  # Peak, cosine-decayed.
  # TxSim V's chip: 64x64 tiles, 100 kOhm - 1 MOhm, one analog device per
  # polarity (no slices), 8-bit inputs in one cycle, 8-bit ADCs.
  config.chip.device_bits = 0
  config.chip.weight_bits = 0
  config.chip.dac_bits = 8
  config.chip.sigma = 0.0  # No process variation (TxSim's Cross-NI).
  config.txsim = ml_collections.ConfigDict()
  config.txsim.nu = 0.01  # Update non-linearity factor (TxSim eq. 1).
  config.txsim.gamma = 5.0  # Write-noise factor (TxSim eq. 1).
  # How G_eff follows the weights: "exact" (solved every step),
  # "interpolated" (solved every `interval` steps, the stored distortion
  # (G_ideal - G_eff) / G_ideal reused in between: TxSim IV-D), "aam"
  # (TxSim's approximate analytical model every step, `aam_paths` path
  # families; not for low-resistance devices, see circuit.aam_conductance)
  # or "none" (ideal wires).
  config.txsim.g_eff = "interpolated"
  config.txsim.interval = 10  # L, steps between exact solves.
  config.txsim.aam_paths = 3  # AAM path families (>= 1), g_eff "aam" only.
  config.eval.num_chips = 0
  config.retrain.num_epochs = 0
  return config
