"""Scheduled jobs: the expiry sweep, the weekly access review, signed audit checkpoints."""
