"""The results database (DuckDB): schema and migrations, connection discipline, the one writer.

Owns every table, view and SQL statement (`sql/`). Imports only `pipeline.errors`: every
stage imports the store, the store imports no stage.
"""
