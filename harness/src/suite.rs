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
            Step::Cross(o) if o.arches.is_empty() => format!(
                "cross build: each patch in turn for {} (cargo harness cross --each-patch)",
                names(o.each_patch.iter().map(|a| a.name()))
            ),
            Step::Cross(o) => format!(
                "cross build: {} with {} (cargo harness cross)",
                names(o.arches.iter().map(|a| a.name())),
                names(o.flavours.iter().map(|f| f.name()))
            ),
            Step::Guest(g) => format!("guest run, {} {}", g.arch.name(), g.variant.name()),
            Step::Control(_) => {
                "negative control: the race selftest must fail on the broken kernel (patches/broken)".into()
            }
        }
    }
}

fn names<'a>(n: impl Iterator<Item = &'a str>) -> String {
    n.collect::<Vec<_>>().join(", ")
}

/// The suite for `guests`, in the build lane's order: install, the kernels the guest lane
/// boots (so that it starts as early as it can), then the steps that need no guest, which run
/// while the guests do.
pub fn steps(guests: &[GuestSpec], accel: Accel) -> Vec<Step> {
    // x86_64 for the control, then each guest's architecture once.
    let mut arches = vec![Arch::X86_64];
    for g in guests {
        if !arches.contains(&g.arch) {
            arches.push(g.arch);
        }
    }
    let mut v = vec![Step::Install(arches)];
    v.extend(guests.iter().copied().map(Step::Guest));
    v.push(Step::Control(control::Opts {
        arch: Arch::X86_64,
        variant: Variant::Default,
        delay_us: 0,
        race_args: String::new(),
        accel,
        timeout: 600,
    }));
    v.extend([
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
        // Each patch in turn where the series' Rust differs most from x86_64's (arm64
        // computes PMD_SHIFT with a macro bindgen cannot evaluate); `cargo harness mail`
        // builds each patch for x86_64.
        Step::Cross(cross::Opts {
            arches: Vec::new(),
            flavours: Vec::new(),
            each_patch: vec![Arch::Arm64],
            fail_fast: false,
        }),
    ]);
    v
}

/// What a step of the build lane leaves for the guest lane: the boot of a built kernel.
type Boot = Box<dyn FnOnce() -> Result<()> + Send>;

/// Run `step` in the build lane: all of it, or up to a guest boot, which it returns.
fn run_step(layout: &Layout, step: &Step, accel: Accel) -> Result<Option<Boot>> {
    let done = |r: Result<()>| r.map(|_| None);
    match step {
        Step::Install(a) => done(pipeline::install(layout, a)),
        Step::CargoTest => done(cmd::run(
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(&layout.repo)
                .args(["test", "--workspace", "--release"]),
        )),
        Step::MailLoopback => done(base::ensure(layout).and_then(|_| mail::loopback_round_trip(layout))),
        Step::RebaseSelfTest => done(mail::rebase_self_test(layout)),
        Step::Cross(o) => done(cross::run(layout, o).map(|_| ())),
        Step::Guest(g) => {
            // The suite's tree holds only what patches/ makes: whatever an interrupted run
            // left in it is discarded.
            let build = BuildOpts {
                force: true,
                ..BuildOpts::series(g.arch, g.variant)
            };
            let o = RunOpts::suite(build, accel, IMPLS.to_vec());
            let ready = run::prepare(layout, &o)?;
            let layout = layout.clone();
            Ok(Some(Box::new(move || {
                let (v, _) = run::finish(&layout, &o, ready)?;
                if !v.ok() {
                    bail!("see its verdict above");
                }
                Ok(())
            })))
        }
        Step::Control(o) => {
            let ro = control::run_opts(o);
            let ready = run::prepare(layout, &ro)?;
            let (layout, o) = (layout.clone(), o.clone());
            Ok(Some(Box::new(move || control::finish(&layout, &o, &ro, ready))))
        }
    }
}

/// How a step went, in the lane that ran it.
struct Timed {
    title: String,
    seconds: f64,
    result: std::result::Result<(), String>,
}

fn timed(title: String, f: impl FnOnce() -> Result<()>) -> Timed {
    let t = std::time::Instant::now();
    let result = f().map_err(|e| format!("{e:#}"));
    Timed {
        title,
        seconds: t.elapsed().as_secs_f64(),
        result,
    }
}

