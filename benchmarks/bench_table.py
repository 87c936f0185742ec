"""Markdown tables from ``benchmarks/results/*.json`` (``python benchmarks/run_benchmarks.py table``)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _f(v, fmt="{:.2f}"):
    if v is None:
        return "–"
    if isinstance(v, (list, tuple)):
        return "/".join(_f(x, fmt) for x in v)
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def _acc_rows(acc: dict) -> dict:
    """Visit-level accuracy summary: alignment, and per filter product the catalog metrics."""
    out = {"align": acc.get("align", {}).get("median_chip_rms_mas"),
           "align_max": acc.get("align", {}).get("max_chip_rms_mas")}
    for f, e in (acc.get("filters") or {}).items():
        out[f] = e
    return out


def speed_table(visits: list[dict]) -> str:
    lines = ["| visit | pipeline | exit | wall s | CPU s | peak tree RSS MB | max 1-proc RSS MB | "
             "parse s | align s | drizzle s | catalogs s | Prefect+other s | load avg (1 min) before/after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in visits:
        h = v["hapsvm"]
        g = h.get("stage_groups", {})
        lines.append(
            f"| {v['visit']} | hapsvm | {h['exit_code']} | {_f(h['wall_s'], '{:.1f}')} | "
            f"{_f(h['cpu_s'], '{:.1f}')} | {_f(h['peak_tree_rss_mb'], '{:.0f}')} | "
            f"{_f(h['max_rss_mb'], '{:.0f}')} | "
            + " | ".join(_f(g.get(k, {}).get("wall_s"), "{:.1f}") for k in ("parse", "align", "drizzle", "catalogs"))
            + f" | {_f(h.get('prefect_and_other_s'), '{:.1f}')} | {h['loadavg_before'][0]}/{h['loadavg_after'][0]} |")
        d = v.get("drizzlepac")
        if d:
            lines.append(
                f"| {v['visit']} | drizzlepac 3.11 | {d.get('exit_code')} | {_f(d.get('wall_s'), '{:.1f}')} | "
                f"{_f(d.get('cpu_s'), '{:.1f}')} | {_f(d.get('peak_tree_rss_mb'), '{:.0f}')} | "
                f"{_f(d.get('max_rss_mb'), '{:.0f}')} | – | – | – | – | – | "
                f"{d['loadavg_before'][0]}/{d['loadavg_after'][0]} |")
            r = v.get("ratios", {})
            lines.append(f"| {v['visit']} | **ratio** | | **{_f(r.get('speedup_wall'))}x faster** | "
                         f"{_f(r.get('cpu_ratio'))}x less CPU | "
                         f"hapsvm/drizzlepac = {_f(r.get('peak_tree_rss_ratio_hapsvm_over_drizzlepac'))} | | | | | | | |")
    return "\n".join(lines)


def stage_table(visits: list[dict]) -> str:
    lines = ["| visit | stage | wall s | CPU s | peak tree RSS MB |", "|---|---|---|---|---|"]
    for v in visits:
        for s in v["hapsvm"].get("stages", []):
            lines.append(f"| {v['visit']} | {s['stage']} | {s['wall_s']} | {s['cpu_s']} | "
                         f"{s['peak_tree_rss_mb']:.0f} |")
    return "\n".join(lines)


def accuracy_table(visits: list[dict]) -> str:
    lines = ["| visit | filter | pipeline | align RMS mas median/max | cat. astrometry RMS mas | "
             "phot bias mag (n) | phot scatter mag (n) | completeness S/N≥10 (n) | spurious all (n) / Flags<5 (n) | "
             "CR px >5σ left / floor |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v in visits:
        for who in ("hapsvm", "drizzlepac"):
            p = v.get(who)
            if not p or "accuracy" not in p:
                continue
            acc = p["accuracy"]
            if "error" in acc:
                lines.append(f"| {v['visit']} | | {who} | error: {acc['error'][:80]} | | | | | | |")
                continue
            al = acc.get("align", {})
            for f, e in sorted(acc.get("filters", {}).items()):
                cr = e.get("cr_residual", {})
                lines.append(
                    f"| {v['visit']} | {f} | {who} | {_f(al.get('median_chip_rms_mas'), '{:.1f}')}/"
                    f"{_f(al.get('max_chip_rms_mas'), '{:.1f}')} | {_f(e.get('astrometry_rms_mas'), '{:.1f}')} | "
                    f"{_f(e.get('phot_bias_mag'), '{:+.3f}')} ({e.get('n_phot_sn50', 0)}) | "
                    f"{_f(e.get('phot_scatter_mag'), '{:.3f}')} ({e.get('n_phot_sn20', 0)}) | "
                    f"{_f(e.get('completeness_sn10'), '{:.3f}')} ({e.get('n_truth_sn10', 0)}) | "
                    f"{_f(e.get('spurious'), '{:.3f}')} ({e.get('n_point', 0)}) / {_f(e.get('spurious_flags_lt5'), '{:.3f}')} ({e.get('n_point_flags_lt5', 0)}) | "
                    f"{_f(cr.get('frac_gt5sigma'), '{:.4f}')} / {_f(cr.get('floor_gt5sigma'), '{:.4f}')} |")
    return "\n".join(lines)


def scaling_table(s: dict) -> str:
    lines = ["| exposures | wall s | CPU s | peak tree RSS MB | align s | drizzle s | catalogs s | "
             "wall / (n × wall(1)) | load before/after |", "|---|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        g = r["stage_groups"]
        lines.append(f"| {r['n_exposures']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{r['peak_tree_rss_mb']:.0f} | "
                     + " | ".join(_f(g.get(k, {}).get('wall_s'), '{:.1f}') for k in ('align', 'drizzle', 'catalogs'))
                     + f" | {r['wall_vs_linear_from_n1']} | {r['loadavg_before'][0]}/{r['loadavg_after'][0]} |")
    fit = s["linear_fit"]
    lines.append(f"\nLeast-squares fit: wall = {fit['intercept_s']} s + {fit['slope_s_per_exposure']} s × n "
                 f"(largest residual {fit['max_abs_residual_s']} s).")
    return "\n".join(lines)


def main() -> None:
    order = ["uvis", "ir", "wfc", "hrc"]
    visits = [json.loads((RESULTS / f"visit_{n}.json").read_text())
              for n in order if (RESULTS / f"visit_{n}.json").exists()]
    print("## Speed and memory\n\n" + speed_table(visits))
    print("\n## hapsvm per stage\n\n" + stage_table(visits))
    print("\n## Accuracy\n\n" + accuracy_table(visits))
    if (RESULTS / "scaling_uvis.json").exists():
        print("\n## Scaling\n\n" + scaling_table(json.loads((RESULTS / "scaling_uvis.json").read_text())))


if __name__ == "__main__":
    main()
