//! What the guest program printed: its lines, and the guest cases of one boot.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

use crate::ab::{self};

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

/// The LOCAL `step_ns` file after a case: the names of the steps of the collapse, and for each
/// implementation the number of full collapses and the sum of each step's ns over them.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Steps {
    pub names: Vec<String>,
    pub by_impl: BTreeMap<String, StepSums>,
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct StepSums {
    pub collapses: u64,
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
    pub steps: BTreeMap<String, Steps>,
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
            "STEP" => {
                // STEP case=C steps a b c ... | STEP case=C <impl> collapses N ns a b c ...
                let (case, body) = rest.split_once(' ').context("STEP line")?;
                let case = case.strip_prefix("case=").context("STEP without case")?;
                let st = o.steps.entry(case.to_string()).or_default();
                let mut w = body.split_whitespace();
                match (w.next(), w.next()) {
                    (Some("steps"), Some(first)) => {
                        st.names = std::iter::once(first).chain(w).map(String::from).collect();
                    }
                    (Some(imp), Some("collapses")) => {
                        let collapses = w.next().context("collapses")?.parse()?;
                        if w.next() != Some("ns") {
                            bail!("unexpected STEP line {l:?}");
                        }
                        let ns = w
                            .map(|n| n.parse().with_context(|| format!("bad step sum in {l:?}")))
                            .collect::<Result<Vec<u64>>>()?;
                        st.by_impl.insert(imp.to_string(), StepSums { collapses, ns });
                    }
                    _ => bail!("unexpected STEP line {l:?}"),
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

#[cfg(test)]
mod tests {
    use super::super::{pool, render, svg, CASES};
    use super::*;

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
            "STEP case=shared steps lookup check",
            "STEP case=shared c collapses 3 ns 30 60",
            "STEP case=shared rust collapses 0 ns 0 0",
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
        let st = &o.steps["shared"];
        assert_eq!(st.names, ["lookup", "check"]);
        assert_eq!(
            st.by_impl["c"],
            StepSums {
                collapses: 3,
                ns: vec![30, 60]
            }
        );
        assert_eq!(st.by_impl["rust"].collapses, 0);
        assert_eq!(o.fails.len(), 1);
        assert!(o.done);
        assert!(parse_output(&["SAMPLES case=x ns=1,zz".to_string()]).is_err());
        assert!(parse_output(&["STEP case=x c collapses 1 ns 1 zz".to_string()]).is_err());
        assert!(parse_output(&["STEP case=x c something".to_string()]).is_err());
    }

    /// A real guest run (the whole tests.log of `cargo harness bench --accel
    /// tcg --rounds 1 --iterations 20`, TCG): every collapse verified,
    /// statistics recomputed from the raw samples agree with the program's.

    #[test]
    fn real_guest_output() {
        let log = include_str!("../../tests/fixtures/bench-tests.log");
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
