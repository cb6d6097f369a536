"""rxjax: deep neural networks on non-ideal resistive crossbars, in JAX."""

from rxjax.circuit import NodeVoltages, Wires, effective_conductance, node_voltages

__all__ = ["NodeVoltages", "Wires", "effective_conductance", "node_voltages"]
__version__ = "0.1.0"
