"""Where models and training jobs are kept: a local directory (SQLite for the jobs) or PostgreSQL.

`model/` is the model and its runtime; this package keeps versions, the active pointer and the
job queue, and imports `model` only to read and write artifacts.
"""
