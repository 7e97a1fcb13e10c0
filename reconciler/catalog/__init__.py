"""The catalog behind its interface: the protocols the app uses (port), and their PostgreSQL implementation (postgres/)."""
