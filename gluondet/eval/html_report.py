"""``RUN/report.html``: one self-contained page about a run, built from the run folder alone
(read through ``RunFolder``, the one owner of its files).

It shows what the run folder holds: the model, dataset and classes, the best checkpoint, the
training curves (``curves.png``) and the last rows of ``metrics.csv``, then for each
``eval-<split>/`` folder written by ``gluondet eval`` the per-class table, the PR, F1, confusion and
error-breakdown pictures and the mosaics of the worst images, and the resolved ``config.yaml``.
Every picture is embedded as a data URI, so the page needs no network, no server and no other
file: it can be mailed or copied alone. No script runs in it; the layout is one column on a phone
and a grid on a desktop. Each picture carries ``data-picture`` (its path in the run folder).
"""
import base64
import csv
import html
import io
import json
from pathlib import Path

import yaml

from ..errors import GluondetError
from ..fileio import atomic_write_text
from ..run_folder import RunFolder
from ..run_layout import CONFIG_FILE, CURVES_FILE, DIAGNOSIS_FILE, METRICS_FILE
from ..viz import font_path
from .folder import ANALYSIS_FILE, PICTURES

REPORT_FILE = "report.html"
METRICS_ROWS = 8  # last rows of metrics.csv shown
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
WIDE_PICTURES = ("confusion", "errors")  # two or more panels side by side: the full width
PICTURE_TITLES = {"pr": "Precision-recall", "f1": "F1 vs score threshold",
                  "confusion": "Confusion matrix", "errors": "Error breakdown (COCO analyze style)"}

STYLE = """
:root { color-scheme: light; }
body { font-family: gluondet-labels, system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK SC",
       "PingFang SC", "Microsoft YaHei", sans-serif; margin: 0; color: #1b1f24; background: #f6f7f9; }
main { max-width: 1200px; margin: 0 auto; padding: 12px; }
h1 { font-size: 1.4rem; word-break: break-all; } h2 { font-size: 1.2rem; margin-top: 2rem; }
section { background: #fff; border-radius: 8px; padding: 12px; margin: 12px 0;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.grid { display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(min(100%, 440px), 1fr)); }
figure { margin: 0; } figure.wide { grid-column: 1 / -1; } figcaption { font-size: .9rem; color: #555; margin: 4px 0; }
img { max-width: 100%; height: auto; display: block; border: 1px solid #e3e5e8; }
.scroll { overflow-x: auto; }
table { margin: 8px 0; border-collapse: collapse; font-size: .9rem; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e3e5e8; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
dt { color: #555; } dd { margin: 0; word-break: break-word; }
pre { font-size: .8rem; overflow-x: auto; background: #f0f1f3; padding: 8px; }
section.alarm { background: #fff4f2; border-left: 6px solid #c62828; }
section.alarm h2 { color: #b71c1c; margin-top: 0; }
"""


def write_report(run_dir):
    """Write ``RUN/report.html`` from the run folder; returns its path."""

    run = RunFolder.open(run_dir)
    path = run.path / REPORT_FILE
    atomic_write_text(path, build_page(run))
    return path


def build_page(run):
    """The page of a ``RunFolder`` as one HTML string."""
    run_dir = run.path
    diagnosis = _diagnosis(run_dir)
    parts = [_overview(run), _training(run_dir) + _rollbacks(run)]
    for folder in sorted(p.parent for p in run_dir.glob(f"eval-*/{ANALYSIS_FILE}")):
        parts.append(_evaluation(run_dir, folder))
    if len(parts) == 2:
        parts.append("<section><h2>Evaluation</h2><p>No evaluation yet: run <code>gluondet eval "
                     f"{_e(run_dir)} --split val</code>, then <code>gluondet report {_e(run_dir)}"
                     "</code> again.</p></section>")
    config = yaml.safe_dump(run.config, allow_unicode=True, sort_keys=False)
    parts.append(f"<section><h2>Configuration</h2><details><summary>{CONFIG_FILE}</summary>"
                 f"<pre>{_e(config)}</pre></details></section>")
    body = f"<h1>{_e(run_dir.name)}</h1>{diagnosis}{''.join(parts)}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(run_dir.name)}: gluondet report</title>"
            f"<style>{label_font_css(body)}{STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def label_font_css(text):
    """An @font-face rule embedding gluondet's label font cut down (fontTools' subsetter) to the
    non-ASCII characters of ``text``, so names such as 安全帽 read on a machine without CJK
    fonts too; "" when the text is ASCII or the font cannot be subset."""
    from fontTools import subset
    from fontTools.ttLib import TTFont, TTLibError

    chars = sorted({ch for ch in text if ord(ch) > 127 and not ch.isspace()})
    path = font_path()
    if not chars or not path:
        return ""
    try:
        font = TTFont(path, fontNumber=0, lazy=False)
        subsetter = subset.Subsetter(subset.Options())
        subsetter.populate(unicodes=[ord(ch) for ch in chars])
        subsetter.subset(font)
        buffer = io.BytesIO()
        font.save(buffer)
    except (OSError, TTLibError):
        return ""  # the page still works; those names use the viewer's own fonts
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return ("@font-face { font-family: gluondet-labels; "
            f"src: url(data:font/otf;base64,{data}) format(\"opentype\"); }}\n")


