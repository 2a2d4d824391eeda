//! A guest run, in stages: [`plan`] what the guest runs (the khugepaged invocations of the
//! tree's run_vmtests.sh, the race selftest, under each implementation), [`boot`] it on the
//! [`Built`] kernel and collect the [`Logs`], then [`judge`] them into a verdict that
//! [`record`] writes. `cargo harness run` is all four; the control and the benchmark reuse
//! the first two with judges of their own.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::ab::{self, Impl};
use crate::failure::Failure;
use crate::guest::{self, Accel};
use crate::layout::Layout;
use crate::pipeline::{self, BuildOpts, Built, Stages};
use crate::{cmd, series, toolchain, verdict};

/// A file for the guest: `HOST_PATH[:NAME]`, placed in /khrs as NAME (default: its file name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    pub src: PathBuf,
    pub name: String,
}

impl FromStr for GuestFile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (src, name) = match s.split_once(':') {
            Some((src, name)) => (PathBuf::from(src), name.to_string()),
            None => {
                let src = PathBuf::from(s);
                let name = src
                    .file_name()
                    .ok_or_else(|| format!("{s:?} has no file name: give HOST_PATH:NAME"))?
                    .to_string_lossy()
                    .into_owned();
                (src, name)
            }
        };
        if name.is_empty() || name.contains('/') {
            return Err(format!("{s:?}: NAME must be a plain file name"));
        }
        Ok(GuestFile { src, name })
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct RunOpts {
    #[command(flatten)]
    pub build: BuildOpts,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: Accel,
    /// Hard limit for the guest, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Extra file for the guest, `HOST_PATH[:NAME]`, placed in /khrs.
    #[arg(long = "file")]
    pub files: Vec<GuestFile>,
    /// Do not run the khugepaged kselftests (only the extra command).
    #[arg(long)]
    pub no_khugepaged: bool,
    /// Implementations to run the cases under, one block each. Other than `rust` they need
    /// the local debugfs switch (patches/local), so not with --mailed-only.
    #[arg(long = "impl", value_enum, default_values = ["rust"])]
    pub impls: Vec<Impl>,
    /// Arguments for the race selftests (e.g. `-s 60 -n 100000`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub race_args: String,
    /// Run only the race selftests, not the khugepaged cases.
    #[arg(long, conflicts_with = "no_khugepaged")]
    pub race_only: bool,
    /// Shell command run before each race selftest (e.g. to set a debugfs knob).
    #[arg(long, default_value = "")]
    pub race_prefix: String,
    /// Guests to boot side by side (2 vCPUs and 2 GiB each), the tests dealt among them in
    /// turn; each guest runs its tests under every `--impl`. For a host with cores to spare.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub guests: u32,
    /// Extra kernel command-line arguments.
    #[arg(long, default_value = "")]
    pub append: String,
    /// A shell command the guest runs before the first case (its output goes to the tests'
    /// log), e.g. to turn tracepoints on for the whole run.
    #[arg(long)]
    pub setup: Option<String>,
    /// A command to run in the guest after the tests (from /khrs): one argument is a shell
    /// command line, several are a program and its arguments.
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl RunOpts {
    /// The test suite's run of `build`: every khugepaged invocation and the race selftest,
    /// under `impls`.
    pub fn suite(build: BuildOpts, accel: Accel, impls: Vec<Impl>) -> RunOpts {
        RunOpts {
            build,
            accel,
            timeout: 1800,
            files: Vec::new(),
            no_khugepaged: false,
            impls,
            race_args: String::new(),
            race_only: false,
            race_prefix: String::new(),
            guests: 1,
            append: String::new(),
            setup: None,
            command: Vec::new(),
        }
    }
}

/// What the guest runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPlan {
    /// The tests, in order, each run once per implementation ([`GuestPlan::cases`]).
    pub tests: Vec<guest::Case>,
    /// The command of `-- CMD`, run once after the tests.
    pub command: Option<guest::Case>,
    /// The selftest programs to build and pack.
    pub programs: Vec<String>,
    /// The implementations the blocks run under (empty: the kernel's own).
    pub impls: Vec<Impl>,
}

