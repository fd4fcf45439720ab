"""decode: QR codes from camera frames of phone screens (zxing-cpp + OpenCV preprocessing)."""

from agent.decode.decoder import SECOND_STAGE, Code, DecodeResult, FrameReader, baseline, decode, decode_with
from agent.decode.strategies import DEFAULT_ORDER, STRATEGIES, STREAM_ORDER

__all__ = ["SECOND_STAGE", "Code", "DecodeResult", "FrameReader", "baseline", "decode", "decode_with",
           "DEFAULT_ORDER", "STRATEGIES", "STREAM_ORDER"]
