"""One module per group of commands, each with its own `Typer()` merged into the root app."""