impl GuestPlan {
    /// What the guest runs, in order: the tests, with implementations one block each with the
    /// switch's counters read around it ([`ab::blocks`]), then the command.
    pub fn cases(&self) -> Vec<guest::Case> {
        let mut cases = if self.impls.is_empty() {
            self.tests.clone()
        } else {
            ab::blocks(&self.tests, &self.impls)
        };
        cases.extend(self.command.clone());
        cases
    }

    /// The plan dealt over `n` guests: the tests in turn (the plan's order puts the two long
    /// anon invocations, `khugepaged` and `khugepaged -s 2`, on different guests), each guest
    /// running its tests under every implementation; the command runs in the first guest.
    pub fn split(&self, n: usize) -> Result<Vec<GuestPlan>> {
        if n > 1 && n > self.tests.len() {
            bail!(
                "--guests {n}, but there are only {} test(s) to deal among them",
                self.tests.len()
            );
        }
        Ok((0..n.max(1))
            .map(|k| GuestPlan {
                tests: self.tests.iter().skip(k).step_by(n.max(1)).cloned().collect(),
                command: self.command.clone().filter(|_| k == 0),
                programs: self.programs.clone(),
                impls: self.impls.clone(),
            })
            .collect())
    }
}

/// The plan for `o` from the tree's run_vmtests.sh; `switch` says whether the kernel has the
/// local C/Rust switch.
pub fn plan(run_vmtests: &str, o: &RunOpts, switch: bool) -> Result<GuestPlan> {
    let khugepaged = !o.no_khugepaged && !o.race_only;
    let mut cases = if khugepaged {
        guest::khugepaged_cases(run_vmtests)
    } else {
        Vec::new()
    };
    if khugepaged && cases.len() != 6 {
        bail!(
            "expected the six khugepaged invocations in run_vmtests.sh, found {}",
            cases.len()
        );
    }
    let races = if o.no_khugepaged {
        Vec::new()
    } else {
        guest::race_cases(run_vmtests, &o.race_args)
    };
    if o.race_only && races.is_empty() {
        bail!("--race-only, but run_vmtests.sh lists no race selftest");
    }
    let mut programs: Vec<String> = Vec::new();
    if khugepaged {
        programs.push("khugepaged".into());
    }
    programs.extend(
        guest::RACE_PROGRAMS
            .iter()
            .filter(|p| races.iter().any(|c| c.name.split_whitespace().next() == Some(**p)))
            .map(|p| p.to_string()),
    );
    cases.extend(races.into_iter().map(|mut c| {
        if !o.race_prefix.is_empty() {
            c.command = format!("{} && {}", o.race_prefix, c.command);
        }
        c
    }));
    let impls = if o.no_khugepaged {
        if let Some(i) = o.impls.iter().find(|i| **i != Impl::Rust) {
            bail!(
                "--impl {} chooses what the khugepaged cases and the race selftest run under, \
                 and --no-khugepaged runs neither",
                i.label()
            );
        }
        Vec::new()
    } else if switch {
        o.impls.clone()
    } else {
        if let Some(i) = o.impls.iter().find(|i| **i != Impl::Rust) {
            bail!(
                "--impl {} needs the local C/Rust switch (patches/local, CONFIG_KHUGEPAGED_RUST), \
                 which this kernel does not have",
                i.label()
            );
        }
        Vec::new()
    };
    let command = (!o.command.is_empty()).then(|| {
        let c = guest::command_line(&o.command);
        guest::Case {
            name: c.clone(),
            command: c,
        }
    });
    Ok(GuestPlan {
        tests: cases,
        command,
        programs,
        impls,
    })
}

/// What a boot left behind.
#[derive(Debug)]
pub struct Logs {
    /// The run's directory (initramfs, logs, verdict, result.json).
    pub dir: PathBuf,
    pub accel: Accel,
    pub outcome: guest::BootOutcome,
    /// What the guest's init wrote to the tests' port.
    pub tests: String,
    pub console: String,
    pub console_path: PathBuf,
}

/// A guest run up to its boot: the kernel built, the plan made, the plan's selftests built.
/// The suite hands it from its build lane to its guest lane ([`finish`]).
#[derive(Debug)]
pub struct Ready {
    pub built: Built,
    pub plan: GuestPlan,
    /// The directory with the plan's selftest programs.
    pub bins: PathBuf,
    pub stages: Stages,
}

