//! `cargo harness test`, the whole suite (what `.ci/run` runs): a list of steps, each run
//! whatever the others did, and one failure listing every step that failed.

use anyhow::{bail, Context, Result};
use std::str::FromStr;

use crate::ab::Impl;
use crate::arch::Arch;
use crate::config::Variant;
use crate::failure::Failure;
use crate::guest::Accel;
use crate::layout::Layout;
use crate::pipeline::{self, BuildOpts};
use crate::run::{self, RunOpts};
use crate::{base, cmd, control, cross, mail};

/// One guest run of the suite: an architecture and a lock configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestSpec {
    pub arch: Arch,
    pub variant: Variant,
}

impl FromStr for GuestSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        use clap::ValueEnum;
        let (a, v) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected ARCH:CONFIG, e.g. arm64:default"))?;
        let arch = Arch::from_str(a, false)?;
        arch.guest_machine().map_err(|e| e.to_string())?;
        Ok(GuestSpec {
            arch,
            variant: Variant::from_str(v, false)?,
        })
    }
}

/// The implementations every guest run of the suite runs the cases under, in one boot.
pub const IMPLS: [Impl; 3] = [Impl::Rust, Impl::RustRelock, Impl::C];

/// A step of the suite.
#[derive(Debug, Clone)]
pub enum Step {
    /// `cargo harness install` for the guests' architectures: what every other step needs,
    /// the unit tests' cpio and busybox among it, on a fresh machine too.
    Install(Vec<Arch>),
    /// `cargo test --workspace --release`: the harness's unit tests and the loom model.
    CargoTest,
    /// Both series to an SMTP sink on 127.0.0.1 and back, applied with git am and b4 am.
    MailLoopback,
    /// `mail --rebase-onto` two bases made from this one.
    RebaseSelfTest,
    /// A cell of `cargo harness cross`.
    Cross(cross::Opts),
    /// The khugepaged invocations and the race selftest under [`IMPLS`].
    Guest(GuestSpec),
    /// The negative control.
    Control(control::Opts),
}

impl Step {
    pub fn title(&self) -> String {
        match self {
            Step::Install(a) => format!(
                "install the toolchain, {} guest tools and the base (cargo harness install)",
                a.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
            ),
            Step::CargoTest => "cargo test --workspace (harness unit tests, model check)".into(),
            Step::MailLoopback => "mail loopback round trip (fixes, then the RFC on top: \
                                   git send-email to 127.0.0.1, git am and b4 am, compare trees)"
                .into(),
            Step::RebaseSelfTest => {
                "mail --rebase-onto, onto two bases made from this one (fixes merged; a line of a fix changed)".into()
            }
            Step::Cross(o) => format!(
                "cross build: {} with {} (cargo harness cross)",
                o.arches.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "),
                o.flavours.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
            ),
            Step::Guest(g) => format!("guest run, {} {}", g.arch.name(), g.variant.name()),
            Step::Control(_) => {
                "negative control: the race selftest must fail on the broken kernel (patches/broken)".into()
            }
        }
    }
}

/// The suite for `guests`, in order.
pub fn steps(guests: &[GuestSpec], accel: Accel) -> Vec<Step> {
    // x86_64 for the control, then each guest's architecture once.
    let mut arches = vec![Arch::X86_64];
    for g in guests {
        if !arches.contains(&g.arch) {
            arches.push(g.arch);
        }
    }
    let mut v = vec![
        Step::Install(arches),
        Step::CargoTest,
        Step::MailLoopback,
        Step::RebaseSelfTest,
        // The cells that caught breaks every RUST=y kernel of them would see: x86_64 with
        // THP off (no pmdp_collapse_flush) and riscv (PTRS_PER_PTE not a constant bindgen
        // sees), about 3 min each with a warm ccache; `cargo harness cross` runs the matrix.
        Step::Cross(cross::Opts {
            arches: vec![Arch::X86_64],
            flavours: vec![cross::Flavour::ThpOff],
            each_patch: Vec::new(),
            fail_fast: false,
        }),
        Step::Cross(cross::Opts {
            arches: vec![Arch::Riscv],
            flavours: vec![cross::Flavour::Series],
            each_patch: Vec::new(),
            fail_fast: false,
        }),
    ];
    v.extend(guests.iter().copied().map(Step::Guest));
    v.push(Step::Control(control::Opts {
        arch: Arch::X86_64,
        variant: Variant::Default,
        delay_us: 0,
        race_args: String::new(),
        accel,
        timeout: 600,
    }));
    v
}

