"""rxjax: deep neural networks on non-ideal resistive crossbars, in JAX."""

from rxjax.circuit import (NodeVoltages, Wires, effective_conductance, node_voltages,
                           series_model)
from rxjax.crossbar import (Chip, Spec, calibrate, crossbar_matmul, matmul, program,
                            program_layers, read)
from rxjax.device import DeviceSpec
from rxjax.mapping import MappingSpec
from rxjax.periphery import ADCSpec, DACSpec

__all__ = [
    "ADCSpec", "Chip", "DACSpec", "DeviceSpec", "MappingSpec", "NodeVoltages",
    "Spec", "Wires", "calibrate", "crossbar_matmul", "effective_conductance",
    "matmul", "node_voltages", "program", "program_layers", "read",
    "series_model",
]
__version__ = "0.1.0"
