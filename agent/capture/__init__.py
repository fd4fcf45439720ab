"""capture: filled in by later steps of the station."""
