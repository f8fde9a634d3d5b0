"""Tests on production services (PostgreSQL, Prefect and MLflow servers, a work pool)."""
