"""The pure checks behind the gates (ingestion, PII, poisoning,
the signed reference profile, privacy, adversarial robustness, supply chain, bucket
posture), Great Expectations helpers, and the builders of trusted references."""
