"""The run kernel every stage uses: settings, gates and their catalog, run context, report,
audit log and its anchors, MLflow tracking and registry, the S3 client, file helpers."""
