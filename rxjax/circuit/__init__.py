"""Exact circuit model of a resistive crossbar tile (RxNN section V, the FCM).

This package owns the linear network of DESIGN.md section 2: devices `g[i, j]`
between row nodes `a[i, j]` and column nodes `b[i, j]`, row wire segments
`r_row`, column wire segments `r_col`, a source resistance `r_source` in front
of every driven line and a sense resistance `r_sense` in front of every virtual
ground. It computes

* `effective_conductance`: the matrix `G_eff` with `i_out = v @ G_eff`
  (forward read) or `i_rows = G_eff_bwd @ v_cols` (backward read), exactly;
* `node_voltages`: every node voltage and the output currents for given
  inputs (IR-drop maps, cross-checks);
* `series_model` and `aam_conductance`: cheap approximations of `G_eff`, the
  MNSIM-style per-cell series model (a baseline) and TxSim's approximate
  analytical model (AAM, section IV-D; O(M N) scans, accurate only when the
  devices are far more resistive than the wires).

It does not own device physics (variation, updates: `device.py`), converters
(`rxjax.periphery`) or the mapping of weights to conductances (`mapping.py`).

RxNN section V-B derives the same exact `G_eff` from Kirchhoff's laws and row
reduction of the column systems. The algorithm here uses the structure of the
nodal matrix: it eliminates every row chain in closed form (a tridiagonal
chain's inverse from positive prefix and suffix shunts), then sweeps once over the rows carrying the Norton equivalent of
the part of the array above the present row as seen from the N column wires:
an admittance matrix in Laplacian form (shunts `s >= 0`, couplings `w >= 0`)
and the current `j` that each unit input volt injects. Two operations
alternate:

* parallel: add row i (its admittance seen from its column nodes, again in
  Laplacian form, and its injected currents);
* series: move the ports down through one column wire segment `r`:
  `Y' = (I + r Y)^-1 Y`, `j' = j (I + r Y)^-1`.

Everything is written in resistance form, so `r = 0` is an ordinary value and
no step subtracts two wire-sized numbers: `I + r Y` is an M-matrix whose
diagonal is rebuilt from positive terms, its inverse `P` is entrywise
non-negative, and the new couplings are `offdiag(P) / r`. This keeps float32
within ~1e-5 of float64 where a conductance-form sweep loses three digits.
Cost per tile: `M` inverses of `N x N` plus the `M x N` right-hand side,
about `2.3 M N^3 + 2 M^2 N^2` flops; the shorter dimension is used as block
size through reciprocity.

Modules: `wires` (`Wires`, argument checks, orientation), `linalg`
(M-matrix inverses), `sweep` (row chains and the sweep over rows), `nested`
(nested dissection), `geff` (`effective_conductance`), `nodes`
(`node_voltages`), `baseline` (`series_model`) and `aam`
(`aam_conductance`).
"""

from rxjax.circuit.aam import AAM_GROUP_ELEMENTS, aam_conductance
from rxjax.circuit.baseline import series_model
from rxjax.circuit.geff import effective_conductance
from rxjax.circuit.linalg import solve_mmatrix
from rxjax.circuit.nodes import NodeVoltages, node_voltages
from rxjax.circuit.wires import Direction, Wires

__all__ = ["AAM_GROUP_ELEMENTS", "Direction", "NodeVoltages", "Wires",
           "aam_conductance", "effective_conductance", "node_voltages",
           "series_model", "solve_mmatrix"]
