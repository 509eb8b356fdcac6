"""Brokers move publications between nodes; they never decide who may see what."""
