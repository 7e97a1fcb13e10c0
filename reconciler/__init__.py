"""reconciler: run a data platform's catalog from YAML manifests kept in git."""

__version__ = "0.1.0"
