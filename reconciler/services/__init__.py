"""The repository layer for ingestion-side code: one object at a time, with the services' rules and audit rows."""
