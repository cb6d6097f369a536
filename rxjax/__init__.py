"""rxjax: deep neural networks on non-ideal resistive crossbars, in JAX.

Importing rxjax changes nothing process-wide; `rxjax.tune_host()` applies
the host settings that `train.py` and `eval.py` use (see `rxjax.host`).
"""

from rxjax import energy
from rxjax import nn
from rxjax.circuit import (NodeVoltages, Wires, aam_conductance, effective_conductance,
                           node_voltages, series_model)
from rxjax.crossbar import (Chip, ChipSpec, calibrate, crossbar_matmul, fold, matmul, program,
                            read, reprogram)
from rxjax.device import DeviceSpec, UpdateSpec
from rxjax.host import tune_host
from rxjax.optim import DeviceUpdateState, apply_device_response
from rxjax.mapping import MappingSpec
from rxjax.periphery import ADCSpec, DACSpec

__all__ = [
    "ADCSpec", "Chip", "ChipSpec", "DACSpec", "DeviceSpec",
    "DeviceUpdateState", "MappingSpec", "NodeVoltages", "UpdateSpec", "Wires",
    "aam_conductance", "apply_device_response", "calibrate", "crossbar_matmul",
    "effective_conductance", "energy", "fold", "matmul", "nn", "node_voltages",
    "program", "read", "reprogram", "series_model",
    "tune_host",
]
__version__ = "0.1.0"
