"""The reconciler: converges each sandbox from its row (desired) and the runtime (observed)."""
