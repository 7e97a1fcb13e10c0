"""Everything PostgreSQL: connections, the embedded server, migrations and the repository layer."""