fn run_step(layout: &Layout, step: &Step, accel: Accel) -> Result<()> {
    match step {
        Step::Install(a) => pipeline::install(layout, a),
        Step::CargoTest => cmd::run(
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(&layout.repo)
                .args(["test", "--workspace", "--release"]),
        ),
        Step::MailLoopback => base::ensure(layout).and_then(|_| mail::loopback_round_trip(layout)),
        Step::RebaseSelfTest => mail::rebase_self_test(layout),
        Step::Cross(o) => cross::run(layout, o).map(|_| ()),
        Step::Guest(g) => {
            let o = RunOpts::suite(BuildOpts::series(g.arch, g.variant), accel, IMPLS.to_vec());
            let (v, _) = run::run(layout, &o)?;
            if !v.ok() {
                bail!("see its verdict above");
            }
            Ok(())
        }
        Step::Control(o) => control::run(layout, o),
    }
}

/// Run every step; fail naming each one that failed. Without what the install step
/// installs no other step can run: its failure ends the suite.
pub fn test(layout: &Layout, guests: &[GuestSpec], accel: Accel) -> Result<()> {
    let mut failed = Vec::new();
    let mut times = Vec::new();
    let start = std::time::Instant::now();
    for step in steps(guests, accel) {
        eprintln!("== {}", step.title());
        let t = std::time::Instant::now();
        let r = run_step(layout, &step, accel);
        times.push((step.title(), t.elapsed().as_secs_f64(), r.is_ok()));
        if let Err(e) = r {
            if matches!(step, Step::Install(_)) {
                return Err(e).context(format!("{}: nothing else can run", step.title()));
            }
            failed.push(format!("{}: {e:#}", step.title()));
        }
    }
    eprint!("{}", time_table(&times, start.elapsed().as_secs_f64()));
    if !failed.is_empty() {
        return Err(anyhow::anyhow!("test suite failed:\n  {}", failed.join("\n  "))).context(Failure::Test);
    }
    eprintln!("test suite passed");
    Ok(())
}

/// Where the suite's time went: one line per step, then the total.
fn time_table(times: &[(String, f64, bool)], total: f64) -> String {
    let mut s = String::from("suite times:\n");
    for (title, secs, ok) in times {
        let title: String = title.chars().take(72).collect();
        s.push_str(&format!(
            "  {secs:>7.0} s  {}  {title}\n",
            if *ok { "ok    " } else { "FAILED" }
        ));
    }
    s.push_str(&format!("  {total:>7.0} s  total\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_table_names_each_step_and_the_total() {
        let t = time_table(
            &[("cargo test".into(), 95.4, true), ("guest run".into(), 612.0, false)],
            708.0,
        );
        assert_eq!(
            t,
            "suite times:\n       95 s  ok      cargo test\n      612 s  FAILED  guest run\n      708 s  total\n"
        );
    }

    #[test]
    fn a_guest_spec_is_an_arch_with_a_guest_and_a_config() {
        let g: GuestSpec = "arm64:shared-ptl".parse().unwrap();
        assert_eq!(
            g,
            GuestSpec {
                arch: Arch::Arm64,
                variant: Variant::SharedPtl
            }
        );
        assert!("arm64".parse::<GuestSpec>().unwrap_err().contains("ARCH:CONFIG"));
        assert!("riscv:default"
            .parse::<GuestSpec>()
            .unwrap_err()
            .contains("no test guest for riscv"));
        assert!("x86_64:lpae".parse::<GuestSpec>().is_err());
    }

    #[test]
    fn the_suite_ends_with_the_control_after_every_guest() {
        let guests: Vec<GuestSpec> = ["x86_64:default", "arm64:default"]
            .iter()
            .map(|g| g.parse().unwrap())
            .collect();
        let s = steps(&guests, Accel::Tcg);
        let titles: Vec<String> = s.iter().map(Step::title).collect();
        assert_eq!(s.len(), 9, "{titles:?}");
        assert!(matches!(&s[0], Step::Install(a) if a == &[Arch::X86_64, Arch::Arm64]));
        assert!(matches!(s[1], Step::CargoTest));
        assert_eq!(titles[4], "cross build: x86_64 with thp-off (cargo harness cross)");
        assert_eq!(titles[5], "cross build: riscv with series (cargo harness cross)");
        assert_eq!(titles[6], "guest run, x86_64 default");
        assert_eq!(titles[7], "guest run, arm64 default");
        assert!(matches!(s[8], Step::Control(_)));
        // The control boots an x86_64 kernel: x86_64 is installed without an x86_64 guest.
        let arm_only = steps(&[guests[1]], Accel::Tcg);
        assert!(matches!(&arm_only[0], Step::Install(a) if a == &[Arch::X86_64, Arch::Arm64]));
    }
}
