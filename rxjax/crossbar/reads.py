"""The read: DAC -> `v @ G_eff` per tile -> ADC, shift-and-add, pair
subtraction and the digital sums (`read`, forward and transposed), and
`fold` (a linear read's effective weight matrix)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from rxjax import device as device_lib
from rxjax import mapping as mapping_lib
from rxjax import periphery
from rxjax.crossbar.chip import Chip, check_solved, nominal_load
from rxjax.crossbar.spec import ChipSpec

def fold(chip: Chip, spec: ChipSpec, direction: str = "forward") -> jax.Array:
  """The layer's effective weight matrix when the read is linear.

  For a `spec.linear` chip, `read(x) == clip(x, -x_scale, x_scale) @ W_eff`
  (`[0, x_scale]` for non-negative inputs) to float rounding. `W_eff`
  combines, per tile, the slices' `G_eff` with their shift-and-add weights,
  the pair subtraction (or the reference column and the digital offset of
  the offset scheme) and the ADC gain errors, in weight units: the read's
  own arithmetic with the input taken out (tests compare the two). Cost:
  one pass over the conductances.

  Args:
    chip: a programmed layer.
    spec: its spec; must be `linear`.
    direction: "forward" (`[fan_in, fan_out]`) or "backward" (`[fan_out,
      fan_in]`, the transposed read).

  Returns:
    `W_eff` in weight units.
  """
  if not spec.linear:
    raise ValueError(
        "`fold` needs a linear read (spec.linear): full-precision inputs "
        "(dac.input_bits=None), dac.model='ideal', adc.bits=None, no ADC "
        "offset or non-linearity, no read noise")
  if direction not in ("forward", "backward"):
    raise ValueError(
        f"`direction` must be 'forward' or 'backward', got {direction!r}")
  return _fold(chip, spec, direction)


@functools.partial(jax.jit, static_argnames=("spec", "direction"))
def _fold(chip: Chip, spec: ChipSpec, direction: str) -> jax.Array:
  s, p, tr, tc, m, n = chip.g.shape
  d = spec.device
  sw = jnp.asarray(mapping_lib.slice_weights(spec.mapping, spec.device),
                   chip.g.dtype)
  forward = direction == "forward"
  g = chip.g_eff if forward else chip.g_eff_bwd
  if g is None:
    raise ValueError("this chip was programmed without backward G_eff: "
                     "program it with spec.backward='transposed_read'")
  if forward and not (spec.adc.offset_sigma == 0 and spec.adc.gain_sigma == 0):
    g = g * (1 + pair_adc_params(chip.adc_gain, spec)[..., None, :])
  w = jnp.einsum("sptumn,s->ptumn", g, sw) / (d.g_max - d.g_min)
  if spec.mapping.signed == "differential":
    w = w[0] - w[1]
  elif forward:  # Data columns minus the reference column, offset removed.
    w = 2 * (w[0, ..., :-1] - w[0, ..., -1:]) - 1
  else:  # Reference column not driven; the g_min baseline removed.
    w = 2 * (w[0, ..., :-1] - d.g_min * sw.sum() / (d.g_max - d.g_min)) - 1
  w = jnp.moveaxis(w, 2, 1)  # [Tr, M, Tc, N']
  w = w.reshape(tr * m, -1)[:chip.fan_in, :chip.fan_out] * chip.w_scale
  return w if forward else w.T


# ---------------------------------------------------------------------------
# The read.


# The backward read's error signals are signed: always two input passes.
_SIGNED = periphery.SignedInputs()


def _pad_to(x, size, axis=-1):
  pad = size - x.shape[axis]
  if pad == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths)


def input_levels(x, chip: Chip, spec: ChipSpec):
  """Quantized DAC input levels of a batch, tiled (`periphery.stream_levels`;
  a read takes each cycle's digits from them as it goes).

  Args:
    x: `[B, fan_in]` inputs.

  Returns:
    `[Q, B, Tr, M]`: input passes, batch, fan-in tiles, rows.
  """
  _, _, tr, _, m, _ = chip.g.shape
  q = periphery.stream_levels(
      spec.periphery.inputs.passes(x / chip.x_scale), spec.dac)
  q = _pad_to(q, tr * m)
  return q.reshape(q.shape[:-1] + (tr, m))


def scan_tile_rows(q, chip: Chip, spec: ChipSpec, reduce, init, g_eff=None,
                   *, last_rows: int | None = None,
                   columns: int | None = None, cycles_at_once: bool = False):
  """Column currents of one fan-in tile row and input cycle at a time.

  The DAC (this cycle's digits of the input levels), the per-tile products
  `v @ G_eff` and whatever `reduce` does with the currents (ADC and digital
  accumulation, or calibration statistics) run inside one scan step, so the
  `[Q, B, S, P, Tc, N]` currents of a step stay cache-sized and neither they
  nor the cycles' inputs are ever stored for the whole layer.

  Args:
    q: `[Q, B, Tr, M]` input levels (`input_levels`).
    chip: the programmed layer.
    spec: its spec.
    reduce: `(acc, i, r, c) -> acc` with `i` the currents `[Q, B, S, P, Tc,
      N]` (amperes) of tile row `r` in input cycle `c` (`[Q, B, S, P,
      columns]` with `columns`).
    init: initial accumulator.
    g_eff: overrides `chip.g_eff` (read noise, `one_product_per_pair`).
    last_rows: drive only the first `last_rows` rows of the last tile row
      (the rest carry no input: zero-padded past the fan-in), or None: all.
      Only for a drive whose row voltages do not couple the rows.
    columns: compute only the first `columns` of the `Tc N` columns of a
      tile row (the tile columns side by side), or None: all. Only for a
      drive whose row voltages do not depend on the columns' loads.
    cycles_at_once: compute the currents of all input cycles of a tile row
      in one product (`[C, Q, B, ...]`, then reduced cycle by cycle in
      order) instead of one cycle at a time; for a batch small enough that
      they stay cache-sized.
  """
  g_eff = chip.g_eff if g_eff is None else g_eff
  dac = spec.dac
  drive = spec.periphery.drive
  load = nominal_load(spec)
  c_total, tr = periphery.n_cycles(dac), q.shape[2]
  g_rows = jnp.transpose(g_eff, (2, 4, 0, 1, 3, 5))  # [Tr, M, S, P, Tc, N]
  if columns is not None:  # [Tr, M, S, P, columns]
    g_rows = g_rows.reshape(g_rows.shape[:4] + (-1,))[..., :columns]

  def step(acc, u_rc, g_r, r, c):
    y_r = None if chip.y_port is None else jnp.moveaxis(chip.y_port, 2, 0)[r]
    i = drive.currents(u_rc, g_r, driven_first=True, nominal_load=load,
                       y_port=y_r)
    return reduce(acc, i, r, c)

  def tile_row(acc, xs):
    q_r, g_r, r = xs  # [Q, B, M], [M, S, P, Tc, N]
    if c_total == 1:
      return step(acc, periphery.stream_cycle(q_r, 0, dac), g_r, r, 0), None
    if cycles_at_once:  # One product for every cycle, reduced in order.
      u = jnp.stack([periphery.stream_cycle(q_r, c, dac)
                     for c in range(c_total)])
      y_r = None if chip.y_port is None else jnp.moveaxis(chip.y_port, 2,
                                                          0)[r]
      i = drive.currents(u, g_r, driven_first=True, nominal_load=load,
                         y_port=y_r)
      for c in range(c_total):
        acc = reduce(acc, i[c], r, c)
      return acc, None
    cycle = lambda acc, c: (step(acc, periphery.stream_cycle(q_r, c, dac),
                                 g_r, r, c), None)
    acc, _ = jax.lax.scan(cycle, acc, jnp.arange(c_total))
    return acc, None

  q = jnp.moveaxis(q, 2, 0)  # [Tr, Q, B, M]
  full = tr if last_rows is None or last_rows == q.shape[-1] else tr - 1
  acc = init
  if full:
    acc, _ = jax.lax.scan(tile_row, acc,
                          (q[:full], g_rows[:full], jnp.arange(full)))
  if full < tr:  # The last tile row, its undriven rows left out.
    acc, _ = tile_row(acc, (q[-1, ..., :last_rows], g_rows[-1, :last_rows],
                            jnp.asarray(tr - 1)))
  return acc


def pair_adc_params(a, spec: ChipSpec):
  """Per-column ADC parameters `[S, P, ...]` of the ADCs that exist: with
  analog pair subtraction one per pair, polarity 0's draw (`[S, 1, ...]`)."""
  return spec.periphery.pairs.adc_params(a)


def one_product_per_pair(g_eff, spec: ChipSpec):
  """`G+_eff - G-_eff` `[S, 1, ...]` when the read may subtract conductances
  (analog pairs, a load-independent DAC), else `g_eff`."""
  per = spec.periphery
  return per.pairs.pair_conductances(g_eff, per.drive)


def _adc_columns(chip: Chip, spec: ChipSpec):
  """Per-column ADC offset and gain `[Tr, S, P, Tc, N]`, or None when off.

  With analog pair subtraction P is 1: one ADC per pair."""
  if spec.adc.offset_sigma == 0 and spec.adc.gain_sigma == 0:
    return None, None
  return (jnp.moveaxis(pair_adc_params(chip.adc_offset, spec), 2, 0),
          jnp.moveaxis(pair_adc_params(chip.adc_gain, spec), 2, 0))


def trim(chip: Chip, spec: ChipSpec) -> Chip:
  """Drops tile rows and columns a forward read never uses, exactly.

  A layer narrower than one tile leaves rows driven at 0 V (they add no
  current) and columns whose currents are discarded. With one tile row the
  unused rows are dropped unless the exact DAC couples the rows
  ("divider_exact"); with one tile column of differential pairs the unused
  columns are dropped when the DAC voltage does not depend on the row load
  ("ideal"). LeNet-5's first convolution, a 25 x 6 matrix on a 64 x 64
  tile, then reads 6 of 64 columns through 25 of 64 rows.
  """
  s, p, tr, tc, m, n = chip.g.shape
  drive = spec.periphery.drive
  rows = chip.fan_in if (tr == 1 and not drive.uses_port_admittance) else m
  cols = n
  if tc == 1 and spec.mapping.signed == "differential" and (
      not drive.load_dependent):
    cols = chip.fan_out
  if (rows, cols) == (m, n):
    return chip
  return chip.replace(
      g=chip.g[..., :rows, :cols], g_eff=chip.g_eff[..., :rows, :cols],
      g_eff_bwd=None, adc_offset=chip.adc_offset[..., :cols],
      adc_gain=chip.adc_gain[..., :cols])


# Currents per scan step (elements) above which a digital-pair read runs the
# two polarities as separate scans (`_read_forward`); below it the joint read
# is faster.
SPLIT_CURRENTS = 2**20


def _read_forward(x, chip: Chip, spec: ChipSpec, key):
  chip = trim(chip, spec)
  g_eff = chip.g_eff
  if spec.device.read_noise > 0:
    g_eff = device_lib.read(g_eff, spec.device, key=key)
  g_eff = one_product_per_pair(g_eff, spec)
  levels = input_levels(x, chip, spec)
  q, b = levels.shape[:2]
  s, p, tr, tc, m, n = chip.g.shape
  dtype = chip.g.dtype
  cw = jnp.asarray(periphery.cycle_weights(spec.dac), dtype)
  sw = [float(k) for k in mapping_lib.slice_weights(spec.mapping,
                                                    spec.device)]
  offsets, gains = _adc_columns(chip, spec)
  differential = spec.mapping.signed == "differential"
  per = spec.periphery
  adc = per.pairs.adc
  # What `trim` does for one tile row or column, for the last of several:
  # the rows of the last tile row past the fan-in are driven at 0 V and add
  # no current (unless the exact DAC couples the rows), and the columns of
  # the last tile column past the fan-out are read for nothing (their
  # currents are discarded, each column has its own ADC, and a
  # load-independent DAC does not see them). LeNet-5's second convolution
  # (150 x 16 on three 64 x 64 tile rows) then reads 150 rows, not 192.
  last_rows = None
  if tr > 1 and not per.drive.uses_port_admittance:
    last_rows = chip.fan_in - (tr - 1) * m
  columns = None
  if (tc > 1 and differential and not per.drive.load_dependent
      and chip.fan_out < tc * n):
    columns = chip.fan_out
    flat = lambda a: None if a is None else a.reshape(
        a.shape[:3] + (-1,))[..., :columns]
    offsets, gains = flat(offsets), flat(gains)  # [Tr, S, P, columns]
  cols = (tc, n) if columns is None else (columns,)

  def reducer(offsets, gains, sign):
    def reduce(acc, i, r, c):
      offset = None if offsets is None else offsets[r]
      gain = None if gains is None else gains[r]
      i = adc(per.pairs.subtract(i, axis=3), chip.adc_full_scale,
              spec.adc, offset=offset, gain=gain)
      # Shift-and-add over input cycles and weight slices (RxNN V-A), then
      # the digital sum over fan-in tiles (the scan). Written as a sum of
      # static slices, not an einsum or a reduction over the slice axis
      # (which XLA's CPU backend runs far slower), so that it fuses with
      # the ADC into one pass over the currents.
      i = sum(i[:, :, k] * sw[k] for k in range(len(sw))) * cw[c]
      if differential:  # Pair subtraction, digital, unless done before.
        if i.shape[2] == 1:  # Analog pairs, or one polarity (below).
          return acc + sign * i[:, :, 0]
        return acc + (i[:, :, 0] - i[:, :, 1])
      return acc + i
    return reduce

  init = jnp.zeros((q, b) + cols if differential else (q, b, p) + cols,
                   dtype)
  trimmed = dict(last_rows=last_rows, columns=columns)
  # Only pairs digitized crossbar by crossbar can be read one polarity at a
  # time (and only by a drive that needs no per-chip port admittance).
  split = (differential and per.pairs.separate_adcs
           and not per.drive.uses_port_admittance
           and q * b * s * p * math.prod(cols) > SPLIT_CURRENTS)
  c_total = periphery.n_cycles(spec.dac)
  if c_total > 1 and c_total * q * b * s * p * math.prod(cols) <= (
      SPLIT_CURRENTS):
    # Few enough currents (a dense layer's batch): every cycle of a tile
    # row in one product, one scan step per tile row.
    acc = scan_tile_rows(levels, chip, spec, reducer(offsets, gains, 1.0),
                          init, g_eff=g_eff, cycles_at_once=True, **trimmed)
  elif split:
    # The two crossbars of a pair are digitized separately, so they can be
    # read one after the other: each scan step's currents are then half
    # as large and stay in cache between the product and the ADC.
    # Splitting the slices as well gains nothing.
    acc = init
    for pol, sign in ((0, 1.0), (1, -1.0)):
      take = lambda a: None if a is None else a[:, :, pol:pol + 1]
      acc = scan_tile_rows(levels, chip, spec,
                            reducer(take(offsets), take(gains), sign), acc,
                            g_eff=g_eff[:, pol:pol + 1], **trimmed)
  else:
    acc = scan_tile_rows(levels, chip, spec,
                          reducer(offsets, gains, 1.0), init, g_eff=g_eff,
                          **trimmed)
  d = spec.device
  acc = acc / (spec.dac.v_read * (d.g_max - d.g_min))
  if differential:
    y = acc
  else:
    # Data columns minus the tile's reference column (the last); the
    # represented weight is w_max * (2 u_hat - 1), so the offset is removed
    # with the digital sum of the applied (quantized) inputs.
    x_sum = sum(periphery.stream_cycle(levels, k, spec.dac) * cw[k]
                for k in range(len(cw))).sum((2, 3))
    y = 2 * (acc[:, :, 0, :, :-1] - acc[:, :, 0, :, -1:])
    y = y - x_sum[:, :, None, None]
  y = y.reshape(y.shape[:2] + (-1,))
  y = per.inputs.combine(y)
  return y * chip.x_scale * chip.w_scale


def _read_backward(dy, chip: Chip, spec: ChipSpec, key):
  """Transposed read: column drivers, row sense amplifiers (TxSim IV).

  The row ADCs' full scale is calibrated on this error batch (TxSim IV-B):
  the statistic of the currents of the rows that carry the layer's fan-in
  (padding rows of a partly filled tile are not digitized). Unused tile
  columns (driven at 0 V) and, with one tile row, unused rows are left out
  of the computation exactly.
  """
  if chip.g_eff_bwd is None:
    raise ValueError("this chip was programmed without backward G_eff: "
                     "program it with spec.backward='transposed_read'")
  g_bwd = chip.g_eff_bwd
  if spec.device.read_noise > 0:
    g_bwd = device_lib.read(g_bwd, spec.device, key=key)
  g_bwd = one_product_per_pair(g_bwd, spec)
  s, p, tr, tc, m, n = g_bwd.shape
  offset_scheme = spec.mapping.signed == "offset"
  per = spec.periphery
  if not per.drive.load_dependent:
    # Exact trimming: unused columns are driven at 0 V and add no current;
    # with one tile row, the rows past the fan-in are not read.
    if tr == 1:
      m = chip.fan_in
    if tc == 1 and not offset_scheme:
      n = chip.fan_out
    g_bwd = g_bwd[..., :m, :n]
  n_data = n - 1 if offset_scheme else n
  # Errors are signed and their range is not known in advance: scale by the
  # batch's largest magnitude (a digital normalization) and use two passes.
  dy_scale = periphery.calibrate(jnp.abs(dy), "max")
  d01 = dy / dy_scale
  u = periphery.stream(_SIGNED.passes(d01), spec.dac)  # [C, Q, B, F]
  u = _pad_to(u, tc * n_data).reshape(u.shape[:-1] + (tc, n_data))
  if offset_scheme:  # The reference column is not driven.
    u = _pad_to(u, n)
  c, q, b = u.shape[:3]
  m_read = min(tr * m, chip.fan_in)
  # One tile column at a time through the tile kernel of the forward read.
  if per.drive.load_dependent:  # Each tile whole: its columns' loads.
    g_cols = jnp.moveaxis(g_bwd, 3, 0)  # [Tc, S, P, Tr, M, N]
  else:
    # [Tc, S P m_read, N]: the padding rows of the last tile row are not
    # read at all.
    g_cols = jnp.moveaxis(g_bwd, 3, 0).reshape(tc, s * p, tr * m, n)
    g_cols = g_cols[:, :, :m_read].reshape(tc, s * p * m_read, n)
  load = nominal_load(spec)
  currents = [per.drive.currents(u[:, :, :, t], g_cols[t], driven_first=False,
                                 nominal_load=load)
              .reshape(c, q, b, s, p, -1)[..., :m_read] for t in range(tc)]
  currents = [per.pairs.subtract(i, axis=4) for i in currents]
  # Row ADCs: full scale from this error batch (dynamic range, TxSim IV-B),
  # over the rows read.
  currents_seen = [per.pairs.magnitude(i) for i in currents]
  if spec.adc.calibration == "max":
    full_scale = periphery.calibrate(functools.reduce(
        jnp.maximum, [i.max() for i in currents_seen]), "max")
  else:
    full_scale = periphery.full_scale(jnp.stack(currents_seen), spec.adc)
  i = sum(per.pairs.adc(i, full_scale, spec.adc) for i in currents)
  # Digital sums over column tiles (above), input cycles and weight slices,
  # as sums of static slices: [Q, B, P, m_read].
  cw = [float(k) for k in periphery.cycle_weights(spec.dac)]
  sw = [float(k) for k in mapping_lib.slice_weights(spec.mapping,
                                                    spec.device)]
  acc = sum(i[k, :, :, j] * (cw[k] * sw[j]) for k in range(c)
            for j in range(s))
  d = spec.device
  unit = spec.dac.v_read * (d.g_max - d.g_min)
  if offset_scheme:
    # Baseline of the g_min cells, removed digitally; weight offset as in
    # the forward read.
    u_sum = jnp.einsum("cqbtn,c->qb", u, jnp.asarray(cw, u.dtype))
    base = d.g_min * spec.dac.v_read * sum(sw) * u_sum
    acc = acc[:, :, 0] - base[:, :, None]
    y = 2 * acc / unit - u_sum[:, :, None]
  else:  # The pairs' subtraction, analog (before the ADCs) or digital.
    y = per.pairs.combine(acc) / unit
  y = _SIGNED.combine(y)
  return y * dy_scale * chip.w_scale


def read(x, chip: Chip, spec: ChipSpec, *, key=None,
         direction: str = "forward") -> jax.Array:
  """The non-ideal crossbar VMM.

  Args:
    x: forward: `[..., fan_in]` inputs (input units); backward: `[...,
      fan_out]` error signal.
    chip: a programmed (and usually calibrated) layer.
    spec: the spec the chip was programmed with.
    key: PRNG key for read noise (needed only if `spec.device.read_noise`).
    direction: "forward" (`~ x @ w`) or "backward" (`~ x @ w.T`).

  Returns:
    `[..., fan_out]` (forward) or `[..., fan_in]` (backward) in the units of
    `x @ w`.
  """
  if direction not in ("forward", "backward"):
    raise ValueError(
        f"`direction` must be 'forward' or 'backward', got {direction!r}")
  if spec.device.read_noise > 0 and key is None:
    raise ValueError("spec.device.read_noise > 0 needs a `key` per read")
  check_solved(chip)
  x = jnp.asarray(x)
  fan_in, fan_out = chip.fan_in, chip.fan_out
  want, give = (fan_in, fan_out) if direction == "forward" else (fan_out,
                                                                 fan_in)
  if x.ndim < 1 or x.shape[-1] != want:
    raise ValueError(
        f"`x` must have shape [..., {want}] for a {direction} read of a "
        f"{fan_in}x{fan_out} layer, got {x.shape}")
  batch = x.shape[:-1]
  x2 = x.reshape((-1, want)).astype(chip.g.dtype)
  fn = _read_forward if direction == "forward" else _read_backward
  y = fn(x2, chip, spec, key)[:, :give]
  return y.reshape(batch + (give,))
