//! The results as a text table and as an SVG chart.

use std::fmt::Write as _;

use crate::ab::Impl;

use super::*;

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into())
}

fn ratio_str(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into())
}

/// The table printed at the end (also saved as table.txt).
pub fn render(r: &Results, mode: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "collapse_bench, {mode}: {} rounds x {} collapses per case and implementation (C then Rust each round), clocksource {}",
        r.rounds,
        r.iterations,
        opt(r.clocksource.as_deref())
    );
    let _ = writeln!(
        s,
        "{:<15} {:<5} {:>5} {:>10} {:>10} {:>10} | {:>6} {:>9} {:>9}  relocks",
        "case", "impl", "n", "median_ns", "p99_ns", "mean_ns", "pml_n", "pml_med", "pml_p99"
    );
    for &case in CASES {
        let Some(by) = r.pooled.get(case) else { continue };
        for &i in IMPLS {
            let Some(p) = by.get(i.label()) else { continue };
            let l = p.latency();
            let h = p.pml_hold();
            let _ = writeln!(
                s,
                "{:<15} {:<5} {:>5} {:>10} {:>10} {:>10} | {:>6} {:>9} {:>9}  {}",
                case,
                i.label(),
                p.samples.len(),
                opt(l.map(|l| l.median)),
                opt(l.map(|l| l.p99)),
                opt(l.map(|l| format!("{:.0}", l.mean))),
                p.pml.len(),
                opt(h.map(|h| h.median)),
                opt(h.map(|h| h.p99)),
                if i == Impl::C {
                    "-".to_string()
                } else {
                    p.relocks.to_string()
                }
            );
        }
    }
    let _ = writeln!(
        s,
        "\nRust/C ratios (latency median, p99, mean; per-round median ratio range; pml hold median, p99):"
    );
    for &case in CASES {
        let Some(by) = r.pooled.get(case) else { continue };
        let (Some(c), Some(rs)) = (by.get("c"), by.get("rust")) else {
            continue;
        };
        let (lc, lr) = (c.latency(), rs.latency());
        let (hc, hr) = (c.pml_hold(), rs.pml_hold());
        let per_round: Vec<f64> = c
            .round_medians
            .iter()
            .zip(&rs.round_medians)
            .filter_map(|(&c, &r)| ratio(r, c))
            .collect();
        let range = if per_round.is_empty() {
            "n/a".to_string()
        } else {
            let lo = per_round.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = per_round.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.3}..{hi:.3}")
        };
        let _ = writeln!(
            s,
            "{:<15} latency {} {} {}  rounds {}  pml {} {}",
            case,
            ratio_str(lc.zip(lr).and_then(|(c, r)| ratio(r.median, c.median))),
            ratio_str(lc.zip(lr).and_then(|(c, r)| ratio(r.p99, c.p99))),
            ratio_str(lc.zip(lr).and_then(|(c, r)| (c.mean > 0.0).then(|| r.mean / c.mean))),
            range,
            ratio_str(hc.zip(hr).and_then(|(c, r)| ratio(r.median, c.median))),
            ratio_str(hc.zip(hr).and_then(|(c, r)| ratio(r.p99, c.p99))),
        );
    }
    for &case in CASES {
        let Some(by) = r.pooled.get(case) else { continue };
        if by.values().all(|p| p.contention_collapsing.is_empty()) {
            continue;
        }
        let _ = writeln!(
            s,
            "\ncontention ({case}: fault threads first-touching fresh PTE tables in the same 1 GiB):"
        );
        for &i in IMPLS {
            let Some(p) = by.get(i.label()) else { continue };
            let busy: Vec<f64> = p.contention_collapsing.iter().filter_map(|c| c.collapse_busy).collect();
            let _ = writeln!(
                s,
                "  {:<5} faults/s alone {:>10}  while collapsing {:>10}  (time in MADV_COLLAPSE {})",
                i.label(),
                opt(throughput(&p.contention_alone).map(|v| format!("{v:.0}"))),
                opt(throughput(&p.contention_collapsing).map(|v| format!("{v:.0}"))),
                if busy.is_empty() {
                    "n/a".into()
                } else {
                    format!("{:.1}%", 100.0 * busy.iter().sum::<f64>() / busy.len() as f64)
                }
            );
        }
        if let (Some(c), Some(rs)) = (by.get("c"), by.get("rust")) {
            let (tc, tr) = (
                throughput(&c.contention_collapsing),
                throughput(&rs.contention_collapsing),
            );
            let _ = writeln!(
                s,
                "  Rust/C faults/s while collapsing {}",
                ratio_str(tc.zip(tr).map(|(c, r)| r / c))
            );
        }
    }
    render_steps(&mut s, r, mode);
    if !r.pml_instrumented {
        let _ = writeln!(
            s,
            "\npml hold time: n/a (the kernel has no khugepaged_rs/pml_hold_ns instrumentation)"
        );
    }
    if r.problems.is_empty() {
        let _ = writeln!(
            s,
            "\nall collapses verified PMD-mapped; every case ran under the implementation it selected"
        );
    } else {
        let _ = writeln!(s, "\nNOT A RESULT: {} problem(s):", r.problems.len());
        for p in &r.problems {
            let _ = writeln!(s, "  {p}");
        }
    }
    s
}

