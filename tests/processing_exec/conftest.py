"""The executor's tests use the shared PostgreSQL fixtures of ``tests/conftest.py``."""
