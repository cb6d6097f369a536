"""Flax Linen layers on simulated crossbars (RxNN VI).

This package owns how Linen layers run on a chip:

* `CrossbarDense`, `CrossbarConv`: drop-in `nn.Dense` / `nn.Conv` (same
  parameters, same names) with a `spec` field: None runs them digitally.
* `on_crossbars(spec)`: runs any existing Linen model built from `nn.Dense`
  and `nn.Conv` on crossbars without rewriting it (a Flax method
  interceptor). Everything else (activations, pooling, normalization)
  stays digital; layers with a kernel that are neither (`nn.DenseGeneral`,
  `nn.Einsum`, `nn.ConvTranspose`, `nn.ConvLocal`) warn that they do.
* `mode_spec`: the three modes from the same parameters: "digital"
  (floating point), "ideal" (converter and device precision only: RxNN's
  Cross-ideal, `ChipSpec.cross_ideal`), "nonideal" (everything on).
* `program`: programs every layer's chip once, on one pure path: params ->
  every layer's mapped and varied conductances (`crossbar.write`, in one
  pass of the model) -> all tiles of all layers solved in one batch
  (`crossbar.solve`, its tile axis sharded over a mesh when given one) ->
  per-layer `Chip` pytrees -> one calibration pass -> the chips, in the Flax
  variable collection "chips". `jax.vmap` over keys programs many chip
  instances at once.
* `apply`: reads them (reused across batches); `apply(refresh=True)`
  reprograms new weights with the stored distortion, `apply(program_key=k)`
  runs `program`'s path with the calibration pass as the forward pass
  itself (TxSim's exact FCM step).
  With `ChipSpec.gain_correction = "column"` the calibration pass also fits
  each layer's per-column digital output gain (`crossbar.column_gain`, on
  the calibration batch as it flows through the layers already on chips);
  a refresh keeps the fitted gains, like the rest of the calibration.
  With `ChipSpec.adc_range = "fitted"` it first picks each layer's ADC full
  scale by the error of its readings against the ideal products.

A convolution is its patches times the crossbar: the kernel `[*k, c_in / G,
F]` becomes G matrices `[c_in / G * prod(k), F / G]` (rows in the order of
`lax.conv_general_dilated_patches`: channel, then kernel position), each
programmed on its own tiles. When the read is linear (`ChipSpec.linear`: full
precision converters, no read noise) a layer's chip folds into one
effective weight matrix and the layer runs as a native matmul or
convolution of the clipped input with it, bit-for-bit the chip's read up to
float rounding; otherwise the patches go through `crossbar.crossbar_matmul`.

Gradients: w.r.t. the weights, the ideal ones (`x.T @ dy`); w.r.t. the
inputs, `spec.backward` ("straight_through": floating point, RxNN
re-training; "transposed_read": through the chip, TxSim). `apply(backward=
"circuit")` instead differentiates through the exact `G_eff` of the current
weights and the mapping, converters straight-through (`circuit_grad`).

It does not own the read (`rxjax.crossbar`) or what to do with the layers
(`rxjax.experiment`).

Modules: `modes` (`mode_spec`, the collection's names), `conv` (kernels as
matrices, convolution geometry and patches), `stages` (the stages a layer's
chips go through), `layers` (the layer computations and modules) and
`network` (`on_crossbars`, `program`, `apply`).
"""

from rxjax.nn.conv import kernel_to_matrix, matrix_to_kernel
from rxjax.nn.layers import (CrossbarConv, CrossbarDense, conv_on_chip,
                             dense_on_chip)
from rxjax.nn.modes import COLLECTION, MODES, RNG, ChipSpec, mode_spec
from rxjax.nn.network import apply, on_crossbars, program
from rxjax.nn.stages import STAGES

__all__ = ["COLLECTION", "CrossbarConv", "CrossbarDense", "MODES", "RNG",
           "STAGES", "apply", "conv_on_chip", "dense_on_chip",
           "kernel_to_matrix", "matrix_to_kernel", "mode_spec",
           "on_crossbars", "program"]
