"""The registry database (engine, migrations, tables, versions and aliases) and the artifact store."""
