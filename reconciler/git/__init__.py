"""Read-only git facts: the repository, its history, blobs from its object store, and attribution."""
