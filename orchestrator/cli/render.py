"""Human renderings of result objects (rich tables and trees) and graph formats."""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from orchestrator.api import (
    CopyStep,
    DowngradeStep,
    GraphResult,
    NodeId,
    PlanResult,
    RevertCopyStep,
    ServiceInfo,
    StatusResult,
    UpgradeStep,
    sql_dialects,
)


def short(node: str, n: int = 12) -> str:
    ref = NodeId.parse(node)
    return f"{ref.service}@{ref.revision[:n]}" if ref.revision else node


def services_table(rows: list[ServiceInfo]) -> Table:
    table = Table(title="Services", title_justify="left")
    for col in ("service", "heads", "revisions", "script location", "env"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.name,
            ", ".join(r.heads) or "(empty)",
            str(r.revisions),
            Text(r.script_location),
            "built-in" if r.builtin_env else "env.py",
        )
    return table


def graph_tree(result: GraphResult) -> Tree:
    g = result.graph
    title = "Migration graph" + (f" (env {result.env}: [green]applied[/] / [yellow]pending[/])" if result.env else "")
    root = Tree(title)
    for name, svc in g.services.items():
        branch = root.add(f"[bold]{name}[/]  ({len(svc.revisions)} revisions, head {', '.join(svc.heads)})")
        for rev in svc.revisions:
            label = Text()
            if result.pending is not None:
                pending = rev.node in result.pending
                label.append("○ " if pending else "● ", style="yellow" if pending else "green")
            label.append(rev.revision, style="cyan")
            label.append(f"  {rev.message}")
            if len(rev.down_revisions) > 1:
                label.append(f"  (merge of {', '.join(rev.down_revisions)})", style="dim")
            node = branch.add(label)
            for req in g.cross_requires.get(rev.node, ()):
                node.add(Text(f"requires {req}", style="magenta"))
    if g.copies:
        copies = root.add("[bold]copies[/]")
        for cnode, spec in g.copies.items():
            label = Text()
            if result.pending is not None:
                pending = cnode in result.pending
                label.append("○ " if pending else "● ", style="yellow" if pending else "green")
            label.append(f"{cnode}", style="cyan")
            label.append(f"  {spec.source}.{spec.table} -> {spec.target}.{spec.target_table}")
            node = copies.add(label)
            for p in g.predecessors(cnode):
                node.add(Text(f"after {p}", style="magenta"))
            for s in g.successors(cnode):
                node.add(Text(f"before {s}", style="magenta"))
    return root


