"""sandboxd's data plane: the baggage-routing proxy (its own issue builds it out)."""
