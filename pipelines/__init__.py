"""pipelines adapters."""
