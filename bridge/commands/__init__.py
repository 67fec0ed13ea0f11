"""The command path: parse and decide (pure), step-up, replay and rate limits, and the pipeline."""
