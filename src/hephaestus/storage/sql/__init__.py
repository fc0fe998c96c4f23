"""SQL text of the storage adapters, one directory per database, kept as package data."""
