//! Statistics of the pooled samples: nearest-rank percentiles, Rust/C ratios,
//! throughput of the contended case.

use std::collections::BTreeMap;

use crate::ab::Impl;

use super::*;

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
    /// Full collapses counted by the LOCAL `step_ns`, and each step's ns summed over them.
    pub step_collapses: u64,
    pub step_ns: Vec<u64>,
}

impl Pooled {
    /// The mean ns of each step per full collapse, if `step_ns` counted any.
    pub fn step_means(&self) -> Option<Vec<f64>> {
        (self.step_collapses > 0).then(|| {
            self.step_ns
                .iter()
                .map(|&ns| ns as f64 / self.step_collapses as f64)
                .collect()
        })
    }

    fn add_steps(&mut self, s: &StepSums) {
        self.step_ns.resize(s.ns.len().max(self.step_ns.len()), 0);
        for (sum, ns) in self.step_ns.iter_mut().zip(&s.ns) {
            *sum += ns;
        }
        self.step_collapses += s.collapses;
    }

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

pub fn impl_of(name: &str) -> Option<(u32, Impl)> {
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
    /// The step names of the LOCAL `step_ns`, empty if the kernel has none.
    pub step_names: Vec<String>,
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
            if let Some(st) = o.steps.get(case) {
                match st.by_impl.get(mine) {
                    Some(own) if !st.names.is_empty() && own.ns.len() == st.names.len() => {
                        if !r.step_names.is_empty() && r.step_names != st.names {
                            r.problems.push(format!(
                                "[{}] {case}: step_ns names {:?}, earlier {:?}",
                                gc.name, st.names, r.step_names
                            ));
                        }
                        r.step_names.clone_from(&st.names);
                        p.add_steps(own);
                    }
                    _ => r.problems.push(format!(
                        "[{}] {case}: step_ns has no {mine} row with one sum per step",
                        gc.name
                    )),
                }
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
    fn step_means_pool_the_rounds() {
        let mut p = Pooled::default();
        assert_eq!(p.step_means(), None);
        p.add_steps(&StepSums {
            collapses: 2,
            ns: vec![10, 40],
        });
        p.add_steps(&StepSums {
            collapses: 2,
            ns: vec![30, 0],
        });
        assert_eq!(p.step_means(), Some(vec![10.0, 10.0]));
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
}
