"""Self-contained HTML for subject-access reports (face thumbnails inlined, no external resources)."""

from __future__ import annotations

import base64
import html


def access_html(report: dict, thumbnails: dict[int, bytes]) -> str:
    """Render an access report (as built by FaceIndex.access) with JPEG thumbnails by face id."""
    e = html.escape
    rows = []
    for f in report["faces"]:
        thumb = thumbnails.get(f["face_id"])
        img = (f'<img alt="face {f["face_id"]}" src="data:image/jpeg;base64,{base64.b64encode(thumb).decode()}">'
               if thumb else '<span class="missing">source image not readable</span>')
        rows.append(
            f"<tr><td>{img}</td><td>{f['face_id']}</td><td>{f['similarity']:.4f}<br><small>FMR {f['fmr']:.1e}"
            f"</small></td><td>{e(f['source'])}<br><small>basis: {e(f['basis'])}</small></td>"
            f"<td class=path>{e(f['file'])}</td><td>{e(','.join(map(str, f['box'])))}</td><td>{e(f['added_at'])}</td></tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="7">No face held matches the person.</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Subject access report {e(report['reference'])}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #1d232b; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ border-bottom: 1px solid #dde2e8; padding: .4rem;
text-align: left; vertical-align: top; }} img {{ width: 96px; height: 96px; border-radius: 6px; }}
.path {{ word-break: break-all; font-family: ui-monospace, monospace; font-size: 13px; }}
.note {{ background: #f4f7fb; border-left: 4px solid #3d6fb6; padding: .6rem 1rem; }} .missing {{ color: #a33; }}
</style></head><body>
<h1>Subject access report</h1>
<p><b>Reference:</b> {e(report['reference'])} &nbsp; <b>Generated:</b> {e(report['time'])} &nbsp;
<b>By:</b> {e(report['actor'])}</p>
<p class="note">These are the faces held in this collection whose similarity to the reference photos reached the
access threshold (similarity &ge; {report['threshold']:.4f}, a false-match rate of {report['threshold_fmr']:.0e}).
Matching is deliberately inclusive: some faces may belong to other people and should be reviewed.</p>
<p><b>{len(report['faces'])}</b> faces in <b>{report['images']}</b> images, from {report['templates']} reference
face(s). The reference photos themselves are not kept.</p>
<table><thead><tr><th>Face</th><th>Id</th><th>Similarity</th><th>Source</th><th>Image</th><th>Box</th>
<th>Added</th></tr></thead><tbody>
{body}
</tbody></table></body></html>
"""
