"""`faceindex` accountability commands: opt-out, subject access, erasure, audit trail, sources, retention, policy,
API keys."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from .catalog import now
from .cli import _emit_json, _fail, _open, app, err, keys_app, out, state
from .errors import CatalogError, FaceIndexError
from .text import shown

optout_app = typer.Typer(help="The opt-out (do-not-index) registry.", no_args_is_help=True)
app.add_typer(optout_app, name="optout")
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
source_app = typer.Typer(help="Registered sources: legal basis, notice, retention.", no_args_is_help=True)
app.add_typer(source_app, name="source")
retention_app = typer.Typer(help="Delete what has outlived its source's retention period.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")
policy_app = typer.Typer(help="The data folder's policy (purposes, thresholds); changes are audited.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")


# --- opt-out, access, erase -------------------------------------------------------------------------------------
Photos = Annotated[list[Path], typer.Argument(help="one or more photos of the person (not kept)")]
Reference = Annotated[str, typer.Option("--reference", "-r", help="request reference, e.g. REQ-123")]


@optout_app.command("add")
def optout_add(photos: Photos, reference: Reference, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Register a person's opt-out: their indexed faces are deleted now and never indexed or returned again."""
    with _open() as fi:
        receipt = fi.optout_add(photos, reference)
    _receipt(receipt, as_json, f"opt-out {receipt['reference']} registered")


@optout_app.command("list")
def optout_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered opt-outs (references, dates, counts; never photos)."""
    with _open() as fi:
        rows = fi.optouts()
    if as_json:
        _emit_json(rows)
        return
    for r in rows:
        out.print(f"{shown(r['reference'])}  {r['created_at']}  by {shown(r['actor'])}  {r['templates']} template(s)  "
                  f"{r['receipt']['faces_removed']} faces removed", markup=False, highlight=False)
    if not rows:
        out.print("no opt-outs registered")


@optout_app.command("remove")
def optout_remove(reference: Annotated[str, typer.Argument(help="the opt-out's reference")]) -> None:
    """Withdraw an opt-out (audited). Faces deleted earlier are not restored."""
    with _open() as fi:
        fi.optout_remove(reference)
    out.print(f"opt-out {shown(reference)} withdrawn", markup=False, highlight=False)


@app.command()
def access(photos: Photos, reference: Reference,
           out_dir: Annotated[Path, typer.Option("--out", help="folder for the JSON and HTML reports")] = Path("."),
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Answer a subject access request: every face held that matches the person (JSON + HTML report). Recorded
    with the purpose "data-subject-request" under the request's reference."""
    with _open() as fi:
        report = fi.access(photos, reference, out_dir, purpose="data-subject-request")
    if as_json:
        _emit_json(report)
        return
    out.print(f"{len(report['faces'])} faces in {report['images']} images match; reports: "
              + ", ".join(report["files"]), markup=False, highlight=False)


