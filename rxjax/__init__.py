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


def _keep_freed_memory():
  """Tells glibc's malloc to keep freed memory for reuse instead of
  returning it to the OS.

  XLA's CPU runtime allocates its buffers afresh on every call. By default,
  glibc maps each buffer above a dynamic threshold (at most 32 MB) with its
  own `mmap` and gives it back on free. It also trims the heap top above
  128 kB. So every call faults in zeroed pages again.

  A TxSim training step of LeNet-5 at batch 128 has about 10 MB of
  convolution patches and their codes. On the 2-core CPU that step spent
  about 40% of its time in those page faults: 48-56 ms per step by default
  against 29-30 ms with this setting. The digital step stayed at 17.5 ms
  either way, and the circuit solve did not change.

  The setting: buffers below 64 MB come from the heap, and freed memory is
  kept. The price is that the process keeps its peak heap instead of
  shrinking after a large computation. It applies to glibc (Linux) only
  and does nothing elsewhere. Set RXJAX_MALLOC=default to leave malloc
  alone.
  """
  if _os.environ.get("RXJAX_MALLOC", "keep") == "default":
    return
  import ctypes
  import ctypes.util
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
  except (AttributeError, OSError, TypeError):
    return  # Not glibc.
  m_trim_threshold, m_mmap_threshold = -1, -3  # From glibc's <malloc.h>.
  mallopt(m_mmap_threshold, ctypes.c_int(64 << 20))
  mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1))


_limit_blas_threads()
_keep_freed_memory()

from rxjax import energy
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
    "effective_conductance", "energy", "fold", "matmul", "nn", "node_voltages", "program",
    "program_layers", "read", "reprogram", "series_model",
]
__version__ = "0.1.0"
