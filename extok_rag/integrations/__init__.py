"""Framework integrations, one thin module per framework (only that module imports it)."""
