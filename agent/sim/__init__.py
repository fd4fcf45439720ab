"""Synthetic test material: card payloads and camera frames of a phone screen showing them.

Used by the tests, the benchmarks and the bundled demo; never by the station itself.
"""