def _overview(run):
    model = run.model_config
    dataset = run.config.get("dataset") or {}
    items = [("model", model.get("name", "?")), ("dataset", dataset.get("name", "?")),
             ("classes", ", ".join(run.classes))]
    best = run.best()
    if best:
        items.append(("best checkpoint", f"epoch {best.get('epoch')}, {best.get('metric', '')} "
                                         f"mAP {_num(best.get('map'))}"))
    last = run.last_state()
    if last and "epoch" in last:
        items.append(("last epoch", str(last["epoch"])))
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f"<section><h2>Run</h2><dl>{rows}</dl></section>"


def _diagnosis(run_dir):
    """The warning of a run that did not learn (``diagnosis.json``, gluondet.engine.not_learning),
    first on the page: before anyone reads its best checkpoint as a result."""
    doc = _read_json(run_dir / DIAGNOSIS_FILE)
    if not doc:
        return ""
    causes = "".join(f"<li>{_e(c)}</li>" for c in doc.get("causes") or [])
    found = (f"<p>Likely causes gluondet checked:</p><ul>{causes}</ul>" if causes else
             "<p>gluondet's checks (lr against the recipe, object size at the input, anchor fit, class "
             "balance) found no cause.</p>")
    return (f"<section class=\"alarm\" id=\"not-learning\" role=\"alert\"><h2>This run did not learn</h2>"
            f"<p>{_e(doc.get('summary', ''))} (found at epoch {_e(doc.get('epoch', '?'))}).</p>{found}"
            f"<p>From <code>{DIAGNOSIS_FILE}</code> in the run folder.</p></section>")


def _rollbacks(run):
    """The divergence guard's rollbacks (last.json), each with why and the lr it went on with."""
    events = (run.last_state() or {}).get("rollbacks") or []
    if not events:
        return ""
    rows = "".join(
        f"<tr><td>{_e(r.get('epoch'))}</td><td>{_e(r.get('iteration'))}</td><td>{_e(r.get('loss'))}</td>"
        f"<td>{_e(_short(r.get('value')))}</td><td>{_e(_short(r.get('level')))}</td><td>{_e(_short(r.get('lr')))}</td>"
        f"<td>x{_e(_short(r.get('lr_scale')))}</td><td>{_e(r.get('reason', ''))}</td></tr>" for r in events)
    return (f"<section id=\"rollbacks\"><h2>Divergence: {len(events)} rollback(s)</h2><p>Training diverged "
            "and went back to its last committed epoch with the lr halved each time (gluondet train "
            "--on-diverge).</p><div class=\"scroll\"><table><tr><th>epoch</th><th>iteration</th><th>loss</th>"
            "<th>value</th><th>recent level</th><th>lr</th><th>lr scale after</th><th>why</th></tr>"
            f"{rows}</table></div></section>")


