"""scanner-agent: the software of a hospital check-in station.

Data flow, one sub-package per step:
capture -> decode -> cards -> checkin -> feedback / outbox -> mqtt.
"""

__version__ = "0.1.0"
