"""The report: a network's counts, energy, latency and area per image,
summed over its layers (`EnergyReport`)."""

from __future__ import annotations

import dataclasses

from rxjax.energy import counts as counts_lib
from rxjax.energy.spec import EnergySpec



_ENERGY_KEYS = ("adc", "dac", "array", "digital", "buffer_read",
                "buffer_write", "buffer", "total")
_COUNT_KEYS = ("tile_reads", "dac_conversions", "adc_conversions",
               "shift_adds", "accumulations", "buffer_read_bits",
               "buffer_write_bits")


@dataclasses.dataclass(frozen=True)
class EnergyReport:
  """Energy, latency and area of a network on one chip, per image.

  Attributes:
    counts: operations per image (`layer_counts` keys, summed over layers;
      "crossbars" and "adcs" are the chip's hardware).
    energy_j: joules per image: "adc", "dac", "array", "digital"
      (shift-and-adds and accumulations), "buffer_read", "buffer_write",
      "buffer" (their sum) and "total" (adc + dac + array + digital +
      buffer).
    latency_s: seconds per image, the layers one after another.
    area_m2: chip area (crossbars, converters, shift-and-add units, buffer).
    per_layer: {layer name: {"counts", "energy_j", "latency_s", "area_m2"}}
      (the buffer's area is in the total only).
    array_model: "g_eff", "exact" (`EnergySpec.array_model`) or "nominal"
      (`count`: no programmed chip).
    images: the example batch's size the numbers are divided by.
  """

  counts: dict
  energy_j: dict
  latency_s: float
  area_m2: float
  per_layer: dict
  array_model: str
  images: int

  def summary(self) -> dict:
    """The JSON block that `train.py` / `eval.py` write per chip."""
    return {"j_per_image": self.energy_j["total"],
            "breakdown_j_per_image": {k: self.energy_j[k] for k in
                                      _ENERGY_KEYS[:-1]},
            "s_per_image": self.latency_s, "area_mm2": self.area_m2 * 1e6}

  def table(self) -> str:
    """A Markdown table: one row per layer and the total (energy in nJ)."""
    head = ("| layer | tile reads | DAC conv. | ADC conv. | shift-adds | "
            "ADC nJ | DAC nJ | array nJ | digital nJ | buffer nJ | total nJ "
            "| latency us | area mm^2 |")
    lines = [head, "|" + "---|" * 13]
    rows = list(self.per_layer.items()) + [("**total**", dict(
        counts=self.counts, energy_j=self.energy_j,
        latency_s=self.latency_s, area_m2=self.area_m2))]
    for name, r in rows:
      c, e = r["counts"], r["energy_j"]
      lines.append(
          f"| {name} | {c['tile_reads']:.4g} | {c['dac_conversions']:.4g} | "
          f"{c['adc_conversions']:.4g} | {c['shift_adds']:.4g} | "
          + " | ".join(f"{e[k] * 1e9:.4g}" for k in
                       ("adc", "dac", "array", "digital", "buffer", "total"))
          + f" | {r['latency_s'] * 1e6:.4g} | {r['area_m2'] * 1e6:.4g} |")
    return "\n".join(lines)


def _layer_report(geometry, spec, espec, array_j):
  counts = counts_lib.layer_counts(geometry, spec, espec)
  e = counts_lib.op_energy(counts, spec, espec)
  e["array"] = float(array_j)
  e["buffer"] = e["buffer_read"] + e["buffer_write"]
  e["total"] = e["adc"] + e["dac"] + e["array"] + e["digital"] + e["buffer"]
  return {"counts": counts, "energy_j": {k: e[k] for k in _ENERGY_KEYS},
          "latency_s": counts_lib.latency_s(counts, spec, espec),
          "area_m2": counts_lib.area_um2(counts, spec, espec) * 1e-12}


def build_report(layers, espec: EnergySpec, array_model: str,
                 images: int) -> EnergyReport:
  """The `EnergyReport` of `layers`, [(name, geometry, spec, array_j)]:
  each layer's counts, energy (its array term `array_j`), latency and area,
  and their sums with the buffer's area."""
  per_layer = {}
  for name, geometry, spec, array_j in layers:
    base, k = name, 1
    while name in per_layer:  # A module called twice: name the calls.
      k += 1
      name = f"{base}#{k}"
    per_layer[name] = _layer_report(geometry, spec, espec, array_j)
  total = lambda key, sub: sum(r[key][sub] for r in per_layer.values())
  count_keys = _COUNT_KEYS + ("crossbars", "adcs", "steps")
  counts = {k: total("counts", k) for k in count_keys}
  energy = {k: total("energy_j", k) for k in _ENERGY_KEYS}
  buffer_bits = max((max(gm.in_size, 0) + max(gm.out_size, 0))
                    * counts_lib.activation_bits(spec, espec)
                    for _, gm, spec, _ in layers) if layers else 0
  buffer_m2 = buffer_bits / 8 / 1024 * espec.buffer_um2_per_kib * 1e-12
  return EnergyReport(
      counts=counts, energy_j=energy,
      latency_s=sum(r["latency_s"] for r in per_layer.values()),
      area_m2=sum(r["area_m2"] for r in per_layer.values()) + buffer_m2,
      per_layer=per_layer, array_model=array_model, images=images)
