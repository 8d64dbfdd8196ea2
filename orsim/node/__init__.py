"""orsim.node."""
