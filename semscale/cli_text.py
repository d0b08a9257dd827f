"""What the ``semscale`` commands print: JSON-ready data for ``--json`` and the text tables otherwise.

Pure formatting of the results the pipeline returns; :mod:`semscale.cli` calls it and writes to stdout.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semscale.config import CampaignConfig

__all__ = ["campaign_text", "info_text", "layout", "models_text", "os_error_text", "plain", "stats_text", "to_json"]


def plain(obj: Any) -> Any:
    """JSON-ready data: paths as strings, numpy values as Python ones, NaN/inf as null."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [plain(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(dataclasses.asdict(obj))
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def to_json(data: Any) -> str:
    return json.dumps(plain(data), indent=2, allow_nan=False)


def layout(rows: Sequence[Mapping[str, str]], *, wide: bool, tty: bool) -> str:
    """Rows as an aligned table (``wide``, or a terminal it fits) or one ``key: value`` block per row."""
    if not rows:
        return ""
    headers = list(rows[0])
    cells = [{h: str(r.get(h) or "-") for h in headers} for r in rows]
    widths = {h: max(len(h), *(len(c[h]) for c in cells)) for h in headers}
    if wide or (tty and sum(widths.values()) + 2 * len(headers) <= shutil.get_terminal_size().columns):
        lines = [[h.ljust(widths[h]) for h in headers]] + [[c[h].ljust(widths[h]) for h in headers] for c in cells]
        return "\n".join("  ".join(line).rstrip() for line in lines)
    title, *rest = headers
    return "\n\n".join("\n".join([c[title], *(f"  {h}: {c[h]}" for h in rest)]) for c in cells)


def info_text(summary: Mapping[str, Any], *, wide: bool, tty: bool) -> str:
    def x(values: Sequence[Any]) -> str:
        return "×".join(map(str, values))

    rows = [{
        "image": im["id"] + ("" if im["complete"] else " (incomplete)"), "shape": x(im["shape"]),
        "chunks": x(im["chunks"]), "dtype": im["dtype"], "levels": str(im["levels"]), "sample": im["sample"],
        "t [min]": "" if im["oxidation_min"] is None else f"{im['oxidation_min']:g}", "role": im["role"],
        "EDS": ",".join(im["eds"]), "labels": ",".join(im["labels"]), "predictions": ",".join(im["predictions"]),
    } for im in summary["images"]]
    head = (f"{summary.get('name', '?')} — {summary['path']}\nclasses: {', '.join(summary.get('classes', []))}"
            f"   pixel size: {summary.get('pixel_size_um')} µm   semscale {summary.get('semscale_version', '?')}")
    tail = f"models: {', '.join(summary['models']) or 'none'}   stats: {'yes' if summary['stats'] else 'no'}"
    return "\n\n".join(p for p in (head, layout(rows, wide=wide, tty=tty), tail) if p)


def models_text(models: Sequence[Mapping[str, Any]], *, wide: bool, tty: bool) -> str:
    if not models:
        return "no models"

    def f(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))

    rows = []
    for m in models:
        for mem in m["members"]:
            rows.append({"model/member": f"{m['name']}/{mem['member']}", "val acc": f(mem["val_accuracy"]),
                         "val mIoU": f(mem["val_mean_iou"]), "best epoch": f(mem["best_epoch"]),
                         "epochs": f(mem["epochs_trained"]), "patch": f(m["patch_size"]),
                         "labels": f(m["label_source"])})
        rows.append({"model/member": f"{m['name']}/mean", "val acc": f(m["val_accuracy"]),
                     "val mIoU": f(m["val_mean_iou"]), "best epoch": "", "epochs": "",
                     "patch": f(m["patch_size"]), "labels": f(m["label_source"])})
    progress = [f"{m['name']}: in progress {m['in_progress']}" for m in models if m.get("in_progress")]
    return "\n".join([layout(rows, wide=wide, tty=tty), *progress])


def campaign_text(config: CampaignConfig, summary: Mapping[str, Any]) -> str:
    from semscale.analysis.metrics import format_confusion

    parts = []
    ev = summary.get("evaluate", {})
    for key, title in (("target_vs_truth", "EDS-guided targets vs ground truth"),
                       ("model_vs_truth", f"U-Net `{config.model_name}` vs ground truth"),
                       ("model_vs_target", f"U-Net `{config.model_name}` vs targets")):
        total = (ev.get(key) or {}).get("total")
        if total:
            parts.append(format_confusion(total, title=title) + "\n")
    if "stats" in summary:
        parts.append(stats_text(summary["stats"]))
    if "robustness" in summary:
        acc = summary["robustness"]["accuracy"]
        parts.append(f"robustness ({'updated' if summary['robustness']['changed'] else 'unchanged'}): accuracy "
                     f"{100 * min(acc.values()):.1f} .. {100 * max(acc.values()):.1f} % over {len(acc)} cases")
    if "report" in summary:
        parts.append(f"report ({'updated' if summary['report']['changed'] else 'unchanged'}): "
                     f"{summary['report']['path']}")
    parts.append(f"store: {config.store}   ({summary['seconds']:.0f} s)")
    return "\n".join(parts)


def stats_text(result: Mapping[str, Any]) -> str:
    """The model's fraction errors against target / truth per phase, and where the files are."""
    lines = []
    for ref in ("truth", "target"):
        mae, rmse, bias = (result["errors"].get(f"fraction_{k}_{ref}", {}) for k in ("mae", "rmse", "bias"))
        if mae and any(v is not None and math.isfinite(v) for v in mae.values()):
            lines.append(f"area fraction vs {ref}, images not used for training (percentage points):")
            lines += [f"  {phase:<6} MAE {mae[phase]:6.2f}   RMSE {rmse[phase]:6.2f}   bias {bias[phase]:+6.2f}"
                      for phase in mae]
    state = "updated" if result["changed"] else "unchanged"
    files = result["files"]
    lines.append(f"statistics ({state}; {len(result['measured'])} of {len(result['images'])} images measured "
                 f"now): {files['zarr']}\ntables: {files['csv']}, {files['interfaces_csv']}\nplot:   {files['plot']}")
    return "\n".join(lines)


def os_error_text(exc: OSError) -> str:
    """One line for an operating-system error: the file, what happened, and what to do."""
    import errno

    what = exc.strerror or str(exc)
    where = f" {exc.filename}" if exc.filename else ""
    fixes = {
        errno.ENOSPC: "free space (or point `store:` at a larger disk) and rerun: finished blocks are kept",
        errno.EDQUOT: "free space within your quota and rerun: finished blocks are kept",
        errno.EROFS: "the file system is read-only; write the store somewhere writable",
        errno.EACCES: "check the permissions of that path",
    }
    fix = fixes.get(exc.errno or 0, "check that path and rerun (--debug shows the traceback)")
    return f"Expected to read or write{where}. Got '{what}'; {fix}."
