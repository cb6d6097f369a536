"""rxjax: deep neural networks on non-ideal resistive crossbars, in JAX."""

import os as _os


def _limit_blas_threads():
  """Runs the BLAS/LAPACK libraries that JAX's CPU `jnp.linalg` calls on one thread.

  The circuit solve no longer calls LAPACK (see `circuit._mmatrix_inv`); the
  limit stays for `jnp.linalg` elsewhere (references, user code), whose
  OpenBLAS worker threads compete with XLA's own pool on a small CPU. When
  the solve still used LAPACK it measured, on a 2-core CPU, 4.9 ms per
  64 x 64 float32 `G_eff` tile with one BLAS thread against 7-10 ms with the
  default. Set RXJAX_BLAS_THREADS to another count to override, or to
  "default" to leave the libraries alone.
  """
  setting = _os.environ.get("RXJAX_BLAS_THREADS", "1")
  if setting == "default":
    return
  import scipy.linalg  # noqa: F401  (loads the LAPACK that jaxlib calls)
  import threadpoolctl
  threadpoolctl.threadpool_limits(int(setting), user_api="blas")


_limit_blas_threads()

from rxjax import nn
from rxjax.circuit import (NodeVoltages, Wires, aam_conductance, effective_conductance,
                           node_voltages, series_model)
from rxjax.crossbar import (Chip, Spec, calibrate, crossbar_matmul, fold, matmul, program,
                            program_layers, read, reprogram)
from rxjax.device import DeviceSpec, UpdateSpec
from rxjax.optim import DeviceUpdateState, apply_device_response
from rxjax.mapping import MappingSpec
from rxjax.periphery import ADCSpec, DACSpec

__all__ = [
    "ADCSpec", "Chip", "DACSpec", "DeviceSpec", "DeviceUpdateState",
    "MappingSpec", "NodeVoltages", "Spec", "UpdateSpec", "Wires",
    "aam_conductance", "apply_device_response", "calibrate", "crossbar_matmul",
    "effective_conductance", "fold", "matmul", "nn", "node_voltages", "program",
    "program_layers", "read", "reprogram", "series_model",
]
__version__ = "0.1.0"
