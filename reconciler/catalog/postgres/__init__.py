"""The catalog on PostgreSQL: connections, the embedded server, migrations, reading, writing, locks, the audit log's SQL."""
