"""The REST API (v1). It records intent in the store and wakes the reconciler; it never
touches a runtime (an import-linter contract holds it to that)."""
