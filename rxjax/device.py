"""Device physics of resistive synapses, programming side.

This module owns what happens to a conductance once a device is written and
read (DESIGN.md sections 1 and 4):

* `DeviceSpec`: the device's conductance range `[g_min, g_max]`
  (`g_min = 1 / r_max`, `g_max = 1 / r_min`), its number of programmable
  levels, and the rates of its non-idealities;
* `vary`: one chip instance drawn from a PRNG key, i.e. multiplicative
  process variation (lognormal by default, sigma/mu = 10%, RxNN section VII),
  additive programming (write) noise and stuck-at-g_min / stuck-at-g_max
  cells;
* `read`: cycle-to-cycle read noise, drawn anew for every VMM;
* `UpdateSpec` and `update`: the device's response to a requested
  conductance change during training (TxSim section IV-C, eq. 1), i.e. the
  non-linear, asymmetric, state-dependent step with factor `nu`, Gaussian
  write noise with factor `gamma`, and clipping to `[g_min, g_max]`.

It does not own the mapping of weights to ideal conductance levels
(`mapping.py`, which reads `g_min`, `g_max` and `device_bits` from here), the
wire and terminal resistances of a tile (`rxjax.circuit`) or the converters
(`rxjax.periphery`), nor how a layer's weight updates become conductance
changes of differential pairs (`optim.py`).

All functions are pure, keep the dtype of `g` and work on any shape of `g`.
`vary`, `read` and `update` are jitted with their specs static (hashable
frozen dataclasses), so an eager call compiles once, and they nest in an
outer `jit`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers

import jax
import jax.numpy as jnp

from rxjax import _checks

_VARIATIONS = ("lognormal", "normal")

# Every effect draws from its own `fold_in(key, tag)`, so switching one effect
# on or off never changes the draws of another (same key, same chip).
_TAG_VARIATION = 0
_TAG_WRITE_NOISE = 1
_TAG_STUCK = 2
_TAG_READ_NOISE = 3
_TAG_UPDATE_NOISE = 4


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
  """A synaptic device: conductance range, levels and non-idealities.

  Attributes:
    r_min: lowest device resistance (ohm), `g_max = 1 / r_min`.
    r_max: highest device resistance (ohm), `g_min = 1 / r_max`.
    device_bits: bits per cell, `2**device_bits` programmable levels; `None`
      means a continuous (analog) device.
    variation: distribution of the multiplicative process variation,
      "lognormal" (mean 1, never negative) or "normal" (`1 + sigma * N(0, 1)`).
    sigma: sigma/mu of the process variation (fraction); 0 turns it off.
    write_noise: standard deviation of the additive Gaussian programming
      error, as a fraction of `g_max - g_min`; 0 turns it off.
    stuck_at_min: probability that a cell is stuck at `g_min`.
    stuck_at_max: probability that a cell is stuck at `g_max`.
    read_noise: relative standard deviation of the read noise, drawn anew
      for every VMM; 0 (the default) turns it off.

  Raises:
    ValueError: when a field is out of its range; the message names the
      field, the value and the valid range.
  """

  r_min: float = 100e3
  r_max: float = 1e6
  device_bits: int | None = 2
  variation: str = "lognormal"
  sigma: float = 0.1
  write_noise: float = 0.0
  stuck_at_min: float = 0.0
  stuck_at_max: float = 0.0
  read_noise: float = 0.0

  def __post_init__(self):
    for name in ("r_min", "r_max"):
      value = _checks.as_finite_float(
          name, getattr(self, name), "a finite resistance > 0 ohm")
      if value <= 0:
        raise ValueError(
            f"`{name}` must be a finite resistance > 0 ohm, got "
            f"{getattr(self, name)!r}")
    if not float(self.r_min) < float(self.r_max):
      raise ValueError(
          f"`r_min` must be < `r_max` (g_max > g_min; r_min >= r_max would "
          f"give g_min >= g_max), got r_min={self.r_min!r}, "
          f"r_max={self.r_max!r}")
    _checks.check_bits("device_bits", self.device_bits, "continuous")
    _checks.check_choice("variation", self.variation, _VARIATIONS)
    for name in ("sigma", "write_noise", "read_noise"):
      value = _checks.as_finite_float(name, getattr(self, name),
                               "a finite fraction >= 0")
      if value < 0:
        raise ValueError(
            f"`{name}` must be a finite fraction >= 0, got "
            f"{getattr(self, name)!r}")
    for name in ("stuck_at_min", "stuck_at_max"):
      value = _checks.as_finite_float(name, getattr(self, name),
                               "a probability in [0, 1]")
      if not 0 <= value <= 1:
        raise ValueError(
            f"`{name}` must be a probability in [0, 1], got "
            f"{getattr(self, name)!r}")
    total = float(self.stuck_at_min) + float(self.stuck_at_max)
    if total > 1:
      raise ValueError(
          "`stuck_at_min` + `stuck_at_max` must be <= 1, got "
          f"stuck_at_min={self.stuck_at_min!r}, "
          f"stuck_at_max={self.stuck_at_max!r} (sum {total!r})")

  @property
  def g_min(self) -> float:
    """Lowest conductance (siemens), `1 / r_max`."""
    return 1.0 / float(self.r_max)

  @property
  def g_max(self) -> float:
    """Highest conductance (siemens), `1 / r_min`."""
    return 1.0 / float(self.r_min)

  @classmethod
  def ideal(cls, r_min: float = 100e3, r_max: float = 1e6) -> DeviceSpec:
    """A continuous device without variation, noise or faults.

    Args:
      r_min: lowest device resistance (ohm).
      r_max: highest device resistance (ohm).

    Returns:
      A spec for which `vary` and `read` return `g` unchanged.
    """
    return cls(r_min=r_min, r_max=r_max, device_bits=None, sigma=0.0,
               write_noise=0.0, stuck_at_min=0.0, stuck_at_max=0.0,
               read_noise=0.0)


def _draw_dtype(dtype):
  """Dtype in which to draw random numbers for `g` of `dtype` (>= float32)."""
  return jnp.promote_types(dtype, jnp.float32)


# Elements whose random numbers are drawn at once. The threefry temporaries
# are several times the size of the draw and are not fused away, so a mapped
# VGG-16 fc6 layer (822 M conductances) drawn whole would need > 20 GB; drawn
# in parts it needs the output and a few parts.
CHUNK = 1 << 22


def _draw(fn, key, tag: int, size: int, dtype) -> jax.Array:
  """fn(fold_in(key, tag), (size,), dtype): a flat vector of draws.

  Drawing flat also keeps the compile time of the partitionable threefry
  independent of the rank of `g` (a 6-D mapped layer compiles in the time of
  a 1-D one instead of several times longer).
  """
  return fn(jax.random.fold_in(key, tag), (size,), dtype)


def _in_parts(fn, g, key) -> jax.Array:
  """fn(flat_part, part_key) over parts of `g`, reassembled to g's shape.

  Arrays of at most `CHUNK` elements are one part with `key` itself. Larger
  ones are split over their leading axes into `A` parts of the trailing `B`
  elements (`B` the largest product of trailing axes <= `CHUNK`); part `a`
  draws from `fold_in(key, a)`. Same key and shape, same numbers. If even the
  last axis is longer than `CHUNK`, the array is drawn whole.
  """
  shape = g.shape
  size = math.prod(shape)
  if size <= CHUNK:
    return fn(g.reshape(size), key).reshape(shape)
  b, j = 1, len(shape)
  while j > 0 and b * shape[j - 1] <= CHUNK:
    j -= 1
    b *= shape[j]
  if j == len(shape):
    return fn(g.reshape(size), key).reshape(shape)
  a = size // b
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      key, jnp.arange(a, dtype=jnp.uint32))
  out = jax.lax.map(lambda part: fn(*part), (g.reshape(a, b), keys),
                    batch_size=max(1, CHUNK // b))
  return out.reshape(shape)


def _check_floating(g) -> jax.Array:
  g = jnp.asarray(g)
  if not jnp.issubdtype(g.dtype, jnp.floating):
    raise TypeError(
        f"`g` must be a floating-point array (siemens), got dtype {g.dtype}")
  return g


@functools.partial(jax.jit, static_argnames=("spec",))
def vary(g, spec: DeviceSpec, *, key) -> jax.Array:
  """Programs ideal conductances into one chip instance.

  Applied in this order, each from its own `fold_in(key, tag)` so that
  switching one effect on does not change the draws of another:

  1. process variation, multiplicative, per device: `g * f` with `f`
     lognormal of mean 1 and standard deviation `sigma` (the underlying normal
     has `s = sqrt(log(1 + sigma**2))`, `mu = -s**2 / 2`), or normal
     `f = 1 + sigma * N(0, 1)`;
  2. write noise, additive: `+ write_noise * (g_max - g_min) * N(0, 1)`;
  3. clipping at `g >= 0` only: a varied device may leave `[g_min, g_max]`
     (a real device's spread is not bounded by the nominal range), but a
     conductance cannot be negative;
  4. stuck cells: with `u` uniform in [0, 1) per cell, `u < stuck_at_min`
     gives `g_min` and `u >= 1 - stuck_at_max` gives `g_max` (`>=` rather
     than `>` so that a rate of exactly 1 sticks every cell).

  Arrays larger than `CHUNK` (4 M) elements are drawn in parts over their
  leading axes, each part from `fold_in(key, part)`, so that the random
  number temporaries stay small; the statistics are the same.

  With every effect off `g` is returned unchanged.

  Args:
    g: [...] ideal programmed conductances (siemens), floating point.
    spec: the device; static under `jit`.
    key: PRNG key; one key is one chip instance (same key, same chip).

  Returns:
    [...] the programmed conductances (siemens), dtype of `g`.
  """
  g = _check_floating(g)
  dtype = g.dtype
  draw = _draw_dtype(dtype)
  sigma = float(spec.sigma)
  write_noise = float(spec.write_noise)
  stuck_min = float(spec.stuck_at_min)
  stuck_max = float(spec.stuck_at_max)
  if sigma == 0 and write_noise == 0 and stuck_min == 0 and stuck_max == 0:
    return g

  def one_part(g, key):  # g: [n], flat.
    n = g.shape[0]
    if sigma > 0 or write_noise > 0:
      out = g.astype(draw)
      if sigma > 0:
        z = _draw(jax.random.normal, key, _TAG_VARIATION, n, draw)
        if spec.variation == "lognormal":
          s = math.sqrt(math.log1p(sigma**2))
          factor = jnp.exp(s * z - 0.5 * s**2)
        else:
          factor = 1 + sigma * z
        out = out * factor
      if write_noise > 0:
        z = _draw(jax.random.normal, key, _TAG_WRITE_NOISE, n, draw)
        out = out + (write_noise * (spec.g_max - spec.g_min)) * z
      g = jnp.maximum(out, 0).astype(dtype)
    if stuck_min > 0 or stuck_max > 0:
      u = _draw(jax.random.uniform, key, _TAG_STUCK, n, draw)
      g = jnp.where(u < stuck_min, jnp.asarray(spec.g_min, dtype), g)
      g = jnp.where(u >= 1 - stuck_max, jnp.asarray(spec.g_max, dtype), g)
    return g

  return _in_parts(one_part, g, key)


@functools.partial(jax.jit, static_argnames=("spec",))
def read(g, spec: DeviceSpec, *, key) -> jax.Array:
  """The conductances one VMM sees: `g * (1 + read_noise * N(0, 1))`.

  Draw a new `key` for every VMM (cycle-to-cycle noise). The result is
  clipped at `>= 0`. With `read_noise == 0` `g` is returned unchanged and
  nothing is drawn.

  Args:
    g: [...] programmed conductances (siemens), floating point.
    spec: the device; static under `jit`.
    key: PRNG key of this read.

  Returns:
    [...] the conductances during this read (siemens), dtype of `g`.
  """
  g = _check_floating(g)
  read_noise = float(spec.read_noise)
  if read_noise == 0:
    return g
  dtype = g.dtype
  draw = _draw_dtype(dtype)

  def one_part(g, key):  # g: [n], flat.
    z = _draw(jax.random.normal, key, _TAG_READ_NOISE, g.shape[0], draw)
    out = g.astype(draw) * (1 + read_noise * z)
    return jnp.maximum(out, 0).astype(dtype)

  return _in_parts(one_part, g, key)


# ---------------------------------------------------------------------------
# Training updates (TxSim section IV-C, eq. 1).


@dataclasses.dataclass(frozen=True)
class UpdateSpec:
  """How a device responds to a requested conductance change (TxSim eq. 1).

  The defaults are the paper's non-ideal training setting (TxSim V and VI-B:
  `nu = 0.01`, `gamma = 5`); `UpdateSpec.ideal()` turns both off.

  Attributes:
    nu: update non-linearity factor (dimensionless), >= 0; 0 is the ideal
      linear update. TxSim VI-C: up to 0.1 is harmless, 1 stops training.
    gamma: write (update) noise factor (dimensionless), >= 0; 0 turns the
      noise off. The noise standard deviation is `gamma * |dg|` in siemens,
      i.e. `gamma` times the requested step (see `update` for how the
      paper's `sqrt(g_max - g_min)` is read).

  Raises:
    ValueError: when a field is out of its range; the message names the
      field, the value and the valid range.
  """

  nu: float = 0.01
  gamma: float = 5.0

  def __post_init__(self):
    for name in ("nu", "gamma"):
      value = getattr(self, name)
      if not isinstance(value, numbers.Real):  # Not a string that parses.
        raise ValueError(
            f"`{name}` must be a finite number >= 0, got {value!r}")
      value = _checks.as_finite_float(name, value, "a finite number >= 0")
      if value < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0, got "
            f"{getattr(self, name)!r}")

  @classmethod
  def ideal(cls) -> UpdateSpec:
    """The ideal update: `g + dg`, clipped to `[g_min, g_max]`."""
    return cls(nu=0.0, gamma=0.0)


# The depression branch of eq. 1 grows like `exp(nu * |dg| / (g_max - g_min))`;
# its exponent is capped here so that it cannot overflow. The cap only acts on
# requests of more than 30 / nu full ranges in one step, whose mean response
# already overshoots the range by a factor > 1e12 (the result is g_min unless
# noise of that size is added).
_MAX_EXPONENT = 30.0


@functools.partial(jax.jit, static_argnames=("device", "spec"))
def update(g, dg, device: DeviceSpec, spec: UpdateSpec, *, key) -> jax.Array:
  """The conductance a device reaches when asked to change by `dg`.

  TxSim eq. 1, transcribed. With `R = g_max - g_min`, `e = 1 - exp(-nu)`
  and `s = nu * dg / R`, the mean change is

  * potentiation, `dg > 0`: `(R / e + g_min - g) * (1 - exp(-s))`;
  * depression, `dg < 0`:   `(R / e - g_max + g) * (1 - exp(-s))`;

  (0 for `dg == 0`). Both branches use the same signed exponent `-s`, as
  the paper prints it: for `dg < 0`, `1 - exp(-s) = 1 - exp(nu |dg| / R)` is
  negative, so the change has the sign of the request. The step depends on
  the present conductance: a potentiation shrinks towards `g_max`, a
  depression towards `g_min`, so at a given conductance the two differ
  (asymmetry) except at mid-range. As `nu -> 0` both branches tend to `dg`,
  the ideal update. The potentiation branch is an exact step along the
  saturating curve `g(p) = g_min + R (1 - exp(-nu p)) / e`, `p` in [0, 1]
  (TxSim's ref. [26]). The printed depression branch is not its exact
  mirror image: the mirror would be `-(R / e - g_max + g) * (1 - exp(-nu
  |dg| / R))`, which differs from the printed form by a relative
  `O(nu |dg| / R)`; we keep the printed form.

  Eq. 1 is evaluated in normalized units: with `u = (g - g_min) / R` (clipped
  to [0, 1]) and `x = dg / R` it reads `R * (1/e - u) * (1 - exp(-nu x))`
  and `R * (1/e - 1 + u) * (1 - exp(-nu x))`, which is the same number. It
  is computed as `dg_s * (nu / e - nu * u)` with `dg_s = R (1 - exp(-s)) /
  nu` (`-> dg` as `nu -> 0`) so that small `nu` loses no precision;
  `nu == 0` is the ideal update exactly.

  Write noise (TxSim IV-C): Gaussian, mean 0, standard deviation
  `gamma * sqrt(g_max - g_min) * |dg|`, evaluated in normalized conductance
  units, where `g_max - g_min = 1`: the standard deviation is `gamma * |x|`
  in normalized units, i.e. `gamma * |dg|` in siemens. The paper's formula
  is not dimensionally consistent (`sqrt(siemens) * siemens`); read in
  siemens it would make the noise depend on the unit and, for its
  100 kohm - 1 Mohm device (`sqrt(9e-6) = 3e-3`), 330 times smaller than
  `gamma * |dg|`, so that the paper's `gamma = 1 ... 10` would be
  invisible. The paper prints
  `G_ideal`; its next sentence (the noise is proportional to the size of
  the gradient) and the design (DESIGN.md 5) make it `|dG_ideal|`.

  The result `g + mean change + noise` is clipped to `[g_min, g_max]`.

  Args:
    g: [...] present conductances (siemens), floating point.
    dg: [...] requested (ideal) conductance changes (siemens); broadcast
      against `g`.
    device: the device (`g_min`, `g_max`); static under `jit`. Its
      variation, programming noise, stuck cells and read noise are not
      applied here.
    spec: the update response (`nu`, `gamma`); static under `jit`.
    key: PRNG key of this update (draw a new one for every step). Nothing is
      drawn when `gamma == 0` (then `key` may be None). Arrays larger than
      4 M elements are drawn in parts as in `vary`.

  Returns:
    [...] the new conductances (siemens) in `[g_min, g_max]`, shape of
    `g` and `dg` broadcast, dtype of `g`.
  """
  g = _check_floating(g)
  dtype = g.dtype
  compute = _draw_dtype(dtype)
  shape = jnp.broadcast_shapes(g.shape, jnp.shape(dg))
  g = jnp.broadcast_to(g, shape).astype(compute)
  dg = jnp.broadcast_to(jnp.asarray(dg), shape).astype(compute)
  g_min, g_max = device.g_min, device.g_max
  r = g_max - g_min
  nu = float(spec.nu)
  gamma = float(spec.gamma)

  if nu == 0:
    step = dg
  else:
    u = jnp.clip((g - g_min) / r, 0, 1)
    s = jnp.maximum(nu * dg / r, -_MAX_EXPONENT)
    dg_s = (-r / nu) * jnp.expm1(-s)  # R (1 - exp(-s)) / nu; -> dg as nu -> 0.
    nu_over_e = -nu / math.expm1(-nu)  # nu / (1 - exp(-nu)); -> 1.
    # Potentiation: 1/e - u; depression: 1/e - 1 + u = 1/e - (1 - u).
    distance = jnp.where(dg > 0, u, 1 - u)
    step = dg_s * (nu_over_e - nu * distance)

  if gamma > 0:
    z = _in_parts(
        lambda part, k: _draw(jax.random.normal, k, _TAG_UPDATE_NOISE,
                              part.shape[0], compute), g, key)
    step = step + gamma * jnp.abs(dg) * z

  return jnp.clip(g + step, g_min, g_max).astype(dtype)
