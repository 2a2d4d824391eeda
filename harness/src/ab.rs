//! Both implementations in one boot. With the local debugfs switch
//! (`/sys/kernel/debug/khugepaged_rs/`, patches/local/) the guest runs the
//! cases once per implementation and reads the switch's counters after each
//! block, so the verdict can prove which implementation did the collapses.

use std::collections::BTreeMap;

use crate::guest::Case;

pub const DEBUGFS: &str = "/sys/kernel/debug/khugepaged_rs";
/// Cases with this name prefix print counters and are not tests.
pub const STATS_PREFIX: &str = "@stats ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Impl {
    /// The Rust implementation (trylock of the pmd lock).
    Rust,
    /// The Rust implementation, forced through its relock-and-rescan path
    /// (debug_flags bit 0: act as if the trylock failed).
    RustRelock,
    /// The C implementation of mm/khugepaged.c.
    C,
}

impl Impl {
    pub fn label(self) -> &'static str {
        match self {
            Impl::Rust => "rust",
            Impl::RustRelock => "rust-relock",
            Impl::C => "c",
        }
    }
    fn select(self) -> String {
        let (use_rust, flags) = match self {
            Impl::Rust => ("Y", 0),
            Impl::RustRelock => ("Y", 1),
            Impl::C => ("N", 0),
        };
        format!("echo {use_rust} > {DEBUGFS}/use_rust && echo {flags} > {DEBUGFS}/debug_flags && ")
    }
    /// The counter prefix (`rust_`, `c_`) this implementation increments.
    fn counter(self) -> &'static str {
        match self {
            Impl::C => "c",
            _ => "rust",
        }
    }
}

/// The cases run once per implementation, each block followed by a stats
/// read; a stats read first gives the baseline.
pub fn blocks(cases: &[Case], impls: &[Impl]) -> Vec<Case> {
    let stats = |label: &str| Case {
        name: format!("{STATS_PREFIX}{label}"),
        command: format!("cat {DEBUGFS}/stats"),
    };
    let mut out = vec![stats("boot")];
    for &i in impls {
        for c in cases {
            out.push(Case {
                name: format!("[{}] {}", i.label(), c.name),
                command: format!("{}{}", i.select(), c.command),
            });
        }
        out.push(stats(i.label()));
    }
    out
}

pub type Counters = BTreeMap<String, i64>;

pub fn parse_stats(lines: &[String]) -> Counters {
    lines
        .iter()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Check that each block's collapses were done by the implementation it
/// selected. `snapshots` are (label, counters) in order, starting at "boot".
pub fn check(snapshots: &[(String, Counters)], impls: &[Impl]) -> Vec<String> {
    let mut problems = Vec::new();
    if snapshots.len() != impls.len() + 1 {
        problems.push(format!(
            "expected {} counter snapshots, found {}",
            impls.len() + 1,
            snapshots.len()
        ));
        return problems;
    }
    for (k, &i) in impls.iter().enumerate() {
        let (before, after) = (&snapshots[k].1, &snapshots[k + 1].1);
        let delta = |key: &str| after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0);
        let mine = i.counter();
        let other = if mine == "c" { "rust" } else { "c" };
        let done = delta(&format!("{mine}_collapsed")) + delta(&format!("{mine}_collapsed_install_pmd"));
        if done <= 0 {
            problems.push(format!(
                "[{}] block: no collapse counted for the {mine} implementation",
                i.label()
            ));
        }
        let stray = delta(&format!("{other}_calls"));
        if stray != 0 {
            problems.push(format!(
                "[{}] block: {stray} call(s) went to the {other} implementation",
                i.label()
            ));
        }
        if i == Impl::RustRelock && delta("rust_relocks") <= 0 {
            problems.push("[rust-relock] block: the relock-and-rescan path was never taken".into());
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(label: &str, text: &str) -> (String, Counters) {
        (
            label.into(),
            parse_stats(&text.lines().map(String::from).collect::<Vec<_>>()),
        )
    }

    #[test]
    fn blocks_and_checks() {
        let cases = vec![
            Case {
                name: "khugepaged all:shmem".into(),
                command: "./khugepaged all:shmem".into(),
            },
            Case {
                name: "collapse_retract_race".into(),
                command: "./collapse_retract_race".into(),
            },
        ];
        let b = blocks(&cases, &[Impl::Rust, Impl::C]);
        // Every case runs under every implementation: the C path has the fixes of patches/fixes/.
        assert_eq!(b.len(), 7);
        assert!(b.iter().any(|c| c.name == "[c] collapse_retract_race"));
        assert_eq!(b[1].name, "[rust] khugepaged all:shmem");
        assert!(b[1]
            .command
            .starts_with("echo Y > /sys/kernel/debug/khugepaged_rs/use_rust && echo 0 >"));
        assert!(b[4].command.contains("echo N >"));
        let boot = snap(
            "boot",
            "impl rust\nc_calls 0\nc_collapsed 0\nrust_calls 0\nrust_collapsed 0\nrust_relocks 0\n",
        );
        let rust = snap("rust", "impl rust\nc_calls 0\nc_collapsed 0\nrust_calls 9\nrust_collapsed 4\nrust_collapsed_install_pmd 3\nrust_relocks 0\n");
        let c = snap(
            "c",
            "impl c\nc_calls 5\nc_collapsed 4\nrust_calls 9\nrust_collapsed 4\nrust_relocks 0\n",
        );
        assert!(check(&[boot.clone(), rust.clone(), c.clone()], &[Impl::Rust, Impl::C]).is_empty());
        // Rust block that collapsed nothing, or a C block that went to Rust.
        let p = check(&[boot.clone(), boot.clone(), rust.clone()], &[Impl::Rust, Impl::C]);
        assert_eq!(p.len(), 3, "{p:?}");
        // The relock block must take the relock path.
        let p = check(&[boot, rust], &[Impl::RustRelock]);
        assert_eq!(p, ["[rust-relock] block: the relock-and-rescan path was never taken"]);
    }
}
