"""WeChat's CNN QR decoder as a benchmark peer. Runs in its own virtual environment
(opencv-contrib-python-headless cannot live beside opencv-python-headless).

stdin: one image path per line. stdout: one JSON line per image, {"codes": [corners...], "ms": F}.
"""

import json
import sys
import time
from pathlib import Path

import cv2

models = Path(sys.argv[1])
detector = cv2.wechat_qrcode.WeChatQRCode(str(models / "detect.onnx"), str(models / "sr.onnx"))
for line in sys.stdin:
    path = line.rstrip("\n")
    gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    t0 = time.perf_counter()
    texts, points = detector.detectAndDecode(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    ms = (time.perf_counter() - t0) * 1000
    codes = [{"text": t, "corners": [[float(x), float(y)] for x, y in p.reshape(-1, 2)[:4]]}
             for t, p in zip(texts, points) if t]
    print(json.dumps({"codes": codes, "ms": ms}), flush=True)
