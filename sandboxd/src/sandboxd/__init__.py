"""sandboxd control plane."""
