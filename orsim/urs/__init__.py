"""orsim.urs."""
