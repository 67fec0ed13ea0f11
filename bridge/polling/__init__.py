"""Polling within a rate budget: persisted budget, pure policy, breaker, and the scheduler glue."""
