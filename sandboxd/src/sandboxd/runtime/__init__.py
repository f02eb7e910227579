"""Runtimes: where a sandbox's forks actually run (local processes; Kubernetes later)."""
