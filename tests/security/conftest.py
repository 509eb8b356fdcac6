"""Fixtures for the security suite live in tests/conftest.py; this file only marks the
folder as one package of tests (pytest collects it like the others)."""
