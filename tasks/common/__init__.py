"""Shared building blocks: settings, gates, audit log, crypto, storage, local stack."""
