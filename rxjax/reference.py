"""Reference solves of a crossbar tile for validation (needs scipy).

A plain modified nodal analysis (MNA) of the network exactly as DESIGN.md
section 2 draws it, assembled element by element and factored with scipy's
sparse LU. It shares no code with `rxjax.circuit`: tests and benchmarks use it as
the independent reference (``pip install 'rxjax[test]'`` brings scipy).

Zero resistances become 0 V branches with their own current unknown, exactly
as ngspice treats them, so every limit of the conventions is covered.
"""

from __future__ import annotations

import numpy as np

from rxjax.circuit import Wires


def _require_scipy():
  try:
    import scipy.sparse  # noqa: F401
    import scipy.sparse.linalg  # noqa: F401
  except ImportError as e:  # pragma: no cover
    raise ImportError(
        "rxjax.reference needs scipy: pip install 'rxjax[test]'") from e


class _Mna:
  """Incremental MNA assembly: nodes, resistors, voltage branches."""

  def __init__(self):
    self.n_nodes = 0
    self.rows, self.cols, self.vals = [], [], []
    self.branches = []  # (plus_node, minus_node)

  def node(self):
    self.n_nodes += 1
    return self.n_nodes - 1  # ground is -1

  def resistor(self, p, q, r):
    if r == 0:
      return self.vsource(p, q)
    g = 1.0 / r
    for a, b, val in ((p, p, g), (q, q, g), (p, q, -g), (q, p, -g)):
      if a >= 0 and b >= 0:
        self.rows.append(a), self.cols.append(b), self.vals.append(val)
    return None

  def vsource(self, p, q):
    """A voltage branch p(+) - q(-); returns its index."""
    self.branches.append((p, q))
    return len(self.branches) - 1

  def matrix(self):
    import scipy.sparse as sp
    n = self.n_nodes
    rows, cols, vals = list(self.rows), list(self.cols), list(self.vals)
    for k, (p, q) in enumerate(self.branches):
      for node, sign in ((p, 1.0), (q, -1.0)):
        if node >= 0:
          rows += [node, n + k]
          cols += [n + k, node]
          vals += [sign, sign]
    size = n + len(self.branches)
    return sp.csc_matrix((vals, (rows, cols)), shape=(size, size))


def _network(g, wires, direction):
  """MNA of a read in `direction`, built from DESIGN.md section 2 directly.

  Returns (mna, a, b, input_branches, sense_branches): node indices of the
  row and column nodes, and the voltage branches of the drivers and of the
  0 V ammeters at the virtual grounds, in line order.
  """
  m, n = g.shape
  mna = _Mna()
  a = np.array([[mna.node() for _ in range(n)] for _ in range(m)])
  b = np.array([[mna.node() for _ in range(n)] for _ in range(m)])
  for i in range(m):
    for j in range(n - 1):
      mna.resistor(a[i, j], a[i, j + 1], float(wires.r_row))
  for j in range(n):
    for i in range(m - 1):
      mna.resistor(b[i, j], b[i + 1, j], float(wires.r_col))
  for i in range(m):
    for j in range(n):
      if g[i, j] > 0:
        mna.resistor(a[i, j], b[i, j], 1.0 / float(g[i, j]))
  if direction == "forward":
    driven, sensed = a[:, 0], b[m - 1, :]
    r_source, r_sense = wires.r_source, wires.r_sense
  else:
    driven, sensed = b[m - 1, :], a[:, 0]
    r_source = (wires.r_source if wires.r_source_backward is None
                else wires.r_source_backward)
    r_sense = (wires.r_sense if wires.r_sense_backward is None
               else wires.r_sense_backward)
  inputs, senses = [], []
  for node in driven:
    src = mna.node()
    inputs.append(mna.vsource(src, -1))
    mna.resistor(src, node, float(r_source))
  for node in sensed:
    gnd = mna.node()
    mna.resistor(node, gnd, float(r_sense))
    senses.append(mna.vsource(gnd, -1))  # 0 V ammeter
  return mna, a, b, inputs, senses


def _solve(g, v_cols, wires, direction):
  """MNA solve for input columns v_cols: [lines driven, K]."""
  import scipy.sparse.linalg as spla
  mna, a, b, inputs, senses = _network(g, wires, direction)
  mat = mna.matrix()
  rhs = np.zeros((mat.shape[0], v_cols.shape[1]))
  for line, k in enumerate(inputs):
    rhs[mna.n_nodes + k] = v_cols[line]
  x = spla.splu(mat).solve(rhs)
  # The branch current of a 0 V ammeter (+ at the sense node side, - at
  # ground) is the current flowing into the virtual ground.
  i_out = np.stack([x[mna.n_nodes + k] for k in senses])  # [lines, K]
  return x, a, b, i_out


def effective_conductance(g, wires: Wires, *, direction="forward"):
  """G_eff of one tile `g: [M, N]` (float64 numpy), by sparse LU.

  Forward: `i_out = v @ G`; backward: `i_rows = G @ v_cols` (same [M, N]
  orientation), one unit input per driven line.
  """
  _require_scipy()
  g = np.asarray(g, np.float64)
  m, n = g.shape
  k = m if direction == "forward" else n
  _, _, _, i_out = _solve(g, np.eye(k), wires, direction)
  return i_out.T if direction == "forward" else i_out


def node_voltages(g, v, wires: Wires, *, direction="forward"):
  """(v_row [M, N], v_col [M, N], i_out) for one input vector v."""
  _require_scipy()
  g = np.asarray(g, np.float64)
  v = np.asarray(v, np.float64)
  x, a, b, i_out = _solve(g, v[:, None], wires, direction)
  return x[a, 0], x[b, 0], i_out[:, 0]
