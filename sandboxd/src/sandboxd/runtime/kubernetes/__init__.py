"""The Kubernetes runtime: one TTL-bound namespace per sandbox holding only its forks."""
