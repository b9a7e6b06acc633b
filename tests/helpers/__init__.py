"""Helpers shared by the test suites (one place, not copied)."""
