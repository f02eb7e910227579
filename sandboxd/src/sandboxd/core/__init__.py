"""The pure core: specs, the catalog, naming, durations and the route table. No I/O here."""
