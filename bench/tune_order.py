"""Choose the decoder's strategy order from measurements; prints it, changes nothing.

For every frame (real photos and simulated screens) that the plain read and rectification do
not fully read, each strategy is run once on its own after them, recording the codes it adds
and its cost in multiples of that frame's plain read. The cascade is then simulated under a
budget, and strategies are picked greedily by weighted codes gained per unit of mean time
(mean time as the benchmark takes it: total time over total plain zxing-cpp time).

    .venv/bin/python bench/tune_order.py [--budget 10] [--gated] [--sim 60]

With --gated only frames in which the plain read located something run the cascade, as in
`decode()`; without it every frame does, as in the stream reader. Weights: a real code 1, a
simulated frame 1.5, a hard simulated frame 2 more (the targets furthest away).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import zxingcpp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from agent.decode import decoder  # noqa: E402
from agent.decode.strategies import STRATEGIES  # noqa: E402
from dataset import codes_read, load_photos, sim_frames  # noqa: E402


def _hits(kind: str, truth, codes) -> frozenset:
    if kind == "real":
        return frozenset(i for i, p in enumerate(truth) if codes_read([p], [c.corners for c in codes]))
    return frozenset([0]) if any(c.text == truth for c in codes) else frozenset()


def measure(frames) -> list[dict]:
    """One row per frame: what plain + rectify read, and what each strategy adds at what cost."""
    rows = []
    names = [n for n in STRATEGIES if n not in ("plain", decoder.GLANCE)]
    for kind, group, gray, truth in frames:
        t0 = time.perf_counter()
        zxingcpp.read_barcodes(gray, formats=decoder.QR)  # the benchmark's baseline
        plain_s = time.perf_counter() - t0
        result = decoder.DecodeResult()
        cascade = decoder.Cascade(gray, result)
        if not result.codes and not cascade.candidates:  # the gate's glance, as in decode()
            cascade.run(STRATEGIES[decoder.GLANCE])
        located = bool(result.codes or cascade.candidates)
        cascade.rectify_candidates()
        row = dict(kind=kind, group=group, n=len(truth) if kind == "real" else 1, plain_s=plain_s,
                   located=located, base=_hits(kind, truth, result.codes),
                   pre_x=cascade.elapsed_x(), adds={})
        if len(row["base"]) < row["n"]:
            for name in names:
                r = decoder.DecodeResult()
                c = decoder.Cascade(gray, r)
                c.rectify_candidates()
                t0 = time.perf_counter()
                c.run(STRATEGIES[name])
                row["adds"][name] = (_hits(kind, truth, r.codes) - row["base"],
                                     (time.perf_counter() - t0) / c.base_s)
        rows.append(row)
    return rows


def simulate(rows, order, budget, gated, estimate, share=decoder.MORE_CODES_SHARE):
    """Codes read per group and mean time ratio per kind, for this order under this budget."""
    hits: dict[str, int] = {}
    spent = {"real": 0.0, "sim": 0.0}
    plain = {"real": 0.0, "sim": 0.0}
    for row in rows:
        got, elapsed = set(row["base"]), row["pre_x"]
        if row["adds"] and (row["located"] or not gated):
            for name in order:
                limit = budget if not got else budget * share
                if len(got) == row["n"] or elapsed >= limit:
                    break
                if elapsed + estimate[name] > limit:
                    continue
                add, cost = row["adds"][name]
                elapsed += cost
                got |= add
        for key in (row["kind"], row["group"]):
            hits[key] = hits.get(key, 0) + len(got)
        spent[row["kind"]] += elapsed * row["plain_s"]
        plain[row["kind"]] += row["plain_s"]
    return hits, {k: spent[k] / plain[k] for k in spent}


def score(hits) -> float:
    return hits["real"] + 1.5 * hits["sim"] + 2 * hits.get("hard", 0)


def greedy(rows, budget, gated, max_mean):
    names = next(r["adds"] for r in rows if r["adds"])
    estimate = {n: float(np.mean([r["adds"][n][1] for r in rows if r["adds"]])) for n in names}
    order: list[str] = []
    hits, mean = simulate(rows, order, budget, gated, estimate)
    totals = {k: sum(r["n"] for r in rows if r["kind"] == k) for k in ("real", "sim")}
    print(f"plain + rectify: real {100 * hits['real'] / totals['real']:.1f}%, sim {100 * hits['sim'] / totals['sim']:.1f}%")
    while True:
        best = None
        for name in estimate:
            if name in order:
                continue
            h, m = simulate(rows, order + [name], budget, gated, estimate)
            gain = score(h) - score(hits)
            dt = max(sum(m.values()) - sum(mean.values()), 1e-3)
            if gain > 0 and max(m.values()) <= max_mean and (best is None or gain / dt > best[0]):
                best = (gain / dt, name, h, m)
        if best is None:
            return order
        _, name, hits, mean = best
        order.append(name)
        print(f"+ {name:14s} real {100 * hits['real'] / totals['real']:.1f}%  glare {hits.get('glare', 0)}  "
              f"sim {100 * hits['sim'] / totals['sim']:.1f}%  hard {hits.get('hard', 0)}  "
              f"mean {mean['real']:.2f}x real, {mean['sim']:.2f}x sim")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=decoder.DEFAULT_BUDGET_X)
    ap.add_argument("--gated", action="store_true")
    ap.add_argument("--sim", type=int, default=60)
    ap.add_argument("--max-mean", type=float, default=2.9, help="stop before the mean exceeds this")
    args = ap.parse_args()
    frames = [("real", p.category, p.gray(), p.polygons) for p in load_photos()]
    frames += [("sim", level, frame, text) for level, frame, text in sim_frames(args.sim)]
    rows = measure(frames)
    order = greedy(rows, args.budget, args.gated, args.max_mean)
    print("order:", tuple(order))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