/// Run every step; fail naming each one that failed. Without what the install step
/// installs no other step can run: its failure ends the suite.
///
/// Two lanes: the build lane (a thread at the lowest CPU priority, nice 19, and every build
/// it starts) runs the steps in order; a guest step's build hands its boot to the guest lane
/// (this thread, at normal priority), which boots one guest at a time while the build lane
/// goes on. A guest run is mostly its selftests waiting on khugepaged's scans, so the next
/// kernel builds in the time the guest leaves; the priority keeps a build from stretching
/// the guest's timed waits (the khugepaged selftest gives two full scans 3 s).
pub fn test(layout: &Layout, guests: &[GuestSpec], accel: Accel) -> Result<()> {
    let start = std::time::Instant::now();
    let (suite_layout, _trees) = layout
        .for_suite()
        .with_context(|| {
            format!(
                "locking the suite's trees in {}",
                layout.with_suite_trees().trees.display()
            )
        })
        .context(Failure::Setup)?;
    let layout = &suite_layout;
    eprintln!(
        "kernel trees: {} (the suite's, kept across clones: kbuild rebuilds what changed)",
        layout.trees.display()
    );
    let mut steps = steps(guests, accel).into_iter();
    let install = steps.next().context("the suite has no install step")?;
    eprintln!("== {}", install.title());
    let t = std::time::Instant::now();
    run_step(layout, &install, accel).with_context(|| format!("{}: nothing else can run", install.title()))?;
    let installed = Timed {
        title: install.title(),
        seconds: t.elapsed().as_secs_f64(),
        result: Ok(()),
    };
    let rest: Vec<(String, Step)> = steps.map(|s| (s.title(), s)).collect();
    let build_layout = layout.clone();
    let mut lowered = false;
    let (built, booted) = lanes(rest, move |step: &Step| {
        if !lowered {
            lower_priority();
            lowered = true;
        }
        run_step(&build_layout, step, accel)
    })?;
    let all: Vec<Timed> = std::iter::once(installed).chain(built).chain(booted).collect();
    let times: Vec<(String, f64, bool)> = all
        .iter()
        .map(|t| (t.title.clone(), t.seconds, t.result.is_ok()))
        .collect();
    eprint!("{}", time_table(&times, start.elapsed().as_secs_f64()));
    let failed: Vec<String> = all
        .iter()
        .filter_map(|t| t.result.as_ref().err().map(|e| format!("{}: {e}", t.title)))
        .collect();
    if !failed.is_empty() {
        return Err(anyhow::anyhow!("test suite failed:\n  {}", failed.join("\n  "))).context(Failure::Test);
    }
    eprintln!("test suite passed");
    Ok(())
}

/// Run `steps` (titled) in the build lane, a thread of its own, each by `build`, in order;
/// each boot a step returns runs in the guest lane (the calling thread), one at a time, while
/// the build lane goes on. Returns what each lane did, in order.
fn lanes<S: Send + 'static>(
    steps: Vec<(String, S)>,
    mut build: impl FnMut(&S) -> Result<Option<Boot>> + Send + 'static,
) -> Result<(Vec<Timed>, Vec<Timed>)> {
    let (tx, rx) = std::sync::mpsc::channel::<(String, Boot)>();
    let build_lane = std::thread::spawn(move || {
        let mut done = Vec::new();
        for (title, step) in steps {
            eprintln!("== {title}");
            let mut boot = None;
            done.push(timed(title.clone(), || {
                boot = build(&step)?;
                Ok(())
            }));
            if let Some(b) = boot {
                if let Some(t) = done.last_mut() {
                    t.title.push_str(": build");
                }
                // The guest lane ends when this sender is dropped, with the lane.
                tx.send((title, b)).ok();
            }
        }
        done
    });
    let mut booted = Vec::new();
    for (title, boot) in rx {
        eprintln!("== {title}: boot (guest lane; the build lane goes on)");
        booted.push(timed(format!("{title}: boot"), boot));
    }
    let built = build_lane
        .join()
        .map_err(|_| anyhow::anyhow!("the suite's build lane panicked"))?;
    Ok((built, booted))
}

