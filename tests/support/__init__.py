"""Helpers for tests that drive a real server: a load generator, its processes, results files,
and a real PostgreSQL server (postgres.py).

bench/ reuses them (never the other way round), so a benchmark and a test load and
inspect a server the same way.
"""
