"""orsim.tserver."""
