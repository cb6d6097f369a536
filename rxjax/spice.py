"""ngspice decks and runs of one crossbar tile, for validation.

This module owns the translation of one tile read (DESIGN.md section 2) into
an ngspice deck (`netlist`) and running it (`simulate`, `node_voltages`). It
exists to check `rxjax.circuit` against an independent, widely used circuit
simulator; nothing in training or inference calls it. It does not own the
network model itself (`rxjax.circuit`) or the scipy reference (`reference.py`).

The deck is drawn element by element, with readable node names: row nodes
`a_<i>_<j>`, column nodes `b_<i>_<j>`, driver nodes `src_<k>` and virtual
ground nodes `gnd_<k>`. Each driven line has a source `vin_<k>` from ground to
`src_<k>` and a resistor `rsource_<k>` into the line; each sensed line has a
resistor `rsense_<k>` into `gnd_<k>`, which reaches ground through a 0 V
source `vsense_<k>` used as an ammeter. A resistance of exactly 0 becomes a
0 V source `vshort_<tag>` (e.g. `vshort_row_3_7`): ngspice would silently
turn a 0 ohm resistor into 1 mohm. Devices with `g == 0` are left out (open).

Speed: one `.op` per input vector. ngspice spends its time ordering and
factoring the sparse matrix, so its cost grows steeply with the tile (RxNN
section VIII-A reports five orders of magnitude between HSPICE and FCM),
where `rxjax.circuit` solves all M inputs at once (docs/performance.md).
Use it for tiles of 32 x 32 or less and the scipy reference
(`rxjax.reference`) for larger ones. A linear deck converges in one Newton
step and results are printed with 15 significant digits (`numdgt=15`), so
ngspice agrees with an exact solve to about 1e-12 relative (tests/spice_test.py
asserts 1e-9 up to 32 x 32 in ReRAM, PCM and spintronic regimes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from rxjax.circuit import Wires

_DIRECTIONS = ("forward", "backward")
_INSTALL_HINT = (
    "ngspice is not installed: apt-get install -y ngspice (Debian/Ubuntu) or "
    "see ngspice.sourceforge.io")
_OUTPUT = "rxjax_op.txt"
_LINE = re.compile(r"^\s*(\S+)\s*=\s*(\S+)\s*$")


def _fmt(x: float) -> str:
  """A float as the shortest SPICE number that round-trips (repr)."""
  return repr(float(x))


def _check(g, v, wires, direction):
  """Validates the inputs; returns (g, v) as float64 numpy arrays."""
  if direction not in _DIRECTIONS:
    raise ValueError(
        f"`direction` must be one of {_DIRECTIONS}, got {direction!r}")
  if not isinstance(wires, Wires):
    raise TypeError(f"`wires` must be an rxjax.Wires, got {type(wires)}")
  g = np.asarray(g, dtype=np.float64)
  if g.ndim != 2:
    raise ValueError(
        f"`g` must be one tile of shape [M, N] (rank 2), got shape {g.shape}")
  m, n = g.shape
  if m < 1 or n < 1:
    raise ValueError(f"`g` must have M, N >= 1, got shape {g.shape}")
  if not np.all(np.isfinite(g)):
    raise ValueError("`g` must be finite (siemens), got non-finite entries")
  if np.any(g < 0):
    raise ValueError(
        f"`g` must be >= 0 siemens, got minimum {float(g.min())!r}")
  with np.errstate(divide="ignore", over="ignore"):
    r_dev = 1.0 / g[g > 0]
  if not np.all(np.isfinite(r_dev)):
    raise ValueError(
        "`g` entries must be 0 or have a finite resistance 1/g, got "
        f"{float(g[g > 0].min())!r}")
  v = np.asarray(v, dtype=np.float64)
  want = m if direction == "forward" else n
  if v.shape != (want,):
    raise ValueError(
        f"`v` must have shape [{want}] for a {direction} read of a {m}x{n} "
        f"tile, got shape {v.shape}")
  if not np.all(np.isfinite(v)):
    raise ValueError("`v` must be finite (volts), got non-finite entries")
  return g, v


def _two_terminal(tag: str, p: str, q: str, r: float) -> str:
  """A resistor `r<tag>` from p to q, or a 0 V source if r is exactly 0."""
  if r == 0:
    return f"vshort_{tag} {p} {q} dc 0"
  return f"r{tag} {p} {q} {_fmt(r)}"


def netlist(g, v, wires: Wires, *, direction: str = "forward") -> str:
  """The ngspice deck of one read of one tile (DESIGN.md section 2).

  Args:
    g: `[M, N]` device conductances in siemens (>= 0, finite; 0 is an open
      device). numpy or jax array; converted to float64.
    v: input voltages in volts: `[M]` on the rows (forward) or `[N]` on the
      columns (backward).
    wires: the tile's parasitic resistances. The backward read uses
      `r_source_backward` / `r_sense_backward` (`None` means the forward
      values), as `Wires.terminals("backward")`.
    direction: "forward" (rows driven at `a[i, 0]`, columns sensed at
      `b[M-1, j]`) or "backward" (columns driven at `b[M-1, j]`, rows sensed
      at `a[i, 0]`). Far ends are open.

  Returns:
    The deck as a string. Its `.control` block runs one `.op` and prints every
    node voltage and branch current (`print all`) with 15 digits to the file
    `rxjax_op.txt` in ngspice's working directory. The output currents are
    the branch currents `i(vsense_<k>)`, positive into the virtual ground.

  Raises:
    ValueError: bad direction, shapes or values (the message names the field).
  """
  g, v = _check(g, v, wires, direction)
  m, n = g.shape
  _, _, r_source, r_sense = wires.terminals(direction)
  r_row, r_col = float(wires.r_row), float(wires.r_col)
  r_source, r_sense = float(r_source), float(r_sense)
  if direction == "forward":
    driven = [f"a_{i}_0" for i in range(m)]
    sensed = [f"b_{m - 1}_{j}" for j in range(n)]
    drive_what, sense_what = "row k at a_k_0", f"column k at b_{m - 1}_k"
  else:
    driven = [f"b_{m - 1}_{j}" for j in range(n)]
    sensed = [f"a_{i}_0" for i in range(m)]
    drive_what, sense_what = f"column k at b_{m - 1}_k", "row k at a_k_0"

  lines = [
      f"rxjax {direction} read of a {m}x{n} crossbar tile",
      f"* r_row={_fmt(r_row)} r_col={_fmt(r_col)} ohm; terminals of this"
      f" read: r_source={_fmt(r_source)} r_sense={_fmt(r_sense)} ohm"
      " (DESIGN.md section 2)",
      f"* drivers: vin_k drives {drive_what} through rsource_k",
  ]
  for k, (node, vk) in enumerate(zip(driven, v)):
    lines.append(f"vin_{k} src_{k} 0 dc {_fmt(vk)}")
    lines.append(_two_terminal(f"source_{k}", f"src_{k}", node, r_source))
  lines.append("* row wires: a_i_j - a_i_j+1")
  for i in range(m):
    for j in range(n - 1):
      lines.append(_two_terminal(f"row_{i}_{j}", f"a_{i}_{j}",
                                 f"a_{i}_{j + 1}", r_row))
  lines.append("* column wires: b_i_j - b_i+1_j")
  for j in range(n):
    for i in range(m - 1):
      lines.append(_two_terminal(f"col_{i}_{j}", f"b_{i}_{j}",
                                 f"b_{i + 1}_{j}", r_col))
  lines.append("* devices: 1/g between a_i_j and b_i_j (g == 0: open)")
  for i in range(m):
    for j in range(n):
      if g[i, j] > 0:
        lines.append(f"rdev_{i}_{j} a_{i}_{j} b_{i}_{j} {_fmt(1.0 / g[i, j])}")
  lines.append(f"* sense: {sense_what} through rsense_k into gnd_k;"
               " vsense_k (0 V, + at gnd_k) is the ammeter")
  for k, node in enumerate(sensed):
    lines.append(_two_terminal(f"sense_{k}", node, f"gnd_{k}", r_sense))
    # ngspice's i(V) is the current entering the + node and flowing through
    # the source to the - node, so with + at gnd_k it is the current into the
    # virtual ground.
    lines.append(f"vsense_{k} gnd_{k} 0 dc 0")
  lines += [
      ".op",
      ".control",
      "set numdgt=15",
      "run",
      f"print all > {_OUTPUT}",
      "quit",
      ".endc",
      ".end",
      "",
  ]
  return "\n".join(lines)


def _tail(text: str, lines: int = 20) -> str:
  return "\n".join(text.strip().splitlines()[-lines:])


def _run(deck: str, timeout: float) -> tuple[dict, str]:
  """Runs a deck from `netlist` in ngspice.

  Returns:
    ({vector name: value}, the tails of ngspice's stderr and stdout for error
    messages).
  """
  exe = shutil.which("ngspice")
  if exe is None:
    raise RuntimeError(_INSTALL_HINT)
  with tempfile.TemporaryDirectory(prefix="rxjax_spice_") as tmp:
    path = os.path.join(tmp, "tile.cir")
    with open(path, "w") as f:
      f.write(deck)
    try:
      # -b: batch mode; -n: ignore any .spiceinit, so that results do not
      # depend on local settings.
      proc = subprocess.run([exe, "-b", "-n", path], cwd=tmp,
                            capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
      raise RuntimeError(
          f"ngspice did not finish within {timeout} s; use rxjax.reference "
          "for large tiles") from None
    log = (f"stderr tail:\n{_tail(proc.stderr)}\n"
           f"stdout tail:\n{_tail(proc.stdout)}")
    out_path = os.path.join(tmp, _OUTPUT)
    if proc.returncode != 0 or not os.path.exists(out_path):
      raise RuntimeError(
          f"ngspice failed (exit code {proc.returncode}).\n{log}")
    with open(out_path) as f:
      text = f.read()
  values = {}
  for line in text.splitlines():
    match = _LINE.match(line)
    if match:
      values[match.group(1).lower()] = float(match.group(2))
  return values, log


def _get(values: dict, name: str, log: str) -> float:
  try:
    return values[name]
  except KeyError:
    raise RuntimeError(
        f"ngspice printed no value for {name!r}.\n{log}") from None


def _solve(g, v, wires, direction, timeout):
  """Validates, runs ngspice; returns (shape, values, log, i_out)."""
  g, v = _check(g, v, wires, direction)
  values, log = _run(netlist(g, v, wires, direction=direction), timeout)
  m, n = g.shape
  k = n if direction == "forward" else m
  i_out = np.array(
      [_get(values, f"vsense_{q}#branch", log) for q in range(k)])
  return g.shape, values, log, i_out


def simulate(g, v, wires: Wires, *, direction: str = "forward",
             timeout: float = 600.0) -> np.ndarray:
  """Output currents of one read of one tile, computed by ngspice.

  Args:
    g: `[M, N]` device conductances in siemens (>= 0).
    v: input voltages in volts: `[M]` (forward) or `[N]` (backward).
    wires: the tile's parasitic resistances.
    direction: "forward" or "backward" (DESIGN.md section 2).
    timeout: seconds to wait for ngspice.

  Returns:
    float64 numpy array of the currents (amperes) into the virtual grounds,
    positive into the ground: `[N]` columns (forward) or `[M]` rows
    (backward). Compare with `v @ effective_conductance(g, wires)` or
    `effective_conductance(g, wires, direction="backward") @ v`.

  Raises:
    ValueError: bad inputs (see `netlist`).
    RuntimeError: ngspice is missing, failed, or timed out.
  """
  return _solve(g, v, wires, direction, timeout)[3]


def node_voltages(g, v, wires: Wires, *, direction: str = "forward",
                  timeout: float = 600.0):
  """Every row and column node voltage of one read, computed by ngspice.

  Args:
    g: `[M, N]` device conductances in siemens (>= 0).
    v: input voltages in volts: `[M]` (forward) or `[N]` (backward).
    wires: the tile's parasitic resistances.
    direction: "forward" or "backward" (DESIGN.md section 2).
    timeout: seconds to wait for ngspice.

  Returns:
    `(v_row, v_col, i_out)`: `[M, N]` voltages of the nodes `a[i, j]` and
    `b[i, j]` (volts) and the output currents as returned by `simulate`,
    all float64 numpy arrays (the fields of `rxjax.circuit.NodeVoltages`).

  Raises:
    ValueError: bad inputs (see `netlist`).
    RuntimeError: ngspice is missing, failed, or timed out.
  """
  (m, n), values, log, i_out = _solve(g, v, wires, direction, timeout)
  v_row = np.array([[_get(values, f"a_{i}_{j}", log) for j in range(n)]
                    for i in range(m)])
  v_col = np.array([[_get(values, f"b_{i}_{j}", log) for j in range(n)]
                    for i in range(m)])
  return v_row, v_col, i_out
