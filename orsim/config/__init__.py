"""orsim.config."""
