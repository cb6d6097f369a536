"""Markdown tables of a run's summary or an eval result, as train.py and
eval.py print them."""

from __future__ import annotations


def table(summary: dict) -> str:
  """A Markdown table of a summary or an eval result."""
  rows = [("fp32 (digital)", summary["fp32"])]
  for group, label in (("ideal", "ideal"), ("nonideal", "non-ideal"),
                       ("retrained", "re-trained, non-ideal")):
    for name, acc in sorted(summary.get(group, {}).items(),
                            key=lambda kv: int(kv[0][5:])):
      rows.append((f"{label} {name.replace('cross', 'Cross')}", acc))
  lines = ["| network on | test accuracy |", "|---|---|"]
  lines += [f"| {k} | {v:.4f} |" for k, v in rows]
  if "chips" in summary:
    c = summary["chips"]
    lines.append(
        f"| {c['n']} chips with variation, Cross{c.get('tile_size', '')} "
        f"| {c['mean']:.4f} +- {c['std']:.4f} (min {c['min']:.4f}, max "
        f"{c['max']:.4f}) |")
  return "\n".join(lines)


def txsim_table(summary: dict) -> str:
  """A Markdown table of a txsim summary or eval result: the test accuracy
  of the networks trained digitally, on Cross-Ideal and on Cross-NI."""
  return "| trained on | test accuracy |\n|---|---|\n" + "\n".join(
      f"| {k} | {summary[k]:.4f} |" for k in ("digital", "cross_ideal",
                                               "cross_ni"))
