"""orsim.confserv."""
