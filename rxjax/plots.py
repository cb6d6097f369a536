"""Training curves from a work directory's `metrics.jsonl`.

`train.py` appends one JSON object per line (`step`, `phase` and values);
a resumed run appends again from the last checkpoint, so a step can appear
twice: the later line wins. matplotlib is imported only to draw.
"""

from __future__ import annotations

import json
import os


def read_metrics(path: str) -> dict[str, dict[str, list]]:
  """`{phase: {"step": [...], key: [...]}}` from a metrics.jsonl file.

  Steps are sorted; when a step is logged more than once in a phase (a run
  resumed after an interruption) the last line counts. Lines that are not
  JSON objects (a write cut short by a kill) are skipped.
  """
  latest: dict[str, dict[int, dict]] = {}
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if not isinstance(record, dict) or "phase" not in record or (
          record.get("superseded")):  # Redone after a resume.
        continue
      latest.setdefault(record["phase"], {})[int(record["step"])] = record
  out = {}
  for phase, by_step in latest.items():
    steps = sorted(by_step)
    keys = sorted({k for r in by_step.values() for k in r} -
                  {"step", "phase", "time"})
    series = {"step": steps}
    for k in keys:
      series[k] = [by_step[s].get(k) for s in steps]
    out[phase] = series
  return out


def training_curves(workdir: str, phases: dict[str, str], *,
                    out: str | None = None, title: str = "") -> str:
  """Draws running training loss and test accuracy per epoch, per phase.

  Args:
    workdir: a `train.py` work directory (reads its metrics.jsonl).
    phases: `{phase: label}` in legend order, e.g. `{"cross_ni":
      "Cross-NI"}`; a phase without lines is left out.
    out: the PNG to write; default `workdir/curves.png`.
    title: figure title.

  Returns:
    The path written.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  metrics = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  out = out or os.path.join(workdir, "curves.png")
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
  for phase, label in phases.items():
    steps = metrics.get(f"{phase}/steps")
    if steps and "loss" in steps:
      ax_loss.plot(steps["step"], steps["loss"], label=label)
    epochs = metrics.get(phase)
    if epochs and "test_accuracy" in epochs:
      ax_acc.plot(epochs["epoch"], [100 * a for a in epochs["test_accuracy"]],
                  marker="o", label=label)
  ax_loss.set(xlabel="training step", ylabel="training loss (running mean)",
              yscale="log")
  ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)")
  ax_acc.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  plt.close(fig)
  return out
