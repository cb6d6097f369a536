"""The three device regimes of the circuit issue, shared by the test files.

Each entry: (device resistance range in ohm, drawn uniformly; wires in ohm).
"""

from rxjax.circuit import Wires

REGIMES = {
    "reram": ((1e5, 1e6), Wires(r_row=1.0, r_col=4.6, r_source=100.0,
                                r_sense=100.0)),
    "pcm": ((5e3, 5e5), Wires(r_row=2.5, r_col=2.5, r_source=500.0,
                              r_sense=500.0)),
    "spintronic": ((1e3, 2.5e3), Wires(r_row=5.0, r_col=5.0, r_source=50.0,
                                       r_sense=50.0)),
}
