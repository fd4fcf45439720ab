"""decode: filled in by later steps of the station."""
