"""Plans, apply results and audit entries as text, markdown and JSON; never prints."""
