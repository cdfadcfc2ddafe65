"""The plan's JSON form (``migrate-plan/1``) and its fingerprint. Pure."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from orchestrator.core.model import (
    NOOP_NOTES,
    CopyStep,
    DowngradeStep,
    NoopKind,
    Plan,
    RevertCopyStep,
    Step,
    UpgradeStep,
)
from orchestrator.errors import PlanConflictError

FORMAT = "migrate-plan/1"


def _down_json(down: str | tuple[str, ...] | None) -> str | list[str] | None:
    if down is None or isinstance(down, str):
        return down
    return list(down)


def step_to_json(step: Step) -> dict[str, Any]:
    if isinstance(step, UpgradeStep):
        return {
            "id": step.id,
            "kind": "upgrade",
            "service": step.service,
            "revision": step.revision,
            "down_revision": _down_json(step.down_revision),
            "message": step.message,
            "requires": list(step.requires),
        }
    if isinstance(step, DowngradeStep):
        return {
            "id": step.id,
            "kind": "downgrade",
            "service": step.service,
            "revision": step.revision,
            "down_revision": _down_json(step.down_revision),
            "message": step.message,
            **({"noop": True, "noop_kind": step.noop, "note": step.note} if step.noop else {}),
        }
    out: dict[str, Any] = {
        "id": step.id,
        "kind": step.kind,
        "name": step.name,
        "source": step.source,
        "target": step.target,
        "table": step.table,
    }
    if step.target_table != step.table:
        out["target_table"] = step.target_table
    return out


def _fingerprint_body(plan: Plan) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "env": plan.env,
        "direction": plan.direction,
        "state": plan.state_dict(),
        "steps": [step_to_json(s) for s in plan.steps],
        "checksums": dict(plan.checksums),
        "extra": dict(plan.extra),
    }


def fingerprint(plan: Plan) -> str:
    body = json.dumps(_fingerprint_body(plan), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "env": plan.env,
        "created": plan.created,
        "fingerprint": plan.fingerprint,
        "direction": plan.direction,
        "state": plan.state_dict(),
        "completed_copies": list(plan.completed_copies),
        "checksums": dict(plan.checksums),
        "steps": [step_to_json(s) for s in plan.steps],
    }


def _down_from_json(value: Any) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return value
    return tuple(value)


def _noop_from_json(data: dict[str, Any]) -> NoopKind:
    kind = data.get("noop_kind", "") if data.get("noop") else ""
    if kind not in NOOP_NOTES:
        return ""
    return "empty" if kind == "empty" else "merge"


def step_from_json(data: dict[str, Any], checksums: dict[str, str]) -> Step:
    kind = data["kind"]
    if kind == "upgrade":
        return UpgradeStep(
            service=data["service"],
            revision=data["revision"],
            down_revision=_down_from_json(data["down_revision"]),
            message=data["message"],
            requires=tuple(data.get("requires", ())),
            checksum=checksums.get(data["id"], ""),
        )
    if kind == "downgrade":
        return DowngradeStep(
            service=data["service"],
            revision=data["revision"],
            down_revision=_down_from_json(data["down_revision"]),
            message=data["message"],
            checksum=checksums.get(data["id"], ""),
            noop=_noop_from_json(data),
        )
    cls = CopyStep if kind == "copy" else RevertCopyStep
    if kind not in ("copy", "revert_copy"):
        raise ValueError(f"unknown step kind {kind!r}")
    return cls(
        name=data["name"],
        source=data["source"],
        target=data["target"],
        table=data["table"],
        target_table=data.get("target_table", data["table"]),
    )


def plan_from_json(data: Any, source: str) -> Plan:
    """Rebuild a plan from its file; an edited or malformed file is a conflict (exit 3)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PlanConflictError(f"{source}: not a {FORMAT} plan file")
    try:
        checksums = {str(k): str(v) for k, v in data["checksums"].items()}
        completed = ",".join(data.get("completed_copies", []))
        plan = Plan(
            env=str(data["env"]),
            state=tuple(sorted((s, tuple(sorted(h))) for s, h in data["state"].items())),
            steps=tuple(step_from_json(s, checksums) for s in data["steps"]),
            checksums=tuple(sorted(checksums.items())),
            direction=data.get("direction", "upgrade"),
            created=str(data.get("created", "")),
            fingerprint=str(data["fingerprint"]),
            extra=(("completed_copies", completed),),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanConflictError(
            f"{source}: the plan file is malformed ({type(exc).__name__}: {exc})",
            "make a new one with `migrate plan --out`",
        ) from exc
    if fingerprint(plan) != plan.fingerprint:
        raise PlanConflictError(
            f"{source}: the plan file was edited after it was made (its fingerprint does not match)",
            "make a new one with `migrate plan --out`",
        )
    return plan
