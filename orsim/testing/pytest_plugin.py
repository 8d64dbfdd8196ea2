"""pytest plugin shipped with orsim (fixtures are added by the scenario/launcher work)."""
