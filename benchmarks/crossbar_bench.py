"""Speed of the crossbar VMM and of programming a network, as ratios.

    python benchmarks/crossbar_bench.py           # everything (~4 min, 2 cores)
    python benchmarks/crossbar_bench.py --quick   # smaller batch, no VGG-16

Everything runs in float32 (the dtype networks train in), on the CPU
devices JAX sees, each timing the best of several repeats after a warm-up
(compilation excluded and reported separately).

1. One crossbar VMM of a 1024 x 1024 layer at batch 256 on 64 x 64 tiles,
   differential pairs, `G_eff` precomputed (programmed and calibrated once):
   * one slice (8-bit weights on 8-bit devices), 8-bit inputs through 8-bit
     DACs (one cycle), 8-bit ADCs; against the plain `x @ w` (target <= 2x);
   * 4 slices (8-bit weights on 2-bit devices) and 8 input cycles (8-bit
     inputs, 1-bit DACs); against the 64 partial products it must compute
     (4 slices x 8 cycles x 2 polarities, timed as ONE stacked GEMM of the
     same flops, `[8 B, K] @ [K, 8 N]`, the fastest way to do them;
     target <= 1.2x).
   Inputs are non-negative activations (`ChipSpec.inputs = "non_negative"`, one
   pass); signed inputs take two passes and twice the time.
   Both again with analog pair subtraction (`ChipSpec.pair_subtraction =
   "analog"`: the sense amplifier subtracts I+ - I-, one bipolar ADC per
   pair), against the products that design must compute: `x @ w` and 32
   partial products (4 slices x 8 cycles).
2. Programming ResNet-50 (every conv and FC weight, 25.5 M; random
   He-initialized weights of the real shapes) on 64 x 64 tiles with one
   slice per differential pair and the default ReRAM wires and 10%
   variation: mapping + variation + every tile's exact `G_eff`, every
   layer written (`crossbar.write`) and all tiles solved in one batch
   (`crossbar.solve`), as `rxjax.nn.program` does (target <= 2 min; RxNN
   reported 61 s per tile).
3. (not with --quick) Mapping all of VGG-16's 138 M weights with the default
   spec (8-bit weights in four 2-bit slices, pairs): peak RSS of a fresh
   subprocess (must fit in this machine's 24 GB).

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import common  # benchmarks/common.py
import rxjax
from rxjax import crossbar


def _vmm_spec(device_bits, dac_bits, pairs):
  return rxjax.ChipSpec(
      mapping=rxjax.MappingSpec(weight_bits=8),
      device=rxjax.DeviceSpec(device_bits=device_bits),
      dac=rxjax.DACSpec(input_bits=8, dac_bits=dac_bits),
      adc=rxjax.ADCSpec(bits=8),
      inputs="non_negative", pair_subtraction=pairs)


def bench_vmm(batch):
  k = n = 1024
  key = jax.random.key(0)
  x = jax.random.uniform(jax.random.fold_in(key, 1), (batch, k), jnp.float32)
  w = jax.random.normal(jax.random.fold_in(key, 2), (k, n), jnp.float32)
  w = w / np.sqrt(k)
  plain = jax.jit(lambda x, w: x @ w)
  rows = {}
  cases = (("1slice", 8, 8, "digital"), ("sliced", 2, 1, "digital"),
           ("1slice_analog", 8, 8, "analog"), ("sliced_analog", 2, 1, "analog"))
  for name, device_bits, dac_bits, pairs in cases:
    spec = _vmm_spec(device_bits, dac_bits, pairs)
    chip = crossbar.program(w, spec, key=key)
    chip = crossbar.calibrate(chip, x, spec)
    read = jax.jit(lambda x, chip, spec=spec: crossbar.read(x, chip, spec))
    start = time.perf_counter()
    read.lower(x, chip).compile()
    compile_s = time.perf_counter() - start
    s, p = chip.g.shape[:2]
    p = 1 if pairs == "analog" else p  # One product per pair.
    cycles = rxjax.periphery.n_cycles(spec.dac)
    products = s * p * cycles
    calls = {"read": (read, (x, chip)), "plain": (plain, (x, w))}
    if products <= 2:
      ref_name = "x @ w"
    else:
      calls["ref"] = (plain, (jnp.tile(x, (cycles, 1)),
                              jnp.tile(w, (1, s * p))))
      ref_name = f"{products} products as one [{cycles}B,K]@[K,{s * p}N] GEMM"
    # In turns: the VM's speed drifts, and a ratio must see one speed.
    t = common.best_interleaved(calls)
    t_read, t_plain = t["read"], t["plain"]
    t_ref = t.get("ref", t_plain)
    ratio = t_read / t_ref
    err = float(jnp.linalg.norm(read(x, chip) - x @ w) / jnp.linalg.norm(x @ w))
    rows[name] = dict(ms=t_read * 1e3, ref_ms=t_ref * 1e3, ref=ref_name,
                      ratio=ratio, plain_ms=t_plain * 1e3, slices=s,
                      cycles=cycles, compile_s=compile_s, rel_err=err,
                      pairs=pairs)
  return rows


def resnet50_shapes():
  """[fan_in, fan_out] of every conv (kh*kw*c_in rows) and FC of ResNet-50."""
  shapes = [(7 * 7 * 3, 64)]
  c_in = 64
  for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
    for b in range(blocks):
      shapes += [(c_in, width), (9 * width, width), (width, 4 * width)]
      if b == 0:
        shapes.append((c_in, 4 * width))  # projection shortcut
      c_in = 4 * width
  shapes.append((2048, 1000))
  return shapes


def vgg16_shapes():
  shapes, c_in = [], 3
  for c_out in (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512,
                512):
    shapes.append((9 * c_in, c_out))
    c_in = c_out
  return shapes + [(25088, 4096), (4096, 4096), (4096, 1000)]


def bench_resnet50():
  spec = rxjax.ChipSpec(mapping=rxjax.MappingSpec(weight_bits=8),
                    device=rxjax.DeviceSpec(device_bits=8))
  key = jax.random.key(0)
  shapes = resnet50_shapes()
  weights = [jax.random.normal(jax.random.fold_in(key, i), s, jnp.float32)
             * np.sqrt(2 / s[0]) for i, s in enumerate(shapes)]
  jax.block_until_ready(weights)
  n_weights = sum(a * b for a, b in shapes)
  keys = [jax.random.fold_in(key, k) for k in range(len(weights))]
  start = time.perf_counter()
  written = [crossbar.write(w, spec, key=k) for w, k in zip(weights, keys)]
  chips = crossbar.solve(written, spec)
  jax.block_until_ready(chips)
  seconds = time.perf_counter() - start
  tiles = sum(int(np.prod(c.g.shape[:4])) for c in chips)
  return dict(seconds=seconds, tiles=tiles, weights=n_weights,
              ms_per_tile=seconds / tiles * 1e3)


def _vgg_child():
  spec = rxjax.ChipSpec()
  key = jax.random.key(0)
  kept = []
  total = 0
  for i, s in enumerate(vgg16_shapes()):
    w = jax.random.normal(jax.random.fold_in(key, i), s, jnp.float32)
    mapped = rxjax.mapping.program(w, spec.mapping, spec.device)
    del w
    kept.append(jax.block_until_ready(mapped.g))
    total += s[0] * s[1]
  gb = sum(g.nbytes for g in kept) / 1e9
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(json.dumps(dict(weights=total, conductance_gb=gb, peak_gib=peak)))


def bench_vgg16():
  out = subprocess.run([sys.executable, __file__, "--vgg-child"],
                       capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--vgg-child", action="store_true",
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.vgg_child:
    _vgg_child()
    return
  print(f"# crossbar_bench on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}, devices {jax.devices()}, float32")
  batch = 64 if args.quick else 256
  vmm = bench_vmm(batch)
  print(f"\n## VMM, 1024x1024 layer, batch {batch}, 64x64 tiles, pairs")
  print("| case | crossbar ms | reference | ref ms | ratio | target |"
        " compile s | rel. error vs x@w |")
  print("|---|---|---|---|---|---|---|---|")
  for name, target in (("1slice", "<= 2x"), ("sliced", "<= 1.2x"),
                       ("1slice_analog", "-"), ("sliced_analog", "-")):
    r = vmm[name]
    print(f"| {r['slices']} slice(s), {r['cycles']} cycle(s), {r['pairs']} "
          f"pair subtraction | {r['ms']:.2f} "
          f"| {r['ref']} | {r['ref_ms']:.2f} | {r['ratio']:.2f}x | {target} "
          f"| {r['compile_s']:.1f} | {r['rel_err']:.3g} |")
  res = bench_resnet50()
  print(f"\n## Programming ResNet-50 ({res['weights'] / 1e6:.1f} M weights, "
        f"{res['tiles']} tiles of 64x64, one slice per pair)")
  print(f"{res['seconds']:.1f} s ({res['ms_per_tile']:.2f} ms per tile; "
        f"target <= 120 s; at RxNN's 61 s per tile: "
        f"{res['tiles'] * 61 / 86400:.1f} days)")
  result = dict(vmm_overhead_1slice=round(vmm["1slice"]["ratio"], 3),
                vmm_overhead_sliced=round(vmm["sliced"]["ratio"], 3),
                vmm_overhead_1slice_analog=round(
                    vmm["1slice_analog"]["ratio"], 3),
                vmm_overhead_sliced_analog=round(
                    vmm["sliced_analog"]["ratio"], 3),
                resnet50_program_s=round(res["seconds"], 2))
  if not args.quick:
    vgg = bench_vgg16()
    print(f"\n## Mapping VGG-16 ({vgg['weights'] / 1e6:.1f} M weights, "
          f"default spec: 4 slices x 2 polarities)")
    print(f"conductances {vgg['conductance_gb']:.2f} GB, process peak RSS "
          f"{vgg['peak_gib']:.2f} GiB")
    result["vgg16_map_peak_gib"] = round(vgg["peak_gib"], 2)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
