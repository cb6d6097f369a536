"""Config migration: what changed between a work directory's config.json
and the config a run is started with.

A work directory keeps the config it ran with. A later run in it compares
the two field by field (the resume rule in `rxjax.resume` then says whether
it may go on); fields added to rxjax since the directory was written are
first filled with the value that reproduces what older rxjax did, and the
fields that only say where a run is placed are not compared.
"""

from __future__ import annotations

import copy
from typing import Iterator

from rxjax import resume
from rxjax import validate

# Config fields added after work directories were first written, with the
# value that reproduces what older rxjax did: a run started before a field
# existed resumes when the field is left at that value.
ADDED_FIELDS = {"chip.pair_subtraction": "digital",
                **{f"chip.{k}": v for k, v in validate.chip_defaults().items()
                   if k not in ("tile_size", "r_min_ohm", "r_max_ohm",
                                "device_bits", "weight_bits", "signed",
                                "sigma", "r_row_ohm", "r_col_ohm",
                                "r_source_ohm", "r_sense_ohm", "input_bits",
                                "dac_bits", "dac_model", "adc_bits",
                                "pair_subtraction", "inputs")},
                "retrain.gain_correction": "none",
                "retrain.adc_range": "calibrated",
                "retrain.backward": "straight_through",
                "grad_blocks": 0}


# Where a run is placed, not what it computes: a work directory resumes with
# another device count or job layout (checkpoints are restored onto the
# current mesh).
PLACEMENT_FIELDS = ("num_devices", "distributed")


def fill_added_fields(stored: dict) -> None:
  """Sets, in place, each of `ADDED_FIELDS` that a stored config lacks."""
  for dotted, value in ADDED_FIELDS.items():
    *parents, leaf = dotted.split(".")
    node = stored
    for name in parents:
      node = node.get(name) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf not in node:
      node[leaf] = value


def diff(a, b, prefix: str = "") -> Iterator[str]:
  """The dotted names of the leaves where nested dicts `a` and `b` differ
  (a key missing on one side differs)."""
  if isinstance(a, dict) and isinstance(b, dict):
    for k in set(a) | set(b):
      yield from diff(a.get(k), b.get(k), f"{prefix}{k}.")
  elif a != b:
    yield prefix[:-1]


def changed_fields(stored: dict, current: dict) -> list[str]:
  """The sorted config fields that differ between a stored config.json
  (`stored`, filled in place with `ADDED_FIELDS`) and the `current` one
  (both as JSON; `current` is not changed), compared as `resume.normalize`
  reads them, placement fields left out."""
  fill_added_fields(stored)
  return sorted(d for d in diff(resume.normalize(stored),
                                resume.normalize(copy.deepcopy(current)))
                if d.split(".")[0] not in PLACEMENT_FIELDS)