/// Give the calling thread, and every process it starts from now on, the lowest CPU
/// priority (nice 19); a failure only costs speed, so it is a warning.
fn lower_priority() {
    // SAFETY: setpriority(2) takes no pointers; on Linux PRIO_PROCESS with `who` 0 sets the
    // nice value of the calling thread only (a per-thread attribute), which its children
    // inherit.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
        eprintln!(
            "warning: could not lower the build lane's CPU priority ({}): builds and guests share the CPUs evenly",
            std::io::Error::last_os_error()
        );
    }
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
    fn the_suite_builds_the_guests_kernels_first_and_the_control_last_of_them() {
        let guests: Vec<GuestSpec> = ["x86_64:default", "arm64:default"]
            .iter()
            .map(|g| g.parse().unwrap())
            .collect();
        let s = steps(&guests, Accel::Tcg);
        let titles: Vec<String> = s.iter().map(Step::title).collect();
        assert_eq!(s.len(), 10, "{titles:?}");
        assert!(matches!(&s[0], Step::Install(a) if a == &[Arch::X86_64, Arch::Arm64]));
        assert_eq!(titles[1], "guest run, x86_64 default");
        assert_eq!(titles[2], "guest run, arm64 default");
        assert!(matches!(s[3], Step::Control(_)));
        assert!(matches!(s[4], Step::CargoTest));
        assert_eq!(titles[7], "cross build: x86_64 with thp-off (cargo harness cross)");
        assert_eq!(titles[8], "cross build: riscv with series (cargo harness cross)");
        assert_eq!(
            titles[9],
            "cross build: each patch in turn for arm64 (cargo harness cross --each-patch)"
        );
        // The control boots an x86_64 kernel: x86_64 is installed without an x86_64 guest.
        let arm_only = steps(&[guests[1]], Accel::Tcg);
        assert!(matches!(&arm_only[0], Step::Install(a) if a == &[Arch::X86_64, Arch::Arm64]));
    }

    /// A step of the lanes' tests: its build's result, and whether it leaves a boot.
    struct Fake {
        build_fails: bool,
        boot_fails: bool,
        boots: bool,
    }

    fn fake(build_fails: bool, boots: bool, boot_fails: bool) -> Fake {
        Fake {
            build_fails,
            boot_fails,
            boots,
        }
    }

    #[test]
    fn a_guest_boots_while_the_next_kernel_builds() {
        // The second build waits until the first guest's boot has started: with one lane
        // (boots after all builds, or in the build lane) it would wait in vain.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let started_rx = std::sync::Mutex::new(started_rx);
        let steps = vec![("a".to_string(), 0), ("b".to_string(), 1)];
        let (built, booted) = lanes(steps, move |n: &i32| {
            if *n == 1 {
                started_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .map_err(|_| anyhow::anyhow!("the first boot did not start during the second build"))?;
                return Ok(None);
            }
            let tx = started_tx.clone();
            Ok(Some(Box::new(move || {
                tx.send(()).ok();
                Ok(())
            }) as Boot))
        })
        .unwrap();
        let r: Vec<_> = built.iter().map(|t| (t.title.as_str(), t.result.clone())).collect();
        assert_eq!(r, [("a: build", Ok(())), ("b", Ok(()))]);
        assert_eq!(booted.len(), 1);
        assert_eq!(booted[0].title, "a: boot");
        assert!(booted[0].result.is_ok());
    }

    #[test]
    fn each_lane_reports_its_failures_and_a_failed_build_boots_nothing() {
        let steps = vec![
            ("g1".to_string(), fake(false, true, true)),
            ("g2".to_string(), fake(true, true, false)),
            ("g3".to_string(), fake(false, true, false)),
            ("unit".to_string(), fake(true, false, false)),
        ];
        let (built, booted) = lanes(steps, |f: &Fake| {
            if f.build_fails {
                bail!("kbuild failed");
            }
            let fails = f.boot_fails;
            Ok(f.boots.then(|| {
                Box::new(move || {
                    if fails {
                        Err(anyhow::anyhow!("2 failed"))
                    } else {
                        Ok(())
                    }
                }) as Boot
            }))
        })
        .unwrap();
        let b: Vec<_> = built.iter().map(|t| (t.title.as_str(), t.result.clone())).collect();
        assert_eq!(
            b,
            [
                ("g1: build", Ok(())),
                ("g2", Err("kbuild failed".to_string())),
                ("g3: build", Ok(())),
                ("unit", Err("kbuild failed".to_string())),
            ]
        );
        let g: Vec<_> = booted.iter().map(|t| (t.title.as_str(), t.result.clone())).collect();
        assert_eq!(g, [("g1: boot", Err("2 failed".to_string())), ("g3: boot", Ok(()))]);
    }

    #[test]
    fn the_build_lane_and_what_it_starts_run_at_nice_19_and_the_rest_does_not() {
        let nice_of_a_child = || {
            let out = std::process::Command::new("cat")
                .arg("/proc/self/stat")
                .output()
                .unwrap();
            let stat = String::from_utf8(out.stdout).unwrap();
            // Field 19 of stat(5) is the nice value; fields after the ")" of the name.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            after.split(' ').nth(16).unwrap().parse::<i32>().unwrap()
        };
        let before = nice_of_a_child();
        let lowered = std::thread::spawn(move || {
            lower_priority();
            nice_of_a_child()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, 19);
        assert_eq!(nice_of_a_child(), before, "the other threads keep their priority");
    }
}
