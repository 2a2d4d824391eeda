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
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::ab::{self, Impl};
use crate::arch::Machine;
use crate::layout::Layout;
use crate::pipeline::{self, BuildOpts, Stages};
use crate::{cmd, config, guest, verdict};

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
    pub icount: Option<Icount>,
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

mod parse;
mod render;
mod stats;

pub use parse::*;
pub use render::*;
pub use stats::*;

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

/// QEMU's `-icount shift=`: `auto`, or one guest instruction = 2^N ns (N ≤ 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icount {
    Auto,
    Shift(u8),
}

impl std::str::FromStr for Icount {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Icount::Auto),
            _ => match s.parse::<u8>() {
                Ok(n) if n <= 10 => Ok(Icount::Shift(n)),
                _ => Err(format!("{s:?}: expected `auto` or a shift of 0 to 10")),
            },
        }
    }
}

impl std::fmt::Display for Icount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Icount::Auto => f.write_str("auto"),
            Icount::Shift(n) => write!(f, "{n}"),
        }
    }
}

pub fn run(layout: &Layout, o: &BenchOpts) -> Result<bool> {
    let mut stages = Stages::default();
    let machine = o.build.arch.guest_machine()?;
    let (build, image) = match &o.build_dir {
        Some(d) => (d.clone(), d.join(machine.image)),
        None => {
            let built = pipeline::prepare(layout, &o.build, &mut stages)?;
            (built.out, built.image)
        }
    };
    let dot_config = fs_err::read_to_string(build.join(".config"))
        .with_context(|| format!("reading {}", build.join(".config").display()))?;
    let rust_on = config::parse(&dot_config).get("CONFIG_KHUGEPAGED_RUST") == Some(&Some("y".to_string()));
    if !rust_on || o.build.mailed_only {
        bail!("the benchmark needs CONFIG_KHUGEPAGED_RUST=y and the local debugfs switch (patches/local/)");
    }
    if !image.exists() {
        bail!("no kernel image at {}", image.display());
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let dir = layout.runs().join(format!("{stamp}-bench"));
    fs_err::create_dir_all(&dir)?;
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
        name: "guest",
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
    let outcome = stages.timed("boot+bench", || guest::run(&boot, accel))?;
    let tests_log = fs_err::read_to_string(&boot.tests).unwrap_or_default();
    let console = fs_err::read_to_string(&boot.console).unwrap_or_default();
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
    fs_err::write(dir.join("table.txt"), &table)?;
    fs_err::write(dir.join("bench.svg"), svg(&results, &mode))?;
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
                        "step_full_collapses": p.step_collapses,
                        "step_mean_ns": p.step_means(),
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
        "icount": o.icount.map(|i| i.to_string()),
        "rounds": o.rounds,
        "iterations": o.iterations,
        "threads": o.threads,
        "kernel": image,
        "build_dir": build,
        "cpus": cpus,
        "stages_seconds": stages.seconds(),
        "boot": outcome,
        "summary": summary,
        "step_names": results.step_names,
        "problems": results.problems,
        "ok": results.problems.is_empty(),
        "raw": results.pooled,
    });
    fs_err::write(dir.join("bench.json"), serde_json::to_string_pretty(&json)?)?;
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
    fn icount_is_auto_or_a_shift_qemu_takes() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            o: BenchOpts,
        }
        let icount = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.o.icount)
        };
        assert_eq!(icount(&[]).unwrap(), None);
        assert_eq!(icount(&["--icount"]).unwrap(), Some(Icount::Auto));
        assert_eq!(icount(&["--icount", "0"]).unwrap(), Some(Icount::Shift(0)));
        assert_eq!(Icount::Shift(7).to_string(), "7");
        assert!(icount(&["--icount", "11"]).is_err());
        assert!(icount(&["--icount", "fast"]).is_err());
    }
}
