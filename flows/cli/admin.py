"""`secure-pipeline keys` (the keyring, audited) and `secure-pipeline local` (the
embedded services)."""

from __future__ import annotations

import argparse
import json

from flows.cli.common import EXIT_OK, emit, say
from tasks.common.settings import ConfigError, Settings
from tasks.localstack import stack


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """`keys init` (first setup), `keys rotate KIND` (audited), `keys status`."""
    from tasks.common.audit import AuditLog
    from tasks.trust import keys

    kd, audit = settings.keys_dir, AuditLog(settings.audit_path)
    if args.action == "init":
        ring = keys.create(kd)
        audit.append("keys.created", keys=keys.key_ids(ring), by="keys init")
        say(f"created the pipeline's keys under {kd}: back this directory up now")
    elif args.action == "rotate":
        if args.kind is None:
            raise ConfigError(
                "say which key to rotate: `keys rotate signing` or `keys rotate master`"
            )
        old, new = keys.rotate(kd, args.kind)
        audit.append("keys.rotated", kind=args.kind, retired=old, active=new)
        say(f"rotated the {args.kind} key: {old[:24]} retired (kept to verify), {new[:24]} active")
    ring = keys.require(kd)
    emit(json.dumps({k: ring[k] for k in keys.FILES}, indent=2))
    return EXIT_OK


def cmd_local(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "up":
        info = stack.local_up(settings, ui=not args.no_ui)
    elif args.action == "down":
        info = stack.local_down(settings)
    else:
        info = stack.local_status(settings)
    emit(json.dumps(info, indent=2, default=str))
    return EXIT_OK
