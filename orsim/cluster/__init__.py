"""orsim.cluster."""
