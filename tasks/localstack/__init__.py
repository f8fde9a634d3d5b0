"""The embedded default stack: SeaweedFS over TLS with its identities and bucket, the
Prefect and MLflow UI servers, and the supervisor that starts and stops them. Tooling
for running locally, not a pipeline stage: production points the settings at real
services instead."""
