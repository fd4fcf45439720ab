"""Reading the chip of a CCCD citizen-ID card (ICAO 9303 eMRTD): access, files, verification."""
