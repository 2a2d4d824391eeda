//! The negative control: a race selftest only proves something if it fails on a kernel with
//! the bug it was written for. `cargo harness control` builds `--kernel broken` (the base with
//! patches/broken: the early pmd_lock() for userfaultfd-armed private VMAs removed, so the PTE
//! lock is dropped between clearing the PTEs and removing the table, as before the 2023 fix),
//! runs the race selftest alone there, and succeeds only if the UFFDIO_COPY and UFFDIO_ZEROPAGE
//! variants fail by one of the test's own checks, naming the round.

use anyhow::{bail, Context, Result};

use crate::arch::Arch;
use crate::config::Variant;
use crate::failure::Failure;
use crate::guest::Accel;
use crate::ktap::Status;
use crate::layout::Layout;
use crate::pipeline::BuildOpts;
use crate::run::{self as guest_run, RunOpts};
use crate::series;
use crate::verdict::{self, Verdict};

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// The guest's architecture.
    #[arg(long, value_enum, default_value = "x86_64")]
    pub arch: Arch,
    /// Lock/debug configuration.
    #[arg(long = "config", value_enum, default_value = "default")]
    pub variant: Variant,
    /// Microseconds to wait inside the re-opened window
    /// (/sys/kernel/debug/khugepaged_race_delay_us); 0 leaves it at its natural width.
    #[arg(long, default_value_t = 0)]
    pub delay_us: u32,
    /// Arguments for the race selftest (e.g. `-s 20`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub race_args: String,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: Accel,
    /// Hard limit for the guest, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// The race selftest's program.
pub const PROGRAM: &str = "collapse_retract_race";

/// The tests the broken kernel must fail: the races whose window patches/broken re-opens.
pub const MUST_FAIL: &[&str] = &["collapse_race.uffd_copy.race", "collapse_race.uffd_zeropage.race"];

/// The knob patches/broken adds.
pub const DELAY_KNOB: &str = "/sys/kernel/debug/khugepaged_race_delay_us";

/// `cargo harness control`: [`prepare`], then [`finish`].
pub fn run(layout: &Layout, o: &Opts) -> Result<()> {
    let ro = run_opts(o);
    let ready = guest_run::prepare(layout, &ro)?;
    finish(layout, o, &ro, ready)
}

/// The run of the broken kernel: the race selftest only, with the delay knob set.
pub fn run_opts(o: &Opts) -> RunOpts {
    RunOpts {
        build: BuildOpts {
            arch: o.arch,
            variant: o.variant,
            kernel: series::Kernel::Broken,
            force: false,
            mailed_only: true,
            fragments: Vec::new(),
        },
        accel: o.accel,
        timeout: o.timeout,
        files: Vec::new(),
        no_khugepaged: false,
        race_only: true,
        race_args: o.race_args.clone(),
        race_prefix: format!("echo {} > {DELAY_KNOB}", o.delay_us),
        guests: 1,
        impls: Vec::new(),
        append: String::new(),
        setup: None,
        command: Vec::new(),
    }
}

/// Build the broken kernel and the race selftest: [`guest_run::prepare`] of [`run_opts`].
pub fn prepare(layout: &Layout, o: &Opts) -> Result<guest_run::Ready> {
    guest_run::prepare(layout, &run_opts(o))
}

/// Boot the [`prepare`]d broken kernel, and succeed only if the race selftest caught the bug.
pub fn finish(layout: &Layout, o: &Opts, ro: &RunOpts, ready: guest_run::Ready) -> Result<()> {
    let guest_run::Ready {
        built,
        plan,
        bins,
        mut stages,
    } = ready;
    let logs = guest_run::boot(layout, &built, &plan, &bins, ro, &mut stages, None)?;
    let v = guest_run::judge(&built, &plan, &logs);
    let caught = judge(&v, &logs.tests);
    let report = match &caught {
        Ok(lines) => format!("the race selftest caught the bug:\n  {}\n", lines.join("\n  ")),
        Err(e) => format!("the control failed: {e:#}\n\n{}", verdict::render(&v)),
    };
    let judged = serde_json::json!({ "caught": caught.as_ref().ok(), "verdict": v });
    guest_run::record(&built, &logs, &stages, ("control.txt", &report), judged, caught.is_ok())?;
    let caught = caught.context(Failure::Test)?;
    println!(
        "negative control (broken kernel, {} µs delay): the race selftest caught the bug",
        o.delay_us
    );
    for line in &caught {
        println!("  {line}");
    }
    Ok(())
}

/// What one test of the race selftest did on the broken kernel.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub test: String,
    pub status: Status,
    /// The round of the first failed check, from the test's `round N` log line.
    pub round: Option<u64>,
}

/// The tests of the race selftest's section of `tests_log`, with the round each failed at.
pub fn outcomes(tests_log: &str) -> Vec<Outcome> {
    let (_, _, sections) = verdict::split_sections(tests_log);
    let Some(section) = sections
        .iter()
        .find(|s| s.name.split_whitespace().next() == Some(PROGRAM))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut round = None;
    for line in &section.lines {
        if let Some(t) = crate::ktap::parse_result(line) {
            out.push(Outcome {
                test: t.name,
                status: t.status,
                round: round.take(),
            });
        } else if line.contains("RUN ") {
            round = None;
        } else if round.is_none() {
            round = first_round(line);
        }
    }
    out
}

