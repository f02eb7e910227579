"""The `sandbox` command-line client of sandboxd."""