/// Everything of a run of `o` that uses the host's CPUs: build the kernel, plan the guest
/// from the tree's run_vmtests.sh, build the plan's selftests.
pub fn prepare(layout: &Layout, o: &RunOpts) -> Result<Ready> {
    let mut stages = Stages::default();
    let built = pipeline::prepare(layout, &o.build, &mut stages)?;
    let run_vmtests = read_run_vmtests(&built.tree)?;
    let switch =
        o.build.kernel == series::Kernel::Series && !o.build.mailed_only && built.has("CONFIG_KHUGEPAGED_RUST");
    let plan = plan(&run_vmtests, o, switch).context(Failure::Setup)?;
    let programs: Vec<&str> = plan.programs.iter().map(String::as_str).collect();
    let (bins, _) = stages
        .timed("selftests", || {
            crate::build::selftests(layout, &built.tree, &built.out, built.machine, &programs)
        })
        .context(Failure::Build)?;
    Ok(Ready {
        built,
        plan,
        bins,
        stages,
    })
}

/// Pack the initramfs with the plan's programs (from `bins`) and boot `built` with it.
/// `guest` says which of several guests this is (1-based, `--guests`): its run directory's
/// name ends in `-guestN`, and its progress lines say `guestN`.
pub fn boot(
    layout: &Layout,
    built: &Built,
    plan: &GuestPlan,
    bins: &Path,
    o: &RunOpts,
    stages: &mut Stages,
    guest: Option<usize>,
) -> Result<Logs> {
    let (name, suffix) = match guest {
        Some(k) => (format!("guest{k}"), format!("-guest{k}")),
        None => ("guest".to_string(), String::new()),
    };
    let machine = built.machine;
    let programs: Vec<&str> = plan.programs.iter().map(String::as_str).collect();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let broken = if built.opts.kernel == series::Kernel::Broken {
        "broken-"
    } else {
        ""
    };
    let dir = layout.runs().join(format!(
        "{stamp}-{broken}{}{suffix}",
        machine.build_name(&built.opts.config_name())
    ));
    fs_err::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files: Vec<(PathBuf, String)> = programs.iter().map(|p| (bins.join(p), p.to_string())).collect();
    for f in &o.files {
        if !f.src.is_file() {
            bail!("--file {}: no such file", f.src.display());
        }
        files.push((f.src.clone(), f.name.clone()));
    }
    let init = layout.guest_files().join("init");
    let busybox = toolchain::busybox(layout, machine);
    let initramfs = guest::pack(
        &guest::Initramfs {
            busybox: &busybox,
            init: &init,
            files,
            cases: &plan.cases(),
            setup: o.setup.clone(),
        },
        &dir,
    )?;
    let disks = guest::disks(&dir)?;
    let append = format!("page_table_check=on {}", o.append);
    let boot = guest::Boot {
        name: &name,
        machine,
        kernel: &built.image,
        initramfs: &initramfs,
        disks: &disks,
        cpus: 2,
        mem_mb: 2048,
        accel: o.accel,
        append: append.trim(),
        timeout: Duration::from_secs(o.timeout),
        console: dir.join("console.log"),
        tests: dir.join("tests.log"),
        extra_args: &[],
    };
    let accel = guest::resolve_accel(&boot).context(Failure::Setup)?;
    eprintln!(
        "  guest: {} on {:?}, 2 vCPUs, logs in {}",
        machine.qemu,
        accel,
        dir.display()
    );
    let outcome = stages
        .timed("boot+run", || guest::run(&boot, accel))
        .context(Failure::Setup)?;
    for d in &disks {
        let _ = fs_err::remove_file(d);
    }
    Ok(Logs {
        accel,
        outcome,
        tests: fs_err::read_to_string(&boot.tests).unwrap_or_default(),
        console: fs_err::read_to_string(&boot.console).unwrap_or_default(),
        console_path: boot.console.clone(),
        dir,
    })
}