def _mid(node: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", node)


def _esc(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")


def graph_mermaid(result: GraphResult) -> str:
    g = result.graph
    lines = ["flowchart TD"]
    for name, svc in g.services.items():
        lines.append(f'  subgraph {_mid("svc_" + name)}["{name}"]')
        for rev in svc.revisions:
            lines.append(f'    {_mid(rev.node)}["{rev.revision[:12]}<br/>{_esc(rev.message)}"]')
        lines.append("  end")
    for cnode, spec in g.copies.items():
        lines.append(f'  {_mid(cnode)}[/"{cnode}<br/>{spec.source}.{spec.table} to {spec.target}"/]')
    for e in g.edges():
        arrow = "-->" if e.kind in ("down_revision", "depends_on") else "-.->"
        label = "" if e.kind == "down_revision" else f"|{e.kind}|"
        lines.append(f"  {_mid(e.source)} {arrow}{label} {_mid(e.target)}")
    if result.pending is not None:
        lines.append("  classDef pending fill:#fef3c7,stroke:#d97706")
        lines.append("  classDef applied fill:#dcfce7,stroke:#16a34a")
        pending = [_mid(n) for n in g.order() if n in result.pending]
        applied = [_mid(n) for n in g.order() if n not in result.pending]
        if pending:
            lines.append(f"  class {','.join(pending)} pending")
        if applied:
            lines.append(f"  class {','.join(applied)} applied")
    return "\n".join(lines) + "\n"


def graph_dot(result: GraphResult) -> str:
    g = result.graph
    lines = ["digraph migrate {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    for name, svc in g.services.items():
        lines.append(f'  subgraph "cluster_{name}" {{')
        lines.append(f'    label="{name}";')
        for rev in svc.revisions:
            attrs = f'label="{rev.revision[:12]}\\n{_esc(rev.message)}"'
            if result.pending is not None:
                attrs += ", style=filled, fillcolor=" + ('"#fef3c7"' if rev.node in result.pending else '"#dcfce7"')
            lines.append(f'    "{rev.node}" [{attrs}];')
        lines.append("  }")
    for cnode, spec in g.copies.items():
        attrs = f'shape=cds, label="{cnode}\\n{spec.source}.{spec.table} -> {spec.target}"'
        if result.pending is not None:
            attrs += ", style=filled, fillcolor=" + ('"#fef3c7"' if cnode in result.pending else '"#dcfce7"')
        lines.append(f'  "{cnode}" [{attrs}];')
    for e in g.edges():
        style = "" if e.kind == "down_revision" else f' [style=dashed, label="{e.kind}"]'
        lines.append(f'  "{e.source}" -> "{e.target}"{style};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def status_table(result: StatusResult) -> Table:
    table = Table(title=f"Status of env {result.env}", title_justify="left")
    for col in ("service", "database", "current", "head", "pending"):
        table.add_column(col, overflow="fold")
    for s in result.services:
        current = ", ".join(s.current) if s.current else "(nothing applied)"
        style = "green" if s.pending == 0 else "yellow"
        table.add_row(s.service, Text(s.database), current, ", ".join(s.heads), Text(str(s.pending), style=style))
    return table


def status_extra(result: StatusResult) -> list[str]:
    lines = []
    if result.pending_copies:
        lines.append("pending copies: " + ", ".join(result.pending_copies))
    for f in result.following_copies:
        lag = "its change capture is missing" if f.lag is None else f"lag {f.lag} change(s) waiting"
        lines.append(f"following: copy:{escape(f.copy)} {escape(f.source)} -> {escape(f.target)}, {lag}")
    if result.last_run:
        r = result.last_run
        lines.append(f"last run: {r['id']} {r['kind']} {r['outcome']} at {r.get('finished') or r.get('started')}")
    if result.interrupted_run:
        r = result.interrupted_run
        last = r.get("last_step") or {}
        step = f"; last step {last.get('node')} ({last.get('status')})" if last else ""
        lines.append(
            f"[bold red]interrupted {escape(r['kind'])} run[/]: {escape(r['id'])} started {r['started']} "
            f"by {escape(r.get('holder') or '?')}{escape(step)}"
        )
        if r.get("message"):
            lines.append(escape(r["message"]))
    if result.lock:
        lk = result.lock
        lines.append(
            f"lock held by run {lk.get('run_id')} ({lk.get('holder')}, since {lk.get('since')}; {lk.get('liveness')})"
        )
    return lines


def step_detail(step: Any) -> tuple[str, str, str]:
    if isinstance(step, UpgradeStep):
        return "upgrade", step.message, ", ".join(short(r) for r in step.requires)
    if isinstance(step, DowngradeStep):
        return "downgrade", f"{step.message} ({step.note})" if step.noop else step.message, ""
    if isinstance(step, CopyStep):
        return "copy", f"{step.source}.{step.table} -> {step.target}.{step.target_table}", ""
    if isinstance(step, RevertCopyStep):
        return "revert copy", f"{step.target}.{step.target_table} -> back to {step.source}.{step.table}", ""
    return step.kind, "", ""


def plan_table(result: PlanResult, title: str | None = None) -> Table:
    plan = result.plan
    table = Table(title=title or f"Plan for env {plan.env} ({len(plan.steps)} steps)", title_justify="left")
    for col in ("#", "step", "kind", "what", "requires"):
        table.add_column(col)
    estimates = dict(result.estimates)
    for i, step in enumerate(plan.steps, 1):
        kind, what, requires = step_detail(step)
        if step.id in estimates and estimates[step.id] is not None:
            what += f" (~{estimates[step.id]:,} rows)"
        # Text, not markup: a message like "add [email] column" must print as written
        table.add_row(str(i), Text(short(step.id)), kind, Text(what), Text(requires))
    return table


def plan_sql_text(result: PlanResult) -> str:
    chunks = [
        f"-- {service}: rendered offline for {' and '.join(dialects)}"
        for service, dialects in sql_dialects(result.sql).items()
    ]
    chunks += [""] if chunks else []
    for rendered in result.sql:
        on = f" ({rendered.dialect})" if rendered.dialect else ""
        chunks.append(f"-- ===== {rendered.step_id}{on} =====")
        if rendered.error:
            chunks.append(f"-- {rendered.error}")
        else:
            chunks.append((rendered.sql or "").rstrip())
        chunks.append("")
    revisions = sum(1 for r in result.sql if r.revision)
    unrendered = sum(1 for r in result.sql if r.unrendered)
    if unrendered:
        chunks.append(f"-- {unrendered} of {revisions} revision step(s) could not be rendered offline (see above)")
    else:
        chunks.append(f"-- all {revisions} revision step(s) rendered offline; 0 could not be rendered")
    return "\n".join(chunks) + "\n"


def history_tree(runs: list[dict[str, Any]]) -> Tree:
    root = Tree("Runs (newest first)")
    if not runs:
        root.add("no runs yet")
    colors = {"succeeded": "green", "rolled_back": "yellow", "failed": "red", "needs_attention": "bold red"}
    for run in runs:
        color = colors.get(run["outcome"], "cyan")
        extra = f", undone by {run['undone_by']}" if run.get("undone_by") else ""
        extra += f", undoes {run['undoes_run']}" if run.get("undoes_run") else ""
        branch = root.add(
            f"[bold]{run['id']}[/] {run['kind']} [{color}]{run['outcome']}[/] "
            f"{run['started']} by {run['holder']}{extra}"
        )
        if run.get("error"):
            branch.add(Text(run["error"], style="red"))
        for s in run["steps"]:
            took = f" {s['seconds']:.2f}s" if s.get("seconds") is not None else ""
            rows = f" {s['rows']:,} rows" if s.get("rows") is not None else ""
            line = Text(f"{s['seq']:>3}. {s['node']} {s['kind']} {s['status']}{took}{rows}")
            if s.get("kind") == "stamp" and "after" in s:
                line.append(f"  {', '.join(s['before']) or 'base'} -> {', '.join(s['after']) or 'base'}")
            if s.get("error"):
                line.append(f"  {s['error']}", style="red")
            step = branch.add(line)
            for statement in s.get("statements") or ():
                step.add(Text(f"may remain: {statement}", style="yellow"))
    return root
