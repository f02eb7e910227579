"""Persistence: desired state and observed status in SQL (SQLite by default, PostgreSQL for HA)."""