/// `# collapse_retract_race.c:643:race:round 21: UFFDIO_COPY: …` -> 21.
fn first_round(line: &str) -> Option<u64> {
    let rest = &line[line.find(":round ")? + ":round ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Succeeds only if the run completed and every test in [`MUST_FAIL`] failed by a check of the
/// test. Returns one line per test of the selftest, and the kernel's reports, for the record.
pub fn judge(v: &Verdict, tests_log: &str) -> Result<Vec<String>> {
    if !v.problems.is_empty() {
        bail!(
            "the control run did not complete, so it proves nothing:\n  {}",
            v.problems.join("\n  ")
        );
    }
    let outcomes = outcomes(tests_log);
    if outcomes.is_empty() {
        bail!("no KTAP result from {PROGRAM} in the control run");
    }
    let mut lines = Vec::new();
    let mut missed = Vec::new();
    for &name in MUST_FAIL {
        match outcomes.iter().find(|o| o.test == name) {
            Some(Outcome {
                status: Status::Fail,
                round: Some(_),
                ..
            }) => {}
            Some(Outcome {
                status: Status::Fail,
                round: None,
                ..
            }) => missed.push(format!("{name} failed, but not by a per-round check (setup error?)")),
            Some(o) => missed.push(format!("{name}: {:?} on the broken kernel", o.status)),
            None => missed.push(format!("{name} did not run")),
        }
    }
    for o in &outcomes {
        lines.push(match (o.status, o.round) {
            (Status::Fail, Some(r)) => format!("{}: FAILED at round {r}", o.test),
            (s, _) => format!("{}: {s:?}", o.test),
        });
    }
    for s in &v.splats {
        lines.push(format!("kernel: {}", s.text));
    }
    if !missed.is_empty() {
        bail!(
            "the race selftest did not catch the re-opened window on the broken kernel:\n  {}\n{}",
            missed.join("\n  "),
            lines.join("\n")
        );
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tests.log of `cargo harness control` on 2026-11-26 (broken kernel, no delay).
    const CAUGHT: &str = include_str!("../tests/fixtures/tests-broken-control.log");

    fn verdict_of(log: &str) -> Verdict {
        verdict::judge(log, "", Vec::new(), &[PROGRAM.to_string()], 2, false, &[])
    }

    #[test]
    fn a_caught_race_passes_the_control() {
        let o = outcomes(CAUGHT);
        let rounds: Vec<_> = o.iter().map(|o| (o.test.as_str(), o.status, o.round)).collect();
        assert_eq!(
            rounds,
            [
                ("collapse_race.uffd_copy.race", Status::Fail, Some(3)),
                ("collapse_race.uffd_zeropage.race", Status::Fail, Some(1)),
                ("collapse_race.guard_install.race", Status::Fail, Some(1)),
            ]
        );
        let lines = judge(&verdict_of(CAUGHT), CAUGHT).expect("the control must pass");
        assert_eq!(lines[0], "collapse_race.uffd_copy.race: FAILED at round 3");
    }

    #[test]
    fn a_passing_selftest_fails_the_control() {
        let passed: String = CAUGHT
            .lines()
            .filter(|l| !l.contains(":round "))
            .map(|l| l.replacen("not ok", "ok", 1) + "\n")
            .collect();
        let e = judge(&verdict_of(&passed), &passed).unwrap_err().to_string();
        assert!(e.contains("did not catch"), "{e}");
        assert!(e.contains("collapse_race.uffd_copy.race: Pass"), "{e}");
    }

    #[test]
    fn a_failure_without_a_round_is_not_a_catch() {
        let setup_error: String = CAUGHT
            .lines()
            .filter(|l| !l.contains("round 3"))
            .map(|l| l.to_string() + "\n")
            .collect();
        let e = judge(&verdict_of(&setup_error), &setup_error).unwrap_err().to_string();
        assert!(e.contains("uffd_copy.race failed, but not by a per-round check"), "{e}");
    }

    #[test]
    fn an_unfinished_run_proves_nothing() {
        let v = verdict::judge(CAUGHT, "", Vec::new(), &[PROGRAM.to_string()], 2, true, &[]);
        assert!(judge(&v, CAUGHT).unwrap_err().to_string().contains("did not complete"));
    }

    #[test]
    fn finds_the_round() {
        assert_eq!(
            first_round("# collapse_retract_race.c:643:race:round 21: UFFDIO_COPY: x"),
            Some(21)
        );
        assert_eq!(
            first_round("# collapse_retract_race.c:652:race:round 7 (start): collapse ok"),
            Some(7)
        );
        assert_eq!(
            first_round("# racing UFFDIO_COPY against MADV_COLLAPSE: up to 20000 rounds"),
            None
        );
        assert_eq!(first_round("# 1150 rounds in 10.0 s, per round 3697 us setup"), None);
    }
}
