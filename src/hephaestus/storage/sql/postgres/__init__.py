"""The PostgreSQL schema migrations (`NNNN_name.sql`) and named queries (`queries.sql`)."""
