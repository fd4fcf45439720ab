"""Reading the chip of a Vietnamese chip citizen ID (CCCD), an ICAO Doc 9303 eMRTD: access
(BAC/PACE), secure messaging, the LDS files, passive and active authentication."""
