"""Energy, latency and area of the chip that runs a network (RxNN VIII-B).

RxNN evaluates each crossbar design's accuracy beside its system energy per
image (figs. 12b and 13). This module gives the second number for the same
chip that `rxjax.nn` simulates, counted from the mapped network itself:

* `EnergySpec`: the technology parameters (per-operation energies, timing,
  areas), frozen and validated, with a documented default and source for
  each (ISAAC's 32 nm components, Shafiee et al., ISCA 2016, as the MIT
  licensed Accelergy / CiMLoop component library carries them), and a
  second preset, `EnergySpec.neurosim_22nm()`, where the sources disagree.
* `layer_counts`: the closed-form operation counts of one crossbar layer
  per image (tile reads, DAC and ADC conversions, shift-and-adds, digital
  accumulations, buffer traffic).
* `count`: every crossbar layer of a Linen model, from shapes only (no
  data, no programming: a `jax.eval_shape` pass), with a nominal array term.
* `estimate`: the same counts plus the array's own read energy from the
  physics of one programmed chip instance (`rxjax.nn.program`): the energy
  its devices and wires dissipate for the actual input voltages of every
  read, `t_read * v^T Y v` per crossbar read with `Y` the tile's row-port
  admittance (see `EnergySpec.array_model`).

Counting rules (DESIGN.md section 7), per image and per crossbar layer of
fan-in K, fan-out F (per group), G groups and P output positions (1 for a
dense layer on one vector, every output position of a convolution), on
M x N tiles, `Tr x Tc = ceil(K / M) x ceil(F / N')` tiles per matrix
(`N' = N`, or `N - 1` with the offset scheme's reference column), S weight
slices, `Pol` crossbars per signed weight (2 for differential pairs, else
1), Q input passes (2 for signed inputs, else 1) and C DAC cycles:

* tile reads: `P Q C G Tr Tc S Pol`, one per crossbar and input cycle;
* DAC conversions: M per tile read (every row of every driven crossbar has
  its DAC, as in ISAAC), or only the K mapped rows when power-gated;
* ADC conversions: N per read of a crossbar (digital pair subtraction) or
  of a pair (analog subtraction, one bipolar ADC per pair), i.e.
  `P Q C G Tr Tc S Pol_adc N`: the unmapped columns of an activated tile
  are digitized too (RxNN's redundant computation) unless power-gated,
  which digitizes only the F mapped columns (plus each tile's reference
  column with the offset scheme);
* shift-and-adds: one per ADC conversion (each reading is shifted by its
  cycle and slice and added, with its sign, into its output);
* accumulations: `P G F (Q Tr - 1)`, the digital sum of the `Q Tr` partial
  sums (passes, fan-in tiles) of each output, plus `P G F Q Tr` reference
  subtractions with the offset scheme;
* buffer reads: the `P G K` input values of every position (each patch of a
  convolution is read, no reuse between positions), buffer writes: the
  `P G F` outputs, at `EnergySpec.activation_bits` each.

Latency per image: the layers run one after another; in a layer every
position, pass and cycle is one step of `read_pulse_s` plus the conversion
of the columns that share one ADC (`columns_per_adc / adc_sample_rate_hz`),
with `tiles_in_parallel` crossbars at once. Area: every layer's crossbars
(the whole network is mapped, weight-stationary), their ADCs, DACs and
shift-and-add units, and a buffer holding the largest layer's input and
output feature maps.

Every number is per image: totals over an example batch divided by its size.

Modules: `spec` (`EnergySpec`, the ADC tables), `counts` (`Geometry`,
`layer_counts`, `nominal_array_j`), `report` (`EnergyReport`), `network`
(`layers`, `count`) and `array` (`estimate`).
"""

from rxjax.energy.array import estimate
from rxjax.energy.counts import Geometry, layer_counts, nominal_array_j
from rxjax.energy.network import count, layers
from rxjax.energy.report import EnergyReport
from rxjax.energy.spec import ISAAC_ADC_PJ, EnergySpec, neurosim_adc_pj

__all__ = ["EnergyReport", "EnergySpec", "Geometry", "ISAAC_ADC_PJ", "count",
           "estimate", "layer_counts", "layers", "neurosim_adc_pj",
           "nominal_array_j"]
