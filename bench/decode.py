"""Decoder benchmark: ours against every peer that installs here, on real photos and simulated
phone screens, in one run. Ratios are against plain zxing-cpp timed in this same process.

    .venv/bin/python bench/decode.py [--sim N] [--no-wechat] [--markdown]
    .venv/bin/python bench/decode.py --budgets 8,10,12,16     # the budget trade-off only

Peers: plain zxing-cpp; zxing-cpp with a CLAHE retry; ZBar (pyzbar + Debian libzbar0);
OpenCV QRCodeDetectorAruco; WeChat CNN (opencv-contrib in bench/.venv-wechat, models from
../shared/peers/wechat_qrcode). "peers together" is an oracle: a code counts if any peer read it.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import zxingcpp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from agent.decode import FrameReader, decode  # noqa: E402
from agent.decode.strategies import clahe  # noqa: E402
from agent.sim.payloads import bhyt  # noqa: E402
from agent.sim.screen import LEVELS, empty_scene, render  # noqa: E402
from dataset import codes_read, erase_codes, load_photos, sim_frames  # noqa: E402

QR = zxingcpp.BarcodeFormat.QRCode
WECHAT_MODELS = ROOT.parent / "shared" / "peers" / "wechat_qrcode"
WECHAT_VENV = ROOT / "bench" / ".venv-wechat"


def _zx(gray):
    return [(b.text, _pos(b)) for b in zxingcpp.read_barcodes(gray, formats=QR)]


def _pos(b):
    p = b.position
    return [(p.top_left.x, p.top_left.y), (p.top_right.x, p.top_right.y),
            (p.bottom_right.x, p.bottom_right.y), (p.bottom_left.x, p.bottom_left.y)]


def zxing_clahe(gray):
    return _zx(gray) or _zx(clahe(gray))


def zbar_peer():
    try:
        from pyzbar import pyzbar
    except (ImportError, OSError) as exc:  # libzbar0 missing
        print(f"ZBar peer unavailable: {exc}", file=sys.stderr)
        return None

    def run(gray):
        out = []
        for s in pyzbar.decode(gray, symbols=[pyzbar.ZBarSymbol.QRCODE]):
            pts = [(p.x, p.y) for p in s.polygon][:4]
            if len(pts) == 4:
                out.append((s.data.decode("utf-8", "replace"), pts))
        return out
    return run


_aruco = cv2.QRCodeDetectorAruco()


def opencv_aruco(gray):
    ok, texts, points, _ = _aruco.detectAndDecodeMulti(gray)
    if not ok or points is None:
        return []
    return [(t, p.reshape(-1, 2)[:4].tolist()) for t, p in zip(texts, points) if t]


def ours(gray):
    return [(c.text, c.corners) for c in decode(gray).codes]


def ours_ungated(gray):
    return [(c.text, c.corners) for c in decode(gray, gate=False).codes]


def wechat_run(paths: list[str]) -> list[dict] | None:
    """Decode files with the WeChat peer in its own venv; None when it cannot be set up."""
    if not WECHAT_MODELS.is_dir():
        print(f"WeChat peer unavailable: no models at {WECHAT_MODELS}", file=sys.stderr)
        return None
    py = WECHAT_VENV / "bin" / "python"
    if not py.exists():
        print("setting up the WeChat peer environment (opencv-contrib-python-headless)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(WECHAT_VENV)], check=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "opencv-contrib-python-headless", "numpy"])
        if r.returncode:
            shutil.rmtree(WECHAT_VENV, ignore_errors=True)
            print("WeChat peer unavailable: install failed", file=sys.stderr)
            return None
    proc = subprocess.run([str(py), str(ROOT / "bench" / "peers" / "wechat_peer.py"), str(WECHAT_MODELS)],
                          input="\n".join(paths) + "\n", capture_output=True, text=True)
    if proc.returncode:
        print(f"WeChat peer failed: {proc.stderr[-500:]}", file=sys.stderr)
        return None
    return [json.loads(line) for line in proc.stdout.splitlines()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", type=int, default=60, help="simulated frames per difficulty level")
    ap.add_argument("--no-wechat", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print tables in Markdown")
    ap.add_argument("--budgets", help="comma-separated budget_x values: print only their trade-off table")
    args = ap.parse_args()
    if args.budgets:
        return budget_table([float(b) for b in args.budgets.split(",")], args.sim)

    photos = load_photos()
    peers = {"plain zxing-cpp": _zx, "zxing-cpp + CLAHE": zxing_clahe}
    if (zb := zbar_peer()) is not None:
        peers["ZBar"] = zb
    peers["OpenCV Aruco"] = opencv_aruco
    decoders = {**peers, "ours (decode)": ours, "ours (ungated)": ours_ungated}

    # ---- frames: (group, gray, truth) where truth is polygons (photo) or text (simulated)
    frames = []
    for ph in photos:
        frames.append((ph.category, ph.gray(), ph.polygons, "real"))
    for level, frame, text in sim_frames(args.sim):
        frames.append((level, frame, text, "sim"))
    empties = [erase_codes(ph, g) for ph, (_, g, _, _) in zip(photos, frames)]
    empties += [empty_scene(i) for i in range(40)]

    hits = {d: defaultdict(lambda: [0, 0]) for d in decoders}
    times = {d: defaultdict(list) for d in decoders}
    wrong = defaultdict(int)
    union = defaultdict(lambda: [0, 0])
    found_by_peer: list[dict] = []
    for group, gray, truth, kind in frames:
        per = {}
        for name, fn in decoders.items():
            t0 = time.perf_counter()
            out = fn(gray)
            times[name][kind].append((time.perf_counter() - t0) * 1000)
            per[name] = out
        found_by_peer.append(per)
    # WeChat in its own process, on the same frames written as lossless PNG
    wechat = None
    if not args.no_wechat:
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, (_, gray, _, _) in enumerate(frames):
                paths.append(f"{tmp}/{i:05d}.png")
                cv2.imwrite(paths[-1], gray)
            wechat = wechat_run(paths)
    if wechat:
        decoders = {**{k: v for k, v in decoders.items() if k in peers}, "WeChat CNN": None,
                    **{k: v for k, v in decoders.items() if k not in peers}}
        hits["WeChat CNN"], times["WeChat CNN"] = defaultdict(lambda: [0, 0]), defaultdict(list)
        for per, w, (_, _, _, kind) in zip(found_by_peer, wechat, frames):
            per["WeChat CNN"] = [(c["text"], c["corners"]) for c in w["codes"]]
            times["WeChat CNN"][kind].append(w["ms"])
        peers["WeChat CNN"] = None

    for per, (group, gray, truth, kind) in zip(found_by_peer, frames):
        n = len(truth) if kind == "real" else 1
        for name, out in per.items():
            if kind == "real":
                h = codes_read(truth, [c for _, c in out])
            else:
                h = int(any(t == truth for t, _ in out))
                wrong[name] += sum(t != truth for t, _ in out)
            for key in (group, f"ALL {kind}"):
                hits[name][key][0] += h
                hits[name][key][1] += n
        if kind == "real":
            polys = [p for p in truth]
            h = sum(any(codes_read([p], [c for _, c in per[name]]) for name in peers) for p in polys)
        else:
            h = int(any(t == truth for name in peers for t, _ in per[name]))
        for key in (group, f"ALL {kind}"):
            union[key][0] += h
            union[key][1] += n

    # empty frames: time relative to plain zxing-cpp, and anything "read" there
    empty_t = defaultdict(list)
    for gray in empties:
        for name in ("plain zxing-cpp", "ours (decode)", "ours (ungated)"):
            t0 = time.perf_counter()
            decoders[name](gray)
            empty_t[name].append((time.perf_counter() - t0) * 1000)

    # FrameReader over a stream: each simulated presentation as 15 frames (0.5 s at 30 fps)
    stream = defaultdict(lambda: [0, 0])
    stream_t: list[float] = []
    for level in LEVELS:
        for i in range(max(1, args.sim // 3)):
            reader = FrameReader()
            text = bhyt(random.Random(f"stream{i}"))
            ok = False
            for f in range(15):
                shot = render(text, level, 9000 + i * 100 + f)
                r = reader.read(shot.frame)
                stream_t.append(r.ms)
                if any(c.text == text for c in r.codes):
                    ok = True
                    break
            stream[level][0] += ok
            stream[level][1] += 1

    report(decoders, peers, hits, times, union, wrong, empty_t, stream, args, len(photos))
    return 0


def budget_table(budgets: list[float], per_level: int) -> int:
    """Reads and time for each budget, gated and ungated, against plain zxing-cpp timed on the
    same frames in the same loop."""
    frames = [("real", p.category, p.gray(), p.polygons) for p in load_photos()]
    frames += [("sim", level, frame, text) for level, frame, text in sim_frames(per_level)]
    configs = [(b, gate) for b in budgets for gate in (True, False)]
    hits = {c: defaultdict(int) for c in configs}
    totals: dict[str, int] = defaultdict(int)
    times = {c: defaultdict(list) for c in [*configs, "plain"]}
    for kind, group, gray, truth in frames:
        t0 = time.perf_counter()
        _zx(gray)
        times["plain"][kind].append(time.perf_counter() - t0)
        for key in (kind, group):
            totals[key] += len(truth) if kind == "real" else 1
        for c in configs:
            t0 = time.perf_counter()
            codes = decode(gray, budget_x=c[0], gate=c[1]).codes
            times[c][kind].append(time.perf_counter() - t0)
            if kind == "real":
                h = codes_read(truth, [k.corners for k in codes])
            else:
                h = int(any(k.text == truth for k in codes))
            hits[c][kind] += h
            hits[c][group] += h
    plain_glare = sum(codes_read(t, [c for _, c in _zx(g)]) for k, grp, g, t in frames if grp == "glare")
    print("| budget_x | gate | real photos | glare vs plain | simulated | hard | real mean / p95 | sim mean / p95 |")
    print("|---|---|---|---|---|---|---|---|")
    for c in configs:
        ratio = {}
        for kind in ("real", "sim"):
            t, b = np.array(times[c][kind]), np.array(times["plain"][kind])
            ratio[kind] = f"{t.mean() / b.mean():.2f}x / {np.percentile(t, 95) / np.percentile(b, 95):.2f}x"
        share = {k: f"{100 * hits[c][k] / totals[k]:.1f}%" for k in ("real", "sim", "hard")}
        print(f"| {c[0]:g} | {'on' if c[1] else 'off'} | {share['real']} | {hits[c]['glare'] / plain_glare:.2f}x "
              f"| {share['sim']} | {share['hard']} | {ratio['real']} | {ratio['sim']} |")
    return 0


def pct(hn):
    return f"{100 * hn[0] / hn[1]:.1f}%" if hn[1] else "-"


def report(decoders, peers, hits, times, union, wrong, empty_t, stream, args, nphotos):
    names = list(decoders)
    base = "plain zxing-cpp"
    groups = sorted({g for d in hits.values() for g in d if not g.startswith("ALL")} - set(LEVELS))
    sep = " | " if args.markdown else "  "

    def row(cells, widths):
        if args.markdown:
            return "| " + " | ".join(str(c) for c in cells) + " |"
        return sep.join(str(c).ljust(w) for c, w in zip(cells, widths))

    cols = names + ["peers together"]
    widths = [18] + [16] * len(cols)
    print(f"Real photos: {nphotos} images, {hits[base]['ALL real'][1]} labelled codes, one frame each; "
          f"simulated: {args.sim} frames per level")
    print(row(["share read"] + cols, widths))
    if args.markdown:
        print("|" + "---|" * (len(cols) + 1))
    for g in ["ALL real", *groups, "ALL sim", *LEVELS]:
        cells = [g]
        for n in names:
            h = hits[n][g]
            r = h[0] / max(hits[base][g][0], 1)
            cells.append(f"{pct(h)} ({r:.2f}x)" if n != base else pct(h))
        cells.append(pct(union[g]))
        print(row(cells, widths))
    print()
    print(row(["time per frame"] + names, widths))
    if args.markdown:
        print("|" + "---|" * (len(names) + 1))
    for kind in ("real", "sim"):
        b = np.array(times[base][kind])
        for stat in ("mean", "p95"):
            cells = [f"{kind} {stat} ms"]
            for n in names:
                t = np.array(times[n][kind])
                v = t.mean() if stat == "mean" else np.percentile(t, 95)
                bv = b.mean() if stat == "mean" else np.percentile(b, 95)
                cells.append(f"{v:.1f} ({v / bv:.2f}x)")
            print(row(cells, widths))
    eb = np.mean(empty_t[base])
    print()
    print(f"Frames with no code ({len(empty_t[base])}: real photos with codes erased + empty counter scenes): "
          f"plain zxing-cpp {eb:.2f} ms; ours (decode) {np.mean(empty_t['ours (decode)']):.2f} ms "
          f"({np.mean(empty_t['ours (decode)']) / eb:.2f}x); ours (ungated) "
          f"{np.mean(empty_t['ours (ungated)']):.2f} ms ({np.mean(empty_t['ours (ungated)']) / eb:.2f}x)")
    print("Wrong reads on simulated frames (text differs from the payload): "
          + ", ".join(f"{n} {wrong[n]}" for n in names))
    print("FrameReader over a stream (presentation read within 15 frames = 0.5 s): "
          + ", ".join(f"{lv} {pct(stream[lv])}" for lv in LEVELS)
          + f"; mean {np.mean(times[base]['sim']):.1f} ms plain zxing vs reader per frame")


if __name__ == "__main__":
    raise SystemExit(main())
