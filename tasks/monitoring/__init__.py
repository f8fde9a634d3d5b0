"""Watching a deployed model: drift of new data from the signed reference profile,
the champion's integrity, the audit chain, quality; metrics, a dashboard, a page.

The shapes every part shares live in `tasks.monitoring.types`."""
