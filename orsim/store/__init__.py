"""orsim.store."""
