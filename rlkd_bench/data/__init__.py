"""Bundled data (teacher traces, package data) and the seeded synthetic generator (synthetic.py)."""
