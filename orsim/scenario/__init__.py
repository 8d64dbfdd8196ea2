"""orsim.scenario."""