@app.command()
def erase(photos: Photos, reference: Reference,
          out_dir: Annotated[Path | None, typer.Option("--out", help="also write the access reports here")] = None,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Access + deletion + opt-out in one step, with a receipt."""
    with _open() as fi:
        receipt = fi.erase(photos, reference, out_dir)
    _receipt(receipt, as_json, f"erased under {receipt['reference']}")


def _receipt(receipt: dict, as_json: bool, headline: str) -> None:
    if as_json:
        _emit_json(receipt)
        return
    out.print(f"{headline}: {receipt['faces_removed']} faces removed from {receipt['images_affected']} images at "
              f"{receipt['time']} (threshold similarity {receipt['threshold']}, FMR {receipt['threshold_fmr']:.0e}); "
              f"{receipt['templates']} face template(s) kept, no photos", markup=False, highlight=False)


# --- audit -------------------------------------------------------------------------------------------------------
@contextmanager
def _audit_files():
    """The catalog and the audit log's path and key, opened without the cross-check that refuses a broken log:
    the audit commands are how an operator looks at one. Only roles allowed to audit may."""
    from . import anchor
    from .catalog import open_catalog
    from .engine import audit_target
    from .policy import check_permission

    check_permission(state.settings.role, "audit")
    data = state.settings.resolved_data()
    if state.settings.catalog is None and not (data / "catalog.db").is_file():
        raise CatalogError(f"no data folder at {data} (no catalog.db)")
    catalog = open_catalog(state.settings.catalog or data / "catalog.db")
    try:
        yield catalog, audit_target(catalog, data), anchor.load_key(state.settings)
    finally:
        catalog.close()


@audit_app.command("verify")
def audit_verify(
    head: Annotated[str | None, typer.Option(help="anchored head SEQ:HASH kept elsewhere, to detect rewrites")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check the hash chain against the head the catalog recorded (and --head, if given); names the first bad
    record. Exit 1 when the log was tampered with, deleted, emptied or truncated."""
    from . import anchor

    expected = None
    if head:
        seq, _, digest = head.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise typer.BadParameter("--head must be SEQ:SHA256HEX")
        expected = (int(seq), digest)
    try:
        with _audit_files() as (catalog, path, key):
            res, log_head = anchor.verify(catalog, path, key, expected)
            anchored = anchor.read_anchor(catalog)
    except FaceIndexError as e:
        raise _fail(e) from e
    head_text = f"{log_head[0]}:{log_head[1]}" if log_head else None
    if as_json:
        _emit_json({"ok": res.ok, "records": res.records_checked, "first_bad_seq": res.first_bad_seq,
                    "problem": res.problem, "kind": res.kind, "head": head_text,
                    "anchored": f"{anchored[0]}:{anchored[1]}" if anchored else None})
    elif res.ok:
        out.print(f"audit log intact: {res.records_checked} records; head {head_text}", markup=False)
    else:
        err.print(f"audit log TAMPERED: {shown(res.problem)}", markup=False, highlight=False)
    if not res.ok:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the audit head SEQ:HASH for an external notary (a ticket, a signed mail, write-once storage);
    check it later with `audit verify --head SEQ:HASH`."""
    from . import anchor

    try:
        with _audit_files() as (catalog, path, key), anchor.open_audit(catalog, path, key) as log:
            seq, digest = log.head()
            mode = log.mode
    except FaceIndexError as e:
        raise _fail(e) from e
    if as_json:
        _emit_json({"head": f"{seq}:{digest}", "seq": seq, "hash": digest, "mode": mode,
                    "time": now()})
    else:
        out.print(f"{seq}:{digest}", markup=False, highlight=False)


@audit_app.command("reset")
def audit_reset(
    reason: Annotated[str, typer.Option(help="why the log is being reset (recorded in the new chain's first record)")],
) -> None:
    """Start a new audit chain after the log was found missing, emptied, truncated or rewritten (or to switch to a
    keyed chain). The old file is kept aside, and record 1 of the new chain names the old head and the reason.
    Stop the server first."""
    from . import anchor
    from .policy import check_permission

    try:
        check_permission(state.settings.role, "policy")
        with _audit_files() as (catalog, path, key):
            rec = anchor.reset(catalog, path, key, reason, actor=state.settings.actor, role=state.settings.role)
    except FaceIndexError as e:
        raise _fail(e) from e
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    kept = rec.details.get("old_log_kept_as")
    out.print(f"new audit chain started: record {rec.seq} ({rec.action}) {rec.hash}; the catalog had anchored "
              f"{rec.details.get('anchored_head') or 'nothing'}; found {shown(rec.details.get('found'))}"
              + (f"; old log kept as {kept}" if kept else ""), markup=False, highlight=False)


@audit_app.command("show")
def audit_show(
    case: Annotated[str | None, typer.Option("--case")] = None,
    actor: Annotated[str | None, typer.Option(help="who: a name also selects that name's API keys")] = None,
    action: Annotated[str | None, typer.Option()] = None,
    since: Annotated[datetime | None, typer.Option(help="ISO date or time (UTC)")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Audit records for auditors, filtered by case, actor, action and time."""
    with _open() as fi:
        rows = fi.audit_show(case_ref=case, actor=actor, action=action, since=since, limit=limit)
    if as_json:
        _emit_json([r.as_dict() for r in rows])
        return
    for r in rows:
        d = r.details
        extra = f"  results {sum(len(x) for x in d['results'])}" if isinstance(d.get("results"), list) else ""
        # Stored text is escaped: whatever an older version let in, no escape code reaches the terminal.
        out.print(f"#{r.seq} {shown(r.time)} {shown(r.actor)} ({shown(r.role)}) {shown(r.action)}  "
                  f"purpose={shown(r.purpose or '-')} case={shown(r.case_ref or '-')}{extra}",
                  markup=False, highlight=False)


# --- sources, retention, policy ------------------------------------------------------------------------------------
def _days(text: str | None) -> int | None:
    if text is None:
        return None
    t = text.strip().lower()
    units = {"d": 1, "w": 7, "m": 30, "y": 365}
    try:
        return int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)
    except ValueError:
        raise typer.BadParameter(f"retention {text!r}: use e.g. 365d, 12w, 6m, 2y or 0 (keep)") from None


