"""components adapters."""
