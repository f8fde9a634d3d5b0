"""Separation of duties: role keys (`roles`), signed approvals (`approvals`), the
champion as a signed record in the bucket (`champion_record`), the two-person rule
and the promotion itself (`promotion`), and the Prefect pause (`pause`)."""