@source_app.command("add")
def source_add(
    name: str,
    basis: Annotated[str | None, typer.Option(help="legal basis: consent, owner, contract, public-interest, ...")] = None,
    retention: Annotated[str | None, typer.Option(help="keep files this long, e.g. 365d, 6m, 2y; 0 = keep")] = None,
    notice: Annotated[str | None, typer.Option(help="licence or notice text")] = None,
) -> None:
    """Register a source (or change its basis, retention or notice)."""
    with _open() as fi:
        s = fi.set_source(name, basis, _days(retention), notice)
    out.print(f"source {shown(s['name'])}: basis {s['basis']}, retention "
              f"{str(s['retention_days']) + ' days' if s['retention_days'] else 'none'}", markup=False)


@source_app.command("list")
def source_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Sources with basis, retention, files and next expiry."""
    with _open() as fi:
        rows = fi.sources()
    if as_json:
        _emit_json(rows)
        return
    for s in rows:
        out.print(f"{shown(s['name'])}: basis {shown(s['basis'])}, {s['files']} files, retention "
                  f"{s['retention_days'] or '-'} days, next expiry {s['next_expiry'] or '-'}", markup=False)


@retention_app.command("apply")
def retention_apply(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Delete files older than their source's retention (safe to run from cron)."""
    with _open() as fi:
        res = fi.retention_apply()
    if as_json:
        _emit_json(res)
    else:
        out.print(f"expired: {res['files']} files, {res['images']} images, {res['faces']} faces deleted", markup=False)


@policy_app.command("show")
def policy_show() -> None:
    """The policy in force."""
    with _open() as fi:
        _emit_json(fi.policy.model_dump())


@policy_app.command("set")
def policy_set(key: str, value: str) -> None:
    """Change one policy field (JSON value, e.g. true, 0.001, ["investigation"]); audited."""
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    with _open() as fi:
        new = fi.set_policy(**{key: parsed})
    out.print(f"policy {key} = {json.dumps(getattr(new, key))}", markup=False)


# --- API keys (the keys group is made in cli.py, where its place among the commands is set) -----------------------
@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, investigator, auditor or privacy-officer")],
    name: Annotated[str, typer.Option(help="who or what uses the key (shown in the audit trail)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an API key; its token is printed once and only its hash is stored."""
    with _open() as fi:
        key_id, token = fi.create_key(name, role)
    if as_json:
        _emit_json({"id": key_id, "name": name, "role": role, "token": token})
    else:
        out.print(f"key {key_id} ({role}, {shown(name)}): {token}\nstore it now: it cannot be shown again", markup=False)


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """API keys (never their tokens)."""
    with _open() as fi:
        rows = fi.api_keys()
    if as_json:
        _emit_json(rows)
        return
    for k in rows:
        state = f"revoked {k['revoked_at']}" if k["revoked_at"] else f"last used {k['last_used_at'] or 'never'}"
        out.print(f"{k['id']}  {k['role']:<16} {shown(k['name'])}  fi_{k['prefix']}_…  {state}", markup=False)


@keys_app.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke an API key at once."""
    with _open() as fi:
        fi.revoke_key(key_id)
    out.print(f"key {key_id} revoked", markup=False)
