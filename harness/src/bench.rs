//! `cargo harness bench`: the C and the Rust `try_collapse_pte_mapped_thp()`
//! side by side in one boot. The guest program (guest/bench/collapse_bench.c)
//! times every MADV_COLLAPSE of a PTE-mapped THP and checks in smaps that it
//! really PMD-mapped the range; the harness runs it under C and Rust
//! alternately (A B A B ..., through the local debugfs switch), pools the raw
//! samples of all rounds, and computes the statistics itself. The pmd-lock
//! hold time comes from the local instrumentation
//! (`/sys/kernel/debug/khugepaged_rs/pml_hold_ns`) when the kernel has it.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::ab::{self, Impl};
use crate::arch::Machine;
use crate::layout::Layout;
use crate::{cmd, guest, verdict, BuildOpts, Stages};

/// The cases of collapse_bench, in its order.
pub const CASES: &[&str] = &["shared", "private", "uffd-private", "uffd-contended"];
/// The implementations, in the order each round runs them.
pub const IMPLS: &[Impl] = &[Impl::C, Impl::Rust];

#[derive(clap::Args, Clone)]
pub struct BenchOpts {
    #[command(flatten)]
    pub build: BuildOpts,
    /// Boot the kernel already built in this directory (its boot image and .config)
    /// instead of applying and building patches/.
    #[arg(long)]
    pub build_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: guest::Accel,
    /// Run QEMU with `-icount shift=SHIFT` (`auto`, or a fixed shift: one
    /// guest instruction = 2^SHIFT ns), so guest time follows instructions
    /// executed. Implies TCG and single-threaded vCPUs.
    #[arg(long, num_args = 0..=1, default_missing_value = "auto", value_name = "SHIFT")]
    pub icount: Option<String>,
    /// Rounds; each runs every case under C, then under Rust.
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// Collapses per case, implementation and round.
    #[arg(long, default_value_t = 250)]
    pub iterations: u32,
    /// Threads faulting fresh PTE tables in the contention case.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Hard limit for the guest, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

// ---------------------------------------------------------------- parsing

/// `key=value` fields of one output line, after its tag.
pub fn fields(rest: &str) -> BTreeMap<String, String> {
    rest.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Pml {
    pub count: u64,
    pub dropped: u64,
    pub ns: Vec<u64>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Contention {
    pub threads: u64,
    pub faults: u64,
    pub seconds: f64,
    pub faults_per_s: f64,
    pub collapse_busy: Option<f64>,
}

/// What one collapse_bench invocation printed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Output {
    pub env: BTreeMap<String, String>,
    pub samples: BTreeMap<String, Vec<u64>>,
    /// The program's own summary (`BENCH` lines), kept for cross-checks.
    pub bench: BTreeMap<String, BTreeMap<String, String>>,
    /// (case, phase) -> fault throughput.
    pub contention: BTreeMap<String, Contention>,
    pub stats: BTreeMap<String, ab::Counters>,
    pub pml: BTreeMap<String, Pml>,
    pub fails: Vec<String>,
    pub errors: Vec<String>,
    pub done: bool,
}

pub fn parse_output(lines: &[String]) -> Result<Output> {
    let mut o = Output::default();
    for l in lines {
        let l = l.trim_end_matches('\r');
        let (tag, rest) = l.split_once(' ').unwrap_or((l, ""));
        match tag {
            "ENV" => o.env = fields(rest),
            "SAMPLES" => {
                let f = fields(rest);
                let case = f.get("case").context("SAMPLES without case")?;
                let v = o.samples.entry(case.clone()).or_default();
                for n in f.get("ns").context("SAMPLES without ns")?.split(',') {
                    v.push(n.parse().with_context(|| format!("bad sample {n:?} in {l:?}"))?);
                }
            }
            "BENCH" => {
                let f = fields(rest);
                o.bench.insert(f.get("case").context("BENCH without case")?.clone(), f);
            }
            "CONTENTION" => {
                let f = fields(rest);
                let num = |k: &str| -> Result<f64> {
                    f.get(k)
                        .with_context(|| format!("{k} missing in {l:?}"))?
                        .parse()
                        .with_context(|| l.to_string())
                };
                let c = Contention {
                    threads: num("threads")? as u64,
                    faults: num("faults")? as u64,
                    seconds: num("seconds")?,
                    faults_per_s: num("faults_per_s")?,
                    collapse_busy: num("collapse_busy").ok(),
                };
                let key = format!(
                    "{}/{}",
                    f.get("case").context("case")?,
                    f.get("phase").context("phase")?
                );
                o.contention.insert(key, c);
            }
            "STATS" => {
                let mut f = fields(rest);
                let case = f.remove("case").context("STATS without case")?;
                o.stats.insert(
                    case,
                    f.into_iter().filter_map(|(k, v)| Some((k, v.parse().ok()?))).collect(),
                );
            }
            "PML" => {
                // PML case=C count N | dropped N | ns a b c ...
                let (case, body) = rest.split_once(' ').context("PML line")?;
                let case = case.strip_prefix("case=").context("PML without case")?;
                let p = o.pml.entry(case.to_string()).or_default();
                let mut w = body.split_whitespace();
                match w.next() {
                    Some("count") => p.count = w.next().context("count")?.parse()?,
                    Some("dropped") => p.dropped = w.next().context("dropped")?.parse()?,
                    Some("ns") => {
                        for n in w {
                            p.ns.push(n.parse().with_context(|| format!("bad pml sample in {l:?}"))?);
                        }
                    }
                    _ => bail!("unexpected PML line {l:?}"),
                }
            }
            "FAIL" => o.fails.push(rest.to_string()),
            "ERROR" => o.errors.push(rest.to_string()),
            "DONE" => o.done = true,
            _ => {}
        }
    }
    Ok(o)
}

/// One guest case (between KHRS-BEGIN and KHRS-END): name, exit code, lines.
#[derive(Debug, Clone)]
pub struct GuestCase {
    pub name: String,
    pub rc: Option<i32>,
    pub lines: Vec<String>,
}

pub fn split_cases(tests_log: &str) -> (Option<u32>, Vec<GuestCase>) {
    let (cpus, _, sections) = crate::verdict::split_sections(tests_log);
    let cases = sections
        .into_iter()
        .map(|s| GuestCase {
            name: s.name,
            rc: s.exit_code,
            lines: s.lines,
        })
        .collect();
    (cpus, cases)
}

// ------------------------------------------------------------- statistics

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: u64,
    pub p99: u64,
    pub mean: f64,
    pub min: u64,
    pub max: u64,
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least p% of the values at or below it (the guest program uses the same).
pub fn percentile(sorted: &[u64], p: u32) -> u64 {
    assert!(!sorted.is_empty() && p <= 100);
    let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

pub fn summarize(values: &[u64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut s = values.to_vec();
    s.sort_unstable();
    Some(Summary {
        n: s.len(),
        median: percentile(&s, 50),
        p99: percentile(&s, 99),
        mean: s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64,
        min: s[0],
        max: s[s.len() - 1],
    })
}

pub fn ratio(rust: u64, c: u64) -> Option<f64> {
    (c != 0).then(|| rust as f64 / c as f64)
}

/// Pooled results of one case under one implementation.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Pooled {
    pub samples: Vec<u64>,
    pub pml: Vec<u64>,
    /// Median of each round, in round order.
    pub round_medians: Vec<u64>,
    pub relocks: i64,
    pub contention_alone: Vec<Contention>,
    pub contention_collapsing: Vec<Contention>,
}

impl Pooled {
    pub fn latency(&self) -> Option<Summary> {
        summarize(&self.samples)
    }
    pub fn pml_hold(&self) -> Option<Summary> {
        summarize(&self.pml)
    }
}

/// Faults per second over all rounds: total faults / total seconds.
pub fn throughput(c: &[Contention]) -> Option<f64> {
    let s: f64 = c.iter().map(|c| c.seconds).sum();
    (s > 0.0).then(|| c.iter().map(|c| c.faults as f64).sum::<f64>() / s)
}

/// The guest case name of round `r` (1-based) under `i`.
pub fn case_name(round: u32, i: Impl) -> String {
    format!("bench r{round} {}", i.label())
}

fn impl_of(name: &str) -> Option<(u32, Impl)> {
    let rest = name.strip_prefix("bench r")?;
    let (r, label) = rest.split_once(' ')?;
    let i = IMPLS.iter().copied().find(|i| i.label() == label)?;
    Some((r.parse().ok()?, i))
}

/// Everything measured, keyed by (case, implementation label).
#[derive(Debug, Default, serde::Serialize)]
pub struct Results {
    pub pooled: BTreeMap<String, BTreeMap<String, Pooled>>,
    pub problems: Vec<String>,
    pub rounds: u32,
    pub iterations: u32,
    pub clocksource: Option<String>,
    pub pml_instrumented: bool,
}

/// Check and pool the outputs of all rounds. A round with a failed or
/// unverified collapse, a missing case, or a collapse counted for the wrong
/// implementation makes the whole run not a result (`problems`).
pub fn pool(cases: &[GuestCase], rounds: u32, iterations: u32) -> Results {
    let mut r = Results {
        rounds,
        iterations,
        ..Default::default()
    };
    let mut seen = BTreeMap::new();
    for gc in cases {
        let Some((round, imp)) = impl_of(&gc.name) else {
            continue;
        };
        seen.insert((round, imp.label()), ());
        let label = imp.label();
        if gc.rc != Some(0) {
            r.problems.push(format!("[{}] exited with {:?}", gc.name, gc.rc));
        }
        let o = match parse_output(&gc.lines) {
            Ok(o) => o,
            Err(e) => {
                r.problems.push(format!("[{}] unparsable output: {e:#}", gc.name));
                continue;
            }
        };
        if !o.done {
            r.problems.push(format!("[{}] did not finish (no DONE)", gc.name));
        }
        for e in &o.errors {
            r.problems.push(format!("[{}] error: {e}", gc.name));
        }
        for f in &o.fails {
            r.problems.push(format!("[{}] failed collapse: {f}", gc.name));
        }
        if o.env.get("impl").map(String::as_str) != Some(label) {
            r.problems.push(format!(
                "[{}] the switch reported impl={:?}",
                gc.name,
                o.env.get("impl")
            ));
        }
        if let Some(cs) = o.env.get("clocksource") {
            r.clocksource = Some(cs.clone());
        }
        if o.env.get("pml_hold").map(String::as_str) == Some("yes") {
            r.pml_instrumented = true;
        }
        let (mine, other) = if imp == Impl::C { ("c", "rust") } else { ("rust", "c") };
        for &case in CASES {
            let samples = o.samples.get(case).cloned().unwrap_or_default();
            if samples.len() != iterations as usize {
                r.problems.push(format!(
                    "[{}] {case}: {} verified collapses, expected {iterations}",
                    gc.name,
                    samples.len()
                ));
            }
            if let Some(b) = o.bench.get(case) {
                if b.get("failures").map(String::as_str) != Some("0") {
                    r.problems
                        .push(format!("[{}] {case}: failures={:?}", gc.name, b.get("failures")));
                }
            } else {
                r.problems.push(format!("[{}] {case}: no BENCH line", gc.name));
            }
            let st = o.stats.get(case).cloned().unwrap_or_default();
            let get = |k: &str| st.get(k).copied().unwrap_or(0);
            if get(&format!("{mine}_collapsed_install_pmd")) != iterations as i64 {
                r.problems.push(format!(
                    "[{}] {case}: {mine}_collapsed_install_pmd went up by {}, expected {iterations}",
                    gc.name,
                    get(&format!("{mine}_collapsed_install_pmd"))
                ));
            }
            if get(&format!("{other}_calls")) != 0 {
                r.problems.push(format!(
                    "[{}] {case}: {} call(s) went to {other}",
                    gc.name,
                    get(&format!("{other}_calls"))
                ));
            }
            let p = r
                .pooled
                .entry(case.to_string())
                .or_default()
                .entry(label.to_string())
                .or_default();
            if let Some(s) = summarize(&samples) {
                p.round_medians.push(s.median);
            }
            p.samples.extend(samples);
            if imp != Impl::C {
                p.relocks += get("rust_relocks");
            }
            if let Some(pml) = o.pml.get(case) {
                if pml.dropped != 0 || pml.count as usize != pml.ns.len() {
                    r.problems.push(format!(
                        "[{}] {case}: pml_hold_ns kept {} of {} samples",
                        gc.name,
                        pml.ns.len(),
                        pml.count
                    ));
                }
                if (pml.count as usize) < iterations as usize {
                    r.problems.push(format!(
                        "[{}] {case}: {} pml holds for {iterations} collapses",
                        gc.name, pml.count
                    ));
                }
                p.pml.extend(&pml.ns);
            }
            if let Some(c) = o.contention.get(&format!("{case}/alone")) {
                p.contention_alone.push(c.clone());
            }
            if let Some(c) = o.contention.get(&format!("{case}/collapsing")) {
                p.contention_collapsing.push(c.clone());
            }
        }
    }
    for round in 1..=rounds {
        for &i in IMPLS {
            if !seen.contains_key(&(round, i.label())) {
                r.problems.push(format!("[{}] did not run", case_name(round, i)));
            }
        }
    }
    r
}

// ---------------------------------------------------------------- output

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

// ---------------------------------------------------------------- the run

/// The guest command of one block: select the implementation, run every case.
pub fn guest_command(i: Impl, iterations: u32, threads: u32) -> String {
    let (use_rust, flags) = match i {
        Impl::C => ("N", 0),
        Impl::Rust => ("Y", 0),
        Impl::RustRelock => ("Y", 1),
    };
    format!(
        "echo {use_rust} > {d}/use_rust && echo {flags} > {d}/debug_flags && ./collapse_bench -n {iterations} -t {threads}",
        d = ab::DEBUGFS
    )
}

pub fn guest_cases(rounds: u32, iterations: u32, threads: u32) -> Vec<guest::Case> {
    (1..=rounds)
        .flat_map(|r| IMPLS.iter().map(move |&i| (r, i)))
        .map(|(r, i)| guest::Case {
            name: case_name(r, i),
            command: guest_command(i, iterations, threads),
        })
        .collect()
}

/// Build the guest program statically, for `machine` (its cross gcc when it is not the host).
fn build_program(layout: &Layout, machine: &Machine, out: &Path) -> Result<PathBuf> {
    let src = layout.guest_files().join("bench/collapse_bench.c");
    let bin = out.join("collapse_bench");
    let cc = if machine.is_host() {
        "cc".to_string()
    } else {
        format!("{}gcc", machine.cross_compile)
    };
    cmd::output(
        Command::new(&cc)
            .args(["-O2", "-Wall", "-static", "-pthread", "-o"])
            .arg(&bin)
            .arg(&src),
    )
    .with_context(|| format!("building the guest benchmark ({cc} -O2 -static -pthread)"))?;
    Ok(bin)
}

pub fn run(layout: &Layout, o: &BenchOpts) -> Result<bool> {
    let mut stages = Stages::new();
    let machine = o.build.arch.guest_machine()?;
    let (build, image) = match &o.build_dir {
        Some(d) => (d.clone(), d.join(machine.image)),
        None => {
            let (_, build, image) = crate::prepare(layout, &o.build, &mut stages)?;
            (build, image)
        }
    };
    let dot_config = std::fs::read_to_string(build.join(".config"))
        .with_context(|| format!("reading {}", build.join(".config").display()))?;
    if !dot_config.contains("\nCONFIG_KHUGEPAGED_RUST=y") || o.build.mailed_only {
        bail!("the benchmark needs CONFIG_KHUGEPAGED_RUST=y and the local debugfs switch (patches/local/)");
    }
    if !image.exists() {
        bail!("no kernel image at {}", image.display());
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let dir = layout.runs().join(format!("{stamp}-bench"));
    std::fs::create_dir_all(&dir)?;
    let bin = build_program(layout, machine, &dir)?;
    let cases = guest_cases(o.rounds, o.iterations, o.threads);
    let init = layout.guest_files().join("init");
    // No khugepaged daemon during the benchmark (anon THP off; shmem_enabled
    // is "never" by default): only the benchmark's MADV_COLLAPSE calls
    // collapse. MADV_COLLAPSE of tmpfs files ignores these settings.
    let setup = "echo never > /sys/kernel/mm/transparent_hugepage/enabled".to_string();
    let busybox = crate::toolchain::busybox(layout, machine);
    let initramfs = guest::pack(
        &guest::Initramfs {
            busybox: &busybox,
            init: &init,
            files: vec![(bin, "collapse_bench".into())],
            cases: &cases,
            setup: Some(setup),
        },
        &dir,
    )?;
    let mut extra = Vec::new();
    let mut accel_opt = o.accel;
    if let Some(shift) = &o.icount {
        extra.push("-icount".to_string());
        extra.push(format!("shift={shift}"));
        accel_opt = guest::Accel::Tcg;
    }
    let boot = guest::Boot {
        machine,
        kernel: &image,
        initramfs: &initramfs,
        disks: &[],
        cpus: 2,
        mem_mb: 2048,
        accel: accel_opt,
        append: "",
        timeout: Duration::from_secs(o.timeout),
        console: dir.join("console.log"),
        tests: dir.join("tests.log"),
        extra_args: &extra,
    };
    let accel = guest::resolve_accel(&boot)?;
    let mode = match &o.icount {
        Some(s) => format!("{accel:?} -icount shift={s} (single-threaded TCG), 2 vCPUs"),
        None if accel == guest::Accel::Tcg => "TCG (multi-threaded), 2 vCPUs".to_string(),
        None => format!("{accel:?}, 2 vCPUs"),
    };
    eprintln!("  guest: {mode}, logs in {}", dir.display());
    let outcome = crate::timed(&mut stages, "boot+bench", || guest::run(&boot, accel))?;
    let tests_log = std::fs::read_to_string(&boot.tests).unwrap_or_default();
    let console = std::fs::read_to_string(&boot.console).unwrap_or_default();
    let (cpus, gcs) = split_cases(&tests_log);
    let mut results = pool(&gcs, o.rounds, o.iterations);
    if outcome.timed_out {
        results
            .problems
            .push(format!("the guest timed out after {}s", o.timeout));
    }
    if cpus.unwrap_or(0) < 2 {
        results.problems.push(format!("the guest ran on {cpus:?} CPUs, not 2"));
    }
    for sp in verdict::splats(&console) {
        results
            .problems
            .push(format!("kernel splat, console.log:{}: {}", sp.line, sp.text));
    }
    let table = render(&results, &mode);
    std::fs::write(dir.join("table.txt"), &table)?;
    std::fs::write(dir.join("bench.svg"), svg(&results, &mode))?;
    let summary: BTreeMap<String, BTreeMap<String, serde_json::Value>> = results
        .pooled
        .iter()
        .map(|(case, by)| {
            let m = by
                .iter()
                .map(|(i, p)| {
                    let v = serde_json::json!({
                        "latency_ns": p.latency(),
                        "pml_hold_ns": p.pml_hold(),
                        "round_medians_ns": p.round_medians,
                        "rust_relocks": p.relocks,
                        "faults_per_s_alone": throughput(&p.contention_alone),
                        "faults_per_s_collapsing": throughput(&p.contention_collapsing),
                    });
                    (i.clone(), v)
                })
                .collect();
            (case.clone(), m)
        })
        .collect();
    let json = serde_json::json!({
        "date_unix": stamp,
        "mode": mode,
        "accel": accel,
        "icount": o.icount,
        "rounds": o.rounds,
        "iterations": o.iterations,
        "threads": o.threads,
        "kernel": image,
        "build_dir": build,
        "cpus": cpus,
        "stages_seconds": stages.iter().cloned().collect::<BTreeMap<_, _>>(),
        "boot": outcome,
        "summary": summary,
        "problems": results.problems,
        "ok": results.problems.is_empty(),
        "raw": results.pooled,
    });
    std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&json)?)?;
    println!("{table}");
    eprintln!(
        "results: {} (bench.json, bench.svg, table.txt, tests.log, console.log)",
        dir.display()
    );
    Ok(results.problems.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&v, 100), 100);
        assert_eq!(percentile(&[7], 99), 7);
        // Odd count: the middle one; even: the lower middle.
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
        assert_eq!(percentile(&[1, 2, 3, 4], 50), 2);
        let s = summarize(&[5, 1, 4, 2, 3]).unwrap();
        assert_eq!((s.n, s.median, s.p99, s.min, s.max), (5, 3, 5, 1, 5));
        assert!((s.mean - 3.0).abs() < 1e-9);
        // p99 of 1000 samples is the 990th smallest.
        let v: Vec<u64> = (1..=1000).rev().collect();
        assert_eq!(summarize(&v).unwrap().p99, 990);
        assert!(summarize(&[]).is_none());
        assert_eq!(ratio(3, 0), None);
        assert_eq!(ratio(3, 2), Some(1.5));
    }

