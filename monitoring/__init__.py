"""monitoring adapters."""
