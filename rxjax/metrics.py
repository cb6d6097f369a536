"""`metrics.jsonl`: one line per (phase, step), or the older ones marked.

A run killed in an epoch redoes that epoch on resume and logs its steps
again. Every line appended here whose (phase, step) is already in the file
marks the older line `"superseded": true` (the file is rewritten
atomically), so each (phase, step) has one current line and the curves use
the latest. A half-written last line (a kill during a write) is dropped
when the file is opened.
"""

from __future__ import annotations

import json
import os


def _key(record):
  return (record.get("phase"), record.get("step"))


class MetricsFile:
  """Appends metric records to a JSONL file, one current line per key."""

  def __init__(self, path: str):
    self.path = path
    self._current = set()
    if not os.path.exists(path):
      return
    records, broken = self._read()
    if broken:
      self._write(records)
    self._current = {_key(r) for r in records if not r.get("superseded")}

  def _read(self):
    records, broken = [], False
    with open(self.path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          broken = True
          continue
        if isinstance(record, dict):
          records.append(record)
        else:
          broken = True
    return records, broken

  def _write(self, records):
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      for r in records:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)

  def supersede(self, match) -> int:
    """Marks every current line for which `match(record)` is true."""
    if not os.path.exists(self.path):
      return 0
    records, _ = self._read()
    n = 0
    for r in records:
      if not r.get("superseded") and match(r):
        r["superseded"] = True
        self._current.discard(_key(r))
        n += 1
    if n:
      self._write(records)
    return n

  def append(self, record: dict) -> None:
    key = _key(record)
    if key in self._current:
      self.supersede(lambda r: _key(r) == key)
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    self._current.add(key)
