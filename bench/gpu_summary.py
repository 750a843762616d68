"""The markdown summary of a bench/gpu_check.py report: one table of items, then one line of
figures per item (the JSON beside it holds every number)."""

from __future__ import annotations

from typing import Any


def _f(x: Any, spec: str = ".3g") -> str:
    return "—" if x is None else format(x, spec)


def _grid(e: dict[str, Any]) -> str:
    same = e.get("same_images")
    if not same or "speedup" not in e:
        return ""
    g = e["grid"]
    verdict = "same" if same["ok"] else "DIFFERENT"
    engine, cells = e["engine"], e["per_cell"]
    return (f"{g['cells']} cells (steps {g['steps']}): engine {engine['wall_s']:.1f} s "
            f"({engine['unet_calls']} calls), per cell {cells['wall_s']:.1f} s "
            f"({cells['unet_calls']} calls) → **{e['speedup']:.2f}×** (target ≥ {e['target_speedup']}×); "
            f"images {verdict}: max latent diff {same['max_latent_diff']:.2e} of latents up to "
            f"{same['max_latent_value']:.3g} ({same['relative_diff']:.1e}, tolerance {same['tolerance']:g}), "
            f"max pixel diff {same['max_pixel_diff']}")


def _memory(e: dict[str, Any]) -> str:
    rows = ", ".join(f"{b['rows']} rows {_f(b.get('peak_mib'), '.1f')} MiB" for b in e.get("batches", []))
    fit = e.get("fit")
    if "estimate_per_row_mib" not in e:
        return ""
    line = f"estimate {e['estimate_per_row_mib']:.1f} MiB/row; measured {rows}"
    if fit:
        line += (f"; fit {fit['per_row_mib']:.1f} MiB/row + {fit['fixed_mib']:.0f} MiB → estimate / measured "
                 f"{_f(fit['estimate_over_measured'], '.2f')}")
    if "auto_max_batch" in e:
        line += f"; auto_max_batch {e['auto_max_batch']}"
    if "rows_that_fit_by_measurement" in e:
        line += f" (measured: {e['rows_that_fit_by_measurement']} rows fit)"
    return line


def _throughput(e: dict[str, Any]) -> str:
    cells = [f"{b['rows']}: {b['ms_per_row']:.1f}" if "ms_per_row" in b else f"{b['rows']}: {b.get('error')}"
             for b in e.get("batches", [])]
    return ("ms/row at batch " + ", ".join(cells)) if cells else ""


def _precision(e: dict[str, Any]) -> str:
    out = []
    for name in ("float16", "bfloat16"):
        d = e.get(name)
        if d is None:
            continue
        if "error" in d:
            out.append(f"{name}: not run ({d['error']})")
            continue
        text = (f"{name} (VAE {d['vae_dtype']}): latent max {d['max_latent_diff']:.2e}, mean "
                f"{d['mean_latent_diff']:.2e} ({100 * d['mean_latent_diff_relative']:.2f} %), pixel max "
                f"{d['max_pixel_diff']}, mean {d['mean_pixel_diff']:.2f}"
                + ("" if d["finite"] else ", NOT FINITE"))
        half = d.get("vae_in_float16")
        if half:
            text += (f"; VAE in float16: {'finite' if half['finite'] else 'NaN/inf'}, "
                     f"max diff {half['max_abs_diff']:.2e}")
        out.append(text)
    return "; ".join(out)


def _flow(e: dict[str, Any]) -> str:
    if "model" not in e:
        return ""
    m, g = e["model"], e.get("grid", {})
    n = m["parameters"]
    size = f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"
    if "speedup" in g:
        same = g["same_images"]
        grid = (f"{g['cells']['cells']} Euler cells (steps {g['cells']['steps']}): engine "
                f"{g['engine']['wall_s']:.1f} s, per cell {g['per_cell']['wall_s']:.1f} s "
                f"→ **{g['speedup']:.2f}×**; "
                f"images {'same' if same['ok'] else 'DIFFERENT'}: worst mean pixel diff "
                f"{255 * same['max_mean_pixel_diff']:.2f}/255 (tolerance {255 * same['tolerance']:.0f}/255)")
    else:
        grid = f"grid {g.get('status', 'not run')}: {g.get('reason') or g.get('error') or ''}"
    return (f"{size}-parameter transformer at {m['size_px']} px, {m['dtype']}; {grid}; "
            f"{_memory(e.get('memory', {}))}; {_throughput(e.get('throughput', {}))}")


FIGURES = {"grid": _grid, "memory": _memory, "throughput": _throughput, "precision": _precision,
           "flow": _flow}


def summary(report: dict[str, Any]) -> str:
    m = report["machine"]
    where = m.get("gpu") or f"{m['processor']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads)"
    lines = [f"# GPU check ({report['profile']})", "",
             f"`{report['command']}` — started {report['started_utc']} on {where}; torch {m['torch']}, "
             f"diffusers {m['diffusers']}; {report.get('elapsed_s', 0):.0f} s of a "
             f"{report['budget_s']:.0f} s budget.", "",
             "| item | status | seconds / budget |", "|---|---|---|"]
    for it in report["items"]:
        lines.append(f"| {it['item']} | {it['status']} | {it['seconds']:.1f} / {it['budget_s']:.0f} |")
    lines.append("")
    for it in report["items"]:
        section, family = it["item"].split(".", 1)
        e = report[section].get(family, {})
        why = e.get("reason") or e.get("error") or ""
        figures = FIGURES[section](e) if e else ""
        text = "; ".join(x for x in (figures, why) if x)
        lines.append(f"- **{it['item']}** ({e.get('status', '?')}): {text}")
    return "\n".join(lines) + "\n"
