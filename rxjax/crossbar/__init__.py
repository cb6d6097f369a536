"""The three-stage crossbar VMM of a programmed layer (RxNN V-A, TxSim IV).

This package owns what happens between a layer's weights and its outputs on a
chip:

* `ChipSpec`: every setting of the simulated chip (tiles, mapping, device,
  wires, converters, backward mode), frozen and hashable.
* `program` = `write` then `solve`: weights -> a `Chip` pytree. `write`
  maps the weights and draws one chip instance of device variation and ADC
  errors (the programmed conductances of every tile); `solve`, the one tile
  batcher, computes the exact forward (and, for training, backward)
  effective conductances `G_eff` of every tile of any number of chips in one
  batched `circuit.effective_conductance`, its tile axis sharded over a
  mesh's devices when given one. `G_eff` is computed once per chip, never
  per input. `reprogram` writes new weights on a programmed chip and reuses
  its distortion instead of solving (TxSim's interpolated FCM).
* `calibrate`: input scale and ADC full-scale current from a calibration
  batch (RxNN VII, TxSim IV-B).
* `read`: the three stages, DAC -> `v @ G_eff` per tile -> ADC, then
  shift-and-add over input cycles and weight slices, pair subtraction, the
  digital sum over fan-in tiles and the conversion back to weight units.
  `direction="backward"` is the transposed read of an error signal.
* `crossbar_matmul`: `read` with a custom VJP; the backward pass is either a
  floating-point straight-through (RxNN re-training) or the transposed
  non-ideal read (TxSim training).
* `matmul`: the one-call, NumPy-like entry point.

It does not own the circuit solve (`rxjax.circuit`), the weight <-> conductance
map (`mapping.py`), device physics (`device.py`) or the converter models
(`rxjax.periphery`): it composes them.

Conventions. Inputs are scaled by a per-layer input scale `x_scale` into
`[-1, 1]` and applied as two passes (positive part, then negative part, the
digital results subtracted) unless `ChipSpec.inputs == "non_negative"`, which
skips the negative pass (negative inputs are then clipped to 0: use it after
a ReLU). Conductance arrays of a chip are `[S, P, Tr, Tc, M, N]`: weight
slices, polarities (differential: 0 = positive, 1 = negative crossbar),
tile rows and columns of the layer's tile grid, and the tile itself.

Modules: `spec` (`ChipSpec`), `chip` (`Chip`, `write`, `solve`, `program`,
`reprogram`), `reads` (`read`, `fold`), `calibration` (`calibrate`,
`column_gain`) and `matmul` (`crossbar_matmul`, `matmul`).
"""

# The modules a ChipSpec composes, as `crossbar.<module>` (tests, callers).
from rxjax import device as device_lib
from rxjax import mapping as mapping_lib
from rxjax import periphery
from rxjax.crossbar.calibration import calibrate, column_gain
from rxjax.crossbar.chip import (Chip, program, reprogram, solve,
                                 variation_key, write)
from rxjax.crossbar.matmul import crossbar_matmul, matmul
from rxjax.crossbar.reads import fold, read
from rxjax.crossbar.spec import (ADC_RANGE_FACTORS, ADC_RANGES, GAIN_CORRECTIONS,
                                 ChipSpec)

__all__ = ["ADC_RANGE_FACTORS", "ADC_RANGES", "Chip", "ChipSpec",
           "GAIN_CORRECTIONS", "calibrate", "column_gain", "crossbar_matmul",
           "fold", "matmul", "program", "read", "reprogram", "solve",
           "variation_key", "write"]