def _training(run_dir):
    body = []
    if (run_dir / CURVES_FILE).is_file():
        body.append(_figure(run_dir, CURVES_FILE, "Training loss and validation mAP per epoch"))
    rows = _metrics_rows(run_dir / METRICS_FILE)
    if rows:
        head = "".join(f"<th>{_e(k)}</th>" for k in rows[0])
        cells = "".join("<tr>" + "".join(f"<td>{_e(_short(v))}</td>" for v in r.values()) + "</tr>"
                        for r in rows)
        body.append(f"<p>Last {len(rows)} rows of {METRICS_FILE}:</p>"
                    f"<div class=\"scroll\"><table><tr>{head}</tr>{cells}</table></div>")
    if not body:
        body.append(f"<p>No {CURVES_FILE} or {METRICS_FILE} in the run folder yet.</p>")
    return "<section><h2>Training</h2>" + "".join(body) + "</section>"


def _evaluation(run_dir, folder):
    doc = _read_json(folder / ANALYSIS_FILE) or {}
    analysis, result = doc.get("analysis") or {}, doc.get("result") or {}
    title = f"Evaluation: {result.get('dataset', '?')}, split {result.get('split', folder.name[5:])}"
    facts = [("weights", Path(str(result.get("params", "?"))).name),
             ("images", result.get("images", "?")),
             (f"mAP ({analysis.get('metric', result.get('metric', '?'))})", _num(result.get("map"))),
             ("IoU", analysis.get("iou")),
             ("score threshold", f"{_num(analysis.get('threshold'))} ({analysis.get('threshold_source', '')})")]
    if (analysis.get("errors") or {}).get("sim_omitted"):
        facts.append(("error breakdown", analysis["errors"]["sim_omitted"]))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    figures = [_figure(run_dir, f"{folder.name}/{name}", PICTURE_TITLES.get(key, key),
                       wide=key in WIDE_PICTURES)
               for key, name in (doc.get("pictures") or PICTURES).items() if (folder / name).is_file()]
    mosaics = [_figure(run_dir, f"{folder.name}/{name}",
                       f"Worst images {k + 1}: ground truth solid, predictions dashed"
                       + (" (masks filled)" if _has_masks(analysis) else ""))
               for k, name in enumerate(doc.get("mosaics") or []) if (folder / name).is_file()]
    return (f"<section><h2>{_e(title)}</h2><dl>{dl}</dl>{_class_table(analysis)}"
            f"<div class=\"grid\">{''.join(figures)}</div>{''.join(mosaics)}</section>")


def _has_masks(analysis):
    return any("segm_ap" in r for r in analysis.get("per_class") or [])


def _class_table(analysis):
    rows = analysis.get("per_class") or []
    if not rows:
        return ""
    cols = ("ap", "precision", "recall", "tp", "fp", "fn", "gt", "best_threshold")
    names = ("AP", "precision", "recall", "TP", "FP", "FN", "GT", "F1-best score")
    if _has_masks(analysis):  # a mask model: COCO box and mask AP beside the box analysis
        cols = cols[:1] + ("bbox_ap", "segm_ap") + cols[1:]
        names = (f"AP (IoU {analysis.get('iou', 0.5):g})", "box AP (COCO)", "mask AP (COCO)") + names[1:]
    head = "<tr><th>class</th>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    body = "".join("<tr><td>" + _e(r["class"]) + "</td>" +
                   "".join(f"<td>{_e(_num(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<div class=\"scroll\"><table>{head}{body}</table></div>"


def _figure(run_dir, relative, caption, wide=False):
    path = run_dir / relative
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    css_class = ' class="wide"' if wide else ""
    return (f"<figure{css_class}><img src=\"data:{mime};base64,{data}\" alt=\"{_e(caption)}\" "
            f"data-picture=\"{_e(relative)}\" loading=\"eager\"><figcaption>{_e(caption)}"
            f"</figcaption></figure>")


# ----------------------------------------------------------------------------- small helpers
def _e(value):
    return html.escape(str(value), quote=True)


def _num(value):
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _short(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return value if number.is_integer() else f"{number:.4g}"


def _read_text(path):
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise GluondetError(f"{path}: cannot read ({e})") from None


def _read_json(path):
    text = _read_text(path)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise GluondetError(f"{path}: not valid JSON ({e})") from None


def _metrics_rows(path):
    text = _read_text(path)
    if not text:
        return []
    rows = list(csv.DictReader(text.splitlines()))
    return rows[-METRICS_ROWS:]