    #[test]
    fn throughput_pools_rounds() {
        let c = |faults, seconds| Contention {
            threads: 1,
            faults,
            seconds,
            faults_per_s: 0.0,
            collapse_busy: None,
        };
        assert_eq!(throughput(&[c(100, 1.0), c(300, 1.0)]), Some(200.0));
        assert_eq!(throughput(&[]), None);
    }

    #[test]
    fn guest_cases_alternate() {
        let c = guest_cases(2, 10, 1);
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["bench r1 c", "bench r1 rust", "bench r2 c", "bench r2 rust"]);
        assert!(c[0]
            .command
            .starts_with("echo N > /sys/kernel/debug/khugepaged_rs/use_rust && echo 0 >"));
        assert!(c[1].command.contains("echo Y >"));
        assert!(c[1].command.ends_with("./collapse_bench -n 10 -t 1"));
        assert_eq!(impl_of("bench r12 rust"), Some((12, Impl::Rust)));
        assert_eq!(impl_of("khugepaged"), None);
    }

    #[test]
    fn parses_lines() {
        let lines: Vec<String> = [
            "ENV clocksource=tsc impl=c cpus=2 pml_hold=yes",
            "SAMPLES case=shared ns=3,1",
            "SAMPLES case=shared ns=2",
            "BENCH case=shared n=3 failures=0 median_ns=2 p99_ns=3 mean_ns=2 min_ns=1 max_ns=3",
            "CONTENTION case=uffd-contended phase=collapsing threads=1 faults=10 seconds=0.5 faults_per_s=20.0 collapse_busy=0.25",
            "STATS case=shared impl=0 c_calls=3 rust_calls=0",
            "PML case=shared count 3",
            "PML case=shared dropped 0",
            "PML case=shared ns 10 20 30",
            "FAIL case=shared i=4 reason=madvise value=-1 errno=22",
            "DONE",
        ]
        .map(String::from)
        .to_vec();
        let o = parse_output(&lines).unwrap();
        assert_eq!(o.samples["shared"], [3, 1, 2]);
        assert_eq!(o.env["impl"], "c");
        assert_eq!(o.bench["shared"]["failures"], "0");
        let c = &o.contention["uffd-contended/collapsing"];
        assert_eq!((c.faults, c.collapse_busy), (10, Some(0.25)));
        assert_eq!(o.stats["shared"]["c_calls"], 3);
        assert_eq!(
            o.pml["shared"],
            Pml {
                count: 3,
                dropped: 0,
                ns: vec![10, 20, 30]
            }
        );
        assert_eq!(o.fails.len(), 1);
        assert!(o.done);
        assert!(parse_output(&["SAMPLES case=x ns=1,zz".to_string()]).is_err());
    }

    /// A real guest run (the whole tests.log of `cargo harness bench --accel
    /// tcg --rounds 1 --iterations 20`, TCG): every collapse verified,
    /// statistics recomputed from the raw samples agree with the program's.
    #[test]
    fn real_guest_output() {
        let log = include_str!("../tests/fixtures/bench-tests.log");
        let (cpus, cases) = split_cases(log);
        assert_eq!(cpus, Some(2));
        assert_eq!(cases.len(), 2);
        let r = pool(&cases, 1, 20);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        for case in CASES {
            for i in ["c", "rust"] {
                let p = &r.pooled[*case][i];
                assert_eq!(p.samples.len(), 20);
                let o =
                    parse_output(&cases.iter().find(|c| c.name.ends_with(&format!(" {i}"))).unwrap().lines).unwrap();
                let b = &o.bench[*case];
                let s = p.latency().unwrap();
                assert_eq!(s.median.to_string(), b["median_ns"]);
                assert_eq!(s.p99.to_string(), b["p99_ns"]);
                assert_eq!(s.max.to_string(), b["max_ns"]);
            }
        }
        // Asking for more rounds or collapses than ran is not a result.
        assert!(!pool(&cases, 2, 20).problems.is_empty());
        assert!(!pool(&cases, 1, 21).problems.is_empty());
        let table = render(&r, "TCG");
        assert!(table.contains("Rust/C ratios"), "{table}");
        assert!(svg(&r, "TCG").starts_with("<svg"));
    }
}
