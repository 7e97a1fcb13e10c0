"""Use cases: planning, applying, importing, auditing — the I/O around the pure core."""
