"""Plain-text rendering of the benchmark results (no third-party deps)."""

from __future__ import annotations

import math

HEADER = ("P", "mode", "ours ms", "0.1.1 ms", "x 0.1.1", "loop s†", "x loop†", "GB/s", "copy GB/s", "% copy")


def _fmt(value, spec: str) -> str:
    """Format a number, or '-' when it is missing/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def timing_rows(results: dict) -> list[tuple[str, ...]]:
    """One row per (P, mode) from ``results['timings']``."""
    rows = []
    for entry in results["timings"]:
        for mode, t in entry["modes"].items():
            rows.append(
                (
                    f"{entry['P']:,}",
                    mode,
                    _fmt(t["ours_best_s"] * 1e3, ".2f"),
                    _fmt(t.get("peer_best_s") and t["peer_best_s"] * 1e3, ".2f"),
                    _fmt(t.get("speedup_vs_peer"), ".2f"),
                    _fmt(t.get("loop_extrapolated_s"), ".1f"),
                    _fmt(t.get("speedup_vs_loop"), ".0f"),
                    _fmt(t["ours_GBps"], ".1f"),
                    _fmt(entry["copy_GBps"], ".1f"),
                    _fmt(100 * t["fraction_of_copy"], ".0f"),
                )
            )
    return rows


def thm3_rows(results: dict) -> list[tuple[str, ...]]:
    """The theory-harness rows (``analyze``, ``thm3-check‡``); P holds the P x K x m x R shape."""
    th = results.get("thm3")
    if not th:
        return []
    cells = (
        ("x".join(map(str, th["analyze"]["shape"])), "analyze", th["analyze"]),
        (th["cli"]["shape_label"], "thm3-check‡", th["cli"]),
    )
    dash = ("-",) * 5
    return [
        (
            label,
            mode,
            _fmt(c["ours_best_s"] * 1e3, ".2f"),
            _fmt(c.get("peer_best_s") and c["peer_best_s"] * 1e3, ".2f"),
            _fmt(c.get("speedup_vs_peer"), ".1f"),
            *dash,
        )
        for label, mode, c in cells
    ]


def render_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Right-aligned fixed-width table with a rule under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def render_markdown(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """The same table as GitHub markdown (for pasting into README.md)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def print_report(results: dict, markdown: bool = False) -> None:
    """Print the timing table, the loop reference, targets, checks and import time."""
    meta = results["meta"]
    print(
        f"\n== compute_advantage_batch, m={meta['m']}, R={meta['R']}, float64, best of "
        f"{meta['repeats']} after 1 warm-up  ({meta['cpu_count']} cores, {meta['cpu_model']})"
    )
    rows = timing_rows(results) + thm3_rows(results)
    print(render_table(HEADER, rows))
    loop = results.get("loop") or {}
    if loop:
        print(
            f"† loop = Python for-loop calling our compute_advantage per group, MEASURED at "
            f"P={loop['P']:,} and EXTRAPOLATED linearly (per-group time x P) to each row's P."
        )
    print(
        "  GB/s = (rewards bytes read + advantages bytes written) / ours time; "
        "copy GB/s = 2 x rewards bytes / np.copyto time on the same array."
    )
    _print_thm3_notes(results.get("thm3"))
    if markdown:
        print("\n" + render_markdown(HEADER, rows))
    _print_loop(loop)
    _print_lines("Targets", results["targets"])
    _print_lines("Checks", results["checks"])
    imp = results["import"]
    print(
        f"\n== import multireward_grpo: best {imp['best_s']:.3f} s of {len(imp['times_s'])} fresh "
        f"subprocesses (numpy alone {imp['numpy_best_s']:.3f} s); heavy modules loaded: "
        f"{', '.join(imp['heavy_modules']) or 'none'}"
    )
    if imp.get("peer_best_s") is not None:
        print(
            f"   (0.1.1 in its venv, for context: {imp['peer_best_s']:.3f} s; heavy modules: "
            f"{', '.join(imp['peer_heavy_modules']) or 'none'})"
        )


def _print_thm3_notes(th: dict | None) -> None:
    """Footnotes of the theory-harness rows."""
    if not th:
        return
    a, c = th["analyze"], th["cli"]
    print(
        f"  analyze = multireward_grpo.analysis.thm3.analyze(rewards, w, score_seed=0) on a P x K x m x R tensor, "
        f"ours best of {len(a['ours_times_s'])} after 1 warm-up, 0.1.1's top-level analyze best of "
        f"{len(a.get('peer_times_s', [])) or '-'} (no warm-up).\n"
        f"  ‡ thm3-check = `multireward-grpo thm3-check` end to end in a fresh process, best of "
        f"{len(c['ours_times_s'])} after 1 warm-up; {c['note']}."
    )


def _print_loop(loop: dict) -> None:
    """Same-size comparison of the loop reference with the batch call (measured, not extrapolated)."""
    if not loop:
        return
    print(f"\n== loop reference, measured at P={loop['P']:,} (same-size ratio, no extrapolation)")
    for mode, v in loop["modes"].items():
        print(
            f"  {mode:>6}: loop {v['loop_us_per_group']:.2f} µs/group, batch "
            f"{v['batch_us_per_group']:.4f} µs/group -> batch is {v['ratio']:.0f}x faster"
        )


def _print_lines(title: str, items: list[dict]) -> None:
    """Print ``STATUS  name  detail`` lines."""
    print(f"\n== {title}")
    for it in items:
        print(f"  {it['status']:<6} {it['name']}: {it['detail']}")