/// Where the time of a collapse goes, per step, C beside Rust (the LOCAL `step_ns`), and what is
/// left of the latency outside `try_collapse_pte_mapped_thp()` (mostly `madvise_collapse()` and
/// the file scan before it).
fn render_steps(s: &mut String, r: &Results, mode: &str) {
    if r.step_names.is_empty() {
        return;
    }
    let unit = if mode.contains("icount") {
        "ns of guest time, i.e. instructions under icount"
    } else {
        "ns"
    };
    let _ = writeln!(
        s,
        "\ntime per step of try_collapse_pte_mapped_thp(), mean per full collapse ({unit}; LOCAL step_ns):"
    );
    let _ = writeln!(
        s,
        "{:<15} {:<14} {:>10} {:>10} {:>9} {:>7}",
        "case", "step", "c", "rust", "rust-c", "rust/c"
    );
    let row = |s: &mut String, case: &str, step: &str, c: f64, r: f64| {
        let _ = writeln!(
            s,
            "{case:<15} {step:<14} {c:>10.0} {r:>10.0} {:>9.0} {:>7}",
            r - c,
            ratio_str((c > 0.0).then(|| r / c))
        );
    };
    for &case in CASES {
        let Some(by) = r.pooled.get(case) else { continue };
        let (Some(c), Some(rs)) = (by.get("c"), by.get("rust")) else {
            continue;
        };
        let (Some(mc), Some(mr)) = (c.step_means(), rs.step_means()) else {
            let _ = writeln!(s, "{case:<15} no full collapse counted");
            continue;
        };
        for (k, name) in r.step_names.iter().enumerate() {
            row(
                s,
                case,
                name,
                mc.get(k).copied().unwrap_or(0.0),
                mr.get(k).copied().unwrap_or(0.0),
            );
        }
        let (tc, tr) = (mc.iter().sum::<f64>(), mr.iter().sum::<f64>());
        row(s, case, "= in function", tc, tr);
        if let (Some(lc), Some(lr)) = (c.latency(), rs.latency()) {
            row(s, case, "outside", lc.mean - tc, lr.mean - tr);
        }
        let _ = writeln!(
            s,
            "{case:<15} {:<14} {:>10} {:>10}",
            "full collapses", c.step_collapses, rs.step_collapses
        );
    }
}

/// A small SVG: per case, C and Rust bars of the median collapse latency
/// with the p99 as a tick, and the same for the pmd-lock hold time.
pub fn svg(r: &Results, mode: &str) -> String {
    type Panel<'a> = (&'a str, fn(&Pooled) -> Option<Summary>);
    let panels: [Panel; 2] = [
        ("collapse latency, us (bar median, tick p99)", Pooled::latency),
        ("pmd-lock hold, us", Pooled::pml_hold),
    ];
    let (pw, ph, top, left) = (420.0, 260.0, 50.0, 50.0);
    let width = left + 2.0 * (pw + 40.0);
    let height = top + ph + 70.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="18" font-size="13">try_collapse_pte_mapped_thp: C vs Rust ({})</text>"#,
        xml(mode)
    );
    let colors = [("c", "#4e79a7"), ("rust", "#e15759")];
    for (k, (title, f)) in panels.iter().enumerate() {
        let x0 = left + k as f64 * (pw + 40.0);
        let max = CASES
            .iter()
            .filter_map(|c| r.pooled.get(*c))
            .flat_map(|by| by.values())
            .filter_map(f)
            .map(|s| s.p99)
            .max()
            .unwrap_or(0)
            .max(1) as f64
            / 1000.0;
        let y = |us: f64| top + ph - ph * (us / max).min(1.0);
        let _ = writeln!(s, r#"<text x="{x0}" y="{}">{}</text>"#, top - 8.0, xml(title));
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
            top + ph,
            x0 + pw,
            top + ph
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{top}" x2="{x0}" y2="{}" stroke="#333"/>"##,
            top + ph
        );
        for t in 0..=4 {
            let v = max * t as f64 / 4.0;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{v:.1}</text>"#,
                x0 - 4.0,
                y(v) + 4.0
            );
        }
        let gw = pw / CASES.len() as f64;
        for (ci, case) in CASES.iter().enumerate() {
            let gx = x0 + ci as f64 * gw;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{case}</text>"#,
                gx + gw / 2.0,
                top + ph + 15.0
            );
            for (ii, (label, color)) in colors.iter().enumerate() {
                let Some(sm) = r.pooled.get(*case).and_then(|by| by.get(*label)).and_then(f) else {
                    continue;
                };
                let bx = gx + 12.0 + ii as f64 * (gw - 24.0) / 2.0;
                let bw = (gw - 24.0) / 2.0 - 4.0;
                let m = sm.median as f64 / 1000.0;
                let p = sm.p99 as f64 / 1000.0;
                let _ = writeln!(
                    s,
                    r#"<rect x="{bx:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{color}"><title>{label} {case}: median {} ns, p99 {} ns, n {}</title></rect>"#,
                    y(m),
                    top + ph - y(m),
                    sm.median,
                    sm.p99,
                    sm.n
                );
                let _ = writeln!(
                    s,
                    r#"<line x1="{bx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/>"#,
                    y(p),
                    bx + bw,
                    y(p)
                );
            }
        }
    }
    for (ii, (label, color)) in colors.iter().enumerate() {
        let lx = left + ii as f64 * 80.0;
        let ly = top + ph + 40.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/>"#,
            ly - 10.0
        );
        let _ = writeln!(s, r#"<text x="{}" y="{ly}">{label}</text>"#, lx + 16.0);
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
