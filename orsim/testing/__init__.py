"""Public test helpers for orsim users and orsim's own tests."""
