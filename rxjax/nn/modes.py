"""The modes a network runs in and the names its chips live under."""

from __future__ import annotations

from rxjax import crossbar

ChipSpec = crossbar.ChipSpec
MODES = ("digital", "ideal", "nonideal")
COLLECTION = "chips"  # Flax variable collection of the programmed chips.
RNG = "chip"  # Flax RNG stream whose presence (re)programs chips exactly.


def mode_spec(mode: str, spec: ChipSpec | None = None) -> ChipSpec | None:
  """The spec a mode runs with: None (digital), cross-ideal or the chip.

  Args:
    mode: "digital", "ideal" (RxNN's Cross-ideal: precision only) or
      "nonideal".
    spec: the chip; None is the papers' default `ChipSpec()`.
  """
  if mode not in MODES:
    raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
  if mode == "digital":
    return None
  spec = ChipSpec() if spec is None else spec
  return spec.cross_ideal() if mode == "ideal" else spec