/// The KUnit results in the console log, by the tree's own `kunit.py parse --json`.
pub fn kunit_results(tree: &Path, logs: &Logs) -> Result<Vec<verdict::SuiteResult>> {
    let json = logs.dir.join("kunit.json");
    let out = cmd::output(
        std::process::Command::new(crate::mail::SYSTEM_PYTHON)
            .arg(tree.join("tools/testing/kunit/kunit.py"))
            .arg("parse")
            .arg(format!("--json={}", json.display()))
            .arg(&logs.console_path),
    );
    // kunit.py exits 1 when a test failed, after writing the JSON.
    let text = fs_err::read_to_string(&json).map_err(|e| {
        anyhow::anyhow!(
            "kunit.py parse wrote no {} ({e}); it said: {}",
            json.display(),
            out.err().map(|e| format!("{e:#}")).unwrap_or_default()
        )
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
    Ok(verdict::kunit_suites(&value))
}

/// The KUnit suites of the Rust tests, by the option that builds each: a kernel with the option
/// must report the suite (one whose KUnit never ran, or stopped before it, must not pass on its
/// selftests alone).
const RUST_KUNIT_SUITES: &[(&str, &str)] = &[
    ("CONFIG_RUST_KERNEL_DOCTESTS", "rust_doctests_kernel"),
    ("CONFIG_RUST_PGTABLE_KUNIT_TEST", "rust_mm_pgtable"),
];

/// The suites of [`RUST_KUNIT_SUITES`] that a kernel built with `config` must report.
pub fn required_kunit_suites(config: &BTreeMap<String, crate::config::Want>) -> Vec<&'static str> {
    let has = |s| crate::config::has(config, s);
    RUST_KUNIT_SUITES
        .iter()
        .filter(|(option, _)| has("CONFIG_KUNIT") && has(option))
        .map(|&(_, suite)| suite)
        .collect()
}

/// The verdict of a run of `plan` on the kernel `built`.
pub fn judge(built: &Built, plan: &GuestPlan, logs: &Logs) -> verdict::Verdict {
    let expected: Vec<String> = plan.cases().iter().map(|c| c.name.clone()).collect();
    let (kunit, mut problem) = match kunit_results(&built.tree, logs) {
        Ok(k) => (k, None),
        Err(e) => (Vec::new(), Some(format!("KUnit results: {e:#}"))),
    };
    if problem.is_none() {
        let missing: Vec<&str> = required_kunit_suites(&built.config)
            .into_iter()
            .filter(|r| !kunit.iter().any(|s| s.name == *r))
            .collect();
        if !missing.is_empty() {
            problem = Some(format!(
                "KUnit suite(s) the kernel's configuration has did not report: {}",
                missing.join(", ")
            ));
        }
    }
    let mut v = verdict::judge(
        &logs.tests,
        &logs.console,
        kunit,
        &expected,
        2,
        logs.outcome.timed_out,
        &plan.impls,
    );
    v.problems.extend(problem);
    v
}

/// Write `result.json` (and `text`, the judge's report, to `report`) in the run's directory.
pub fn record(
    built: &Built,
    logs: &Logs,
    stages: &Stages,
    report: (&str, &str),
    judged: serde_json::Value,
    ok: bool,
) -> Result<PathBuf> {
    let (report_name, text) = report;
    write(&logs.dir.join(report_name), text)?;
    let json = serde_json::json!({
        "kernel": built.opts.kernel,
        "arch": built.opts.arch,
        "config": built.opts.variant,
        "accel": logs.accel,
        "image": built.image,
        "build_dir": built.out,
        "stages_seconds": stages.seconds(),
        "boot": logs.outcome,
        "result": judged,
        "ok": ok,
    });
    let path = logs.dir.join("result.json");
    write(&path, &serde_json::to_string_pretty(&json)?)?;
    eprintln!("stages: {}", stages.line());
    Ok(path)
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs_err::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `cargo harness run`: [`prepare`], then [`finish`]. Returns the verdict and the logs (one
/// per guest).
pub fn run(layout: &Layout, o: &RunOpts) -> Result<(verdict::Verdict, Vec<Logs>)> {
    let ready = prepare(layout, o)?;
    finish(layout, o, ready)
}

/// The rest of a run, on a [`Ready`] kernel: boot (`--guests` side by side), judge, record,
/// print the verdict (with several guests, one verdict of them all: [`verdict::merge`]).
pub fn finish(layout: &Layout, o: &RunOpts, ready: Ready) -> Result<(verdict::Verdict, Vec<Logs>)> {
    let Ready {
        built,
        plan,
        bins,
        stages,
    } = ready;
    let plans = plan.split(o.guests as usize).context(Failure::Setup)?;
    let several = plans.len() > 1;
    let booted: Vec<Result<(GuestPlan, Logs, Stages)>> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .into_iter()
            .enumerate()
            .map(|(k, p)| {
                let (built, bins, mut stages) = (&built, &bins, stages.clone());
                let guest = several.then_some(k + 1);
                s.spawn(move || {
                    let logs = boot(layout, built, &p, bins, o, &mut stages, guest)?;
                    Ok((p, logs, stages))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a guest's thread panicked")))
            })
            .collect()
    });
    let mut verdicts = Vec::new();
    let mut all_logs = Vec::new();
    for (k, b) in booted.into_iter().enumerate() {
        let (p, logs, stages) = b?;
        let v = judge(&built, &p, &logs);
        let mut judged = serde_json::to_value(&v)?;
        judged["impls"] = serde_json::to_value(&p.impls)?;
        record(
            &built,
            &logs,
            &stages,
            ("verdict.txt", &verdict::render(&v)),
            judged,
            v.ok(),
        )?;
        verdicts.push((format!("guest{}", k + 1), v));
        all_logs.push(logs);
    }
    let v = if several {
        verdict::merge(verdicts)
    } else {
        verdicts.pop().map(|(_, v)| v).context("no guest was booted")?
    };
    println!("{}", verdict::render(&v));
    for logs in &all_logs {
        eprintln!(
            "console: {}\nresult: {}",
            logs.console_path.display(),
            logs.dir.join("result.json").display()
        );
    }
    Ok((v, all_logs))
}

/// The tree's run_vmtests.sh, where the khugepaged invocations and the race selftest are listed.
pub fn read_run_vmtests(tree: &Path) -> Result<String> {
    let p = tree.join("tools/testing/selftests/mm/run_vmtests.sh");
    fs_err::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_kunit_suites_are_required_where_the_configuration_has_them() {
        let series = crate::config::parse(
            "CONFIG_KUNIT=y\nCONFIG_RUST=y\nCONFIG_RUST_KERNEL_DOCTESTS=y\nCONFIG_RUST_PGTABLE_KUNIT_TEST=y\n",
        );
        assert_eq!(
            required_kunit_suites(&series),
            ["rust_doctests_kernel", "rust_mm_pgtable"]
        );
        // The negative control: KUnit without Rust.
        let control = crate::config::parse("CONFIG_KUNIT=y\n# CONFIG_RUST is not set\n");
        assert!(required_kunit_suites(&control).is_empty());
        let no_kunit = crate::config::parse("CONFIG_RUST_KERNEL_DOCTESTS=y\n");
        assert!(required_kunit_suites(&no_kunit).is_empty());
    }

    const RUN_VMTESTS: &str = "\
CATEGORY=\"thp\" run_test ./khugepaged
CATEGORY=\"thp\" run_test ./khugepaged -s 2
CATEGORY=\"thp\" run_test ./khugepaged all:shmem
CATEGORY=\"thp\" run_test ./khugepaged -s 4 all:shmem
CATEGORY=\"thp\" run_test ./khugepaged all:file ${SPLIT_HUGE_PAGE_TEST_XFS_PATH}
CATEGORY=\"thp\" run_test ./khugepaged -s 8 all:anon
CATEGORY=\"thp\" run_test ./collapse_retract_race
CATEGORY=\"thp\" run_test ./transhuge-stress -d 20
";

    fn opts(args: &[&str]) -> RunOpts {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            o: RunOpts,
        }
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .unwrap()
            .o
    }

    #[test]
    fn an_extra_fragment_gets_a_build_directory_of_its_own() {
        let o = opts(&["--arch", "arm64", "--fragment", "configs/extra/trace.config"]);
        assert_eq!(o.build.config_name(), "default+trace");
        assert_eq!(opts(&["--config", "shared-ptl"]).build.config_name(), "shared-ptl");
        let o = opts(&["--setup", "echo 1 > /sys/kernel/tracing/tracing_on"]);
        assert_eq!(o.setup.as_deref(), Some("echo 1 > /sys/kernel/tracing/tracing_on"));
    }

    #[test]
    fn every_case_under_every_implementation_with_the_switch() {
        let o = opts(&["--impl", "rust", "--impl", "c", "--race-args", "-s 3"]);
        let p = plan(RUN_VMTESTS, &o, true).unwrap();
        assert_eq!(p.programs, ["khugepaged", "collapse_retract_race"]);
        assert_eq!(p.impls, [Impl::Rust, Impl::C]);
        // A stats read first, then 7 cases and a stats read per implementation.
        assert_eq!(p.cases().len(), 1 + 2 * 8);
        assert!(p.cases().iter().any(|c| c.name == "[c] collapse_retract_race -s 3"));
        assert!(p
            .cases()
            .iter()
            .any(|c| c.name == "[rust] khugepaged all:file /mnt/file"));
    }

    #[test]
    fn without_the_switch_only_the_kernels_own_implementation() {
        let p = plan(RUN_VMTESTS, &opts(&[]), false).unwrap();
        assert!(p.impls.is_empty());
        assert_eq!(p.cases().len(), 7);
        let e = plan(RUN_VMTESTS, &opts(&["--impl", "c"]), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--impl c needs the local C/Rust switch"), "{e}");
        let e = plan(RUN_VMTESTS, &opts(&["--no-khugepaged", "--impl", "c"]), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--no-khugepaged runs neither"), "{e}");
    }

    #[test]
    fn race_only_with_a_prefix_and_an_extra_command() {
        let o = opts(&["--race-only", "--race-prefix", "echo 5 > /k", "--", "./x", "-v"]);
        let p = plan(RUN_VMTESTS, &o, false).unwrap();
        assert_eq!(p.programs, ["collapse_retract_race"]);
        let cases = p.cases();
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["collapse_retract_race", "./x -v"]);
        assert_eq!(p.cases()[0].command, "echo 5 > /k && ./collapse_retract_race");
        let e = plan("CATEGORY=\"thp\" run_test ./khugepaged\n", &opts(&[]), false).unwrap_err();
        assert!(e.to_string().contains("found 1"), "{e}");
        assert!(plan("", &o, false)
            .unwrap_err()
            .to_string()
            .contains("no race selftest"));
    }

    #[test]
    fn split_over_guests_deals_the_tests_in_turn() {
        let o = opts(&["--impl", "rust", "--impl", "c", "--guests", "2", "--", "dmesg"]);
        assert_eq!(o.guests, 2);
        let p = plan(RUN_VMTESTS, &o, true).unwrap();
        assert_eq!(p.split(1).unwrap(), std::slice::from_ref(&p));
        let g = p.split(2).unwrap();
        let names = |p: &GuestPlan| -> Vec<String> { p.tests.iter().map(|c| c.name.clone()).collect() };
        assert_eq!(
            names(&g[0]),
            [
                "khugepaged",
                "khugepaged all:shmem",
                "khugepaged all:file /mnt/file",
                "collapse_retract_race"
            ]
        );
        assert_eq!(
            names(&g[1]),
            [
                "khugepaged -s 2",
                "khugepaged -s 4 all:shmem",
                "khugepaged -s 8 all:anon"
            ]
        );
        // Each guest runs its tests under every implementation, with its own counter reads;
        // the command runs once, in the first guest.
        for (guest, tests) in g.iter().zip([4, 3]) {
            let cases = guest.cases();
            let stats = cases.iter().filter(|c| c.name.starts_with(ab::STATS_PREFIX)).count();
            assert_eq!(stats, 3);
            assert!(cases.iter().any(|c| c.name == format!("[c] {}", guest.tests[0].name)));
            assert_eq!(guest.impls, [Impl::Rust, Impl::C]);
            assert_eq!(cases.len(), 1 + 2 * (tests + 1) + usize::from(guest.command.is_some()));
        }
        assert_eq!(g[0].cases().last().map(|c| c.name.as_str()), Some("dmesg"));
        assert!(g[1].command.is_none());
        let every: usize = g.iter().map(|p| p.tests.len()).sum();
        assert_eq!(every, p.tests.len());
        let e = p.split(8).unwrap_err().to_string();
        assert!(e.contains("only 7 test(s)"), "{e}");
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            o: RunOpts,
        }
        assert!(Cli::try_parse_from(["run", "--guests", "0"]).is_err());
    }

    #[test]
    fn guest_files_parse_with_and_without_a_name() {
        let f: GuestFile = "/tmp/a.sh".parse().unwrap();
        assert_eq!((f.src.to_str(), f.name.as_str()), (Some("/tmp/a.sh"), "a.sh"));
        let f: GuestFile = "/tmp/a.sh:b".parse().unwrap();
        assert_eq!(f.name, "b");
        assert!("/tmp/a:x/y".parse::<GuestFile>().is_err());
        assert!("/".parse::<GuestFile>().is_err());
    }
}
