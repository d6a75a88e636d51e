"""serving adapters."""
