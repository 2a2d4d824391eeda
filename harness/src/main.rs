//! `cargo harness`: build, boot and test the khugepaged Rust series on
//! Linux 7.3. Thin orchestration around kbuild, kselftest, QEMU and git.

mod ab;
mod accel;
mod arch;
mod base;
mod bench;
mod build;
mod cmd;
mod config;
mod control;
mod cross;
mod guest;
mod heartbeat;
mod ktap;
mod layout;
mod mail;
mod series;
mod toolchain;
mod verdict;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use config::Variant;
use layout::Layout;

#[derive(Parser)]
#[command(about = "Build, boot and test the khugepaged Rust series on Linux 7.3")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the toolchain (Debian packages, bindgen) and the base (needs root).
    Install {
        /// Guest architectures to install QEMU, a cross compiler and busybox for.
        #[arg(long = "arch", value_enum, default_values = ["x86_64"])]
        arches: Vec<arch::Arch>,
    },
    /// Check the toolchain against the kernel's minimum versions.
    Check,
    /// Apply patches/ to the work tree (work/linux) with `git am`.
    Apply {
        /// Discard work-tree commits and edits that are not in patches/.
        #[arg(long)]
        force: bool,
        /// Only the mailed series, without patches/local/.
        #[arg(long)]
        mailed_only: bool,
    },
    /// Export the work tree's commits into patches/ (and patches/local/).
    Export,
    /// Apply, configure and build the kernel.
    Build(BuildOpts),
    /// The main job: install what is missing, apply, build, boot, run the
    /// khugepaged kselftests (and any extra command), print the verdict.
    Run(RunOpts),
    /// The whole test suite: unit tests and model check (`cargo test`), then
    /// the guest runs under each lock configuration.
    Test {
        /// Guest runs, `ARCH:CONFIG` each (x86_64 or arm64; default, shared-ptl or kasan).
        #[arg(long = "guest", default_values = ["x86_64:default", "x86_64:shared-ptl"])]
        guests: Vec<GuestSpec>,
        #[arg(long, value_enum, default_value = "auto")]
        accel: guest::Accel,
    },
    /// Mail a series (`--series fixes`: `[PATCH 0/4]`, first; `--series rfc`:
    /// `[RFC PATCH vN 0/6]` on top) into work/mail/<series>/vN: checkpatch,
    /// subjects, trailers, kernel-doc, per-patch builds, get_maintainer, then
    /// `git send-email --dry-run` (a real send needs --signoff, --send and
    /// --smtp-server); `--report`: the maintainers-only reports.
    Mail(mail::Opts),
    /// Cross-build the mailed series (`vmlinux` of a small configuration) for
    /// the architectures with HAVE_RUST and the configurations the kernel test
    /// robot tries: the series' options on, THP off, the options off; and
    /// `--each-patch ARCH` every patch in turn. Prints a table.
    Cross(cross::Opts),
    /// Benchmark the C and Rust try_collapse_pte_mapped_thp() in one boot
    /// (guest/bench/collapse_bench.c, alternating rounds via the debugfs switch).
    Bench(bench::BenchOpts),
    /// Negative control: build the broken kernel (patches/broken: the 2023
    /// window re-opened), run the race selftest on it, and succeed only if
    /// the selftest catches the bug.
    Control(control::Opts),
}

#[derive(Args, Clone)]
struct BuildOpts {
    /// The guest's architecture: x86_64 (QEMU's PC) or arm64 (QEMU's virt board, contpte).
    #[arg(long, value_enum, default_value = "x86_64")]
    arch: arch::Arch,
    /// Lock/debug configuration.
    #[arg(long = "config", value_enum, default_value = "default")]
    variant: Variant,
    /// Which kernel: the series, or the broken negative control.
    #[arg(long, value_enum, default_value = "series")]
    kernel: series::Kernel,
    /// Discard work-tree changes that are not in patches/.
    #[arg(long)]
    force: bool,
    /// Build the mailed series only, without patches/local/.
    #[arg(long)]
    mailed_only: bool,
}

#[derive(Args, Clone)]
struct RunOpts {
    #[command(flatten)]
    build: BuildOpts,
    #[arg(long, value_enum, default_value = "auto")]
    accel: guest::Accel,
    /// Hard limit for the guest, in seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Extra file for the guest, `HOST_PATH[:NAME]`, placed in /khrs.
    #[arg(long = "file")]
    files: Vec<String>,
    /// Do not run the khugepaged kselftests (only the extra command).
    #[arg(long)]
    no_khugepaged: bool,
    /// Implementations to run the cases under, one block each, when the
    /// local debugfs switch is built in (ignored on a kernel without it).
    #[arg(long = "impl", value_enum, default_values = ["rust"])]
    impls: Vec<ab::Impl>,
    /// Arguments for the race selftests (e.g. `-s 60 -n 100000`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    race_args: String,
    /// Run only the race selftests, not the khugepaged cases.
    #[arg(long, conflicts_with = "no_khugepaged")]
    race_only: bool,
    /// Shell command run before each race selftest (e.g. to set a debugfs knob).
    #[arg(long, default_value = "")]
    race_prefix: String,
    /// Extra kernel command-line arguments.
    #[arg(long, default_value = "")]
    append: String,
    /// A command to run in the guest after the tests (from /khrs).
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    let layout = Layout::discover();
    let r = match cli.command {
        Command::Install { arches } => install(&layout, &arches),
        Command::Check => base::ensure(&layout).and_then(|_| toolchain::check(&layout, &layout.base_repo())),
        Command::Apply { force, mailed_only } => base::ensure(&layout)
            .and_then(|_| series::apply(&layout, !mailed_only, force))
            .map(|wt| {
                eprintln!("work tree ready: {}", wt.display());
            }),
        Command::Export => export(&layout),
        Command::Build(o) => prepare(&layout, &o, &mut Vec::new()).map(|_| ()),
        Command::Run(o) => run(&layout, &o).and_then(|(v, _)| if v.ok() { Ok(()) } else { bail!("the run failed") }),
        Command::Control(o) => control::run(&layout, &o),
        Command::Test { guests, accel } => test(&layout, &guests, accel),
        Command::Bench(o) => bench::run(&layout, &o).and_then(|ok| {
            if ok {
                Ok(())
            } else {
                bail!("the benchmark is not a result")
            }
        }),
        Command::Mail(o) => base::ensure(&layout).and_then(|_| mail::run(&layout, &o)),
        Command::Cross(o) => base::ensure(&layout).and_then(|_| cross::run(&layout, &o).map(|_| ())),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn install(layout: &Layout, arches: &[arch::Arch]) -> Result<()> {
    for a in arches {
        toolchain::install(layout, a.guest_machine()?)?;
    }
    base::ensure(layout)?;
    toolchain::check(layout, &layout.base_repo())
}

fn export(layout: &Layout) -> Result<()> {
    let wt = layout.work_tree();
    let e = series::export_to(&wt, &layout.patches())?;
    eprintln!(
        "exported {} fixes, {} mailed and {} local patches into {}",
        e.fixes.len(),
        e.mailed.len(),
        e.local.len(),
        layout.patches().display()
    );
    Ok(())
}

type Stages = Vec<(String, f64)>;

fn timed<T>(stages: &mut Stages, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f()?;
    stages.push((name.to_string(), t.elapsed().as_secs_f64()));
    Ok(r)
}

/// Install what is missing, apply, configure, build. Returns (tree, build dir, boot image).
fn prepare(layout: &Layout, o: &BuildOpts, stages: &mut Stages) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let machine = o.arch.guest_machine()?;
    timed(stages, "install", || {
        let ready = base::is_ready(layout)
            && toolchain::check(layout, &layout.base_repo()).is_ok()
            && toolchain::check_machine(layout, machine).is_ok();
        if !ready {
            toolchain::install(layout, machine)?;
        }
        Ok(())
    })?;
    timed(stages, "unpack", || base::ensure(layout))?;
    let with_series = o.kernel == series::Kernel::Series;
    let tree = timed(stages, "apply", || {
        if with_series {
            series::apply(layout, !o.mailed_only, o.force)
        } else {
            series::apply_broken(layout)
        }
    })?;
    toolchain::check(layout, &tree)?;
    // The negative control's tree is a tree of its own: its build directory has the
    // variant's name too, and the same relative paths, so ccache shares the base's objects.
    let build = Layout::build_dir(&tree, &machine.build_name(o.variant.name()));
    timed(stages, "configure", || {
        toolchain::rust_available(layout, &tree, &build)?;
        config::configure(layout, &tree, &build, machine, o.variant, with_series)
    })?;
    let (image, _) = timed(stages, "build", || build::kernel(layout, &tree, &build, machine))?;
    Ok((tree, build, image))
}

/// One guest run; returns its verdict and the directory of its logs.
fn run(layout: &Layout, o: &RunOpts) -> Result<(verdict::Verdict, PathBuf)> {
    let mut stages = Stages::new();
    let machine = o.build.arch.guest_machine()?;
    let (tree, build, image) = prepare(layout, &o.build, &mut stages)?;
    let run_vmtests = std::fs::read_to_string(tree.join("tools/testing/selftests/mm/run_vmtests.sh"))?;
    let khugepaged = !o.no_khugepaged && !o.race_only;
    let mut cases = if khugepaged {
        guest::khugepaged_cases(&run_vmtests)
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
        guest::race_cases(&run_vmtests, &o.race_args)
    };
    if o.race_only && races.is_empty() {
        bail!(
            "--race-only, but run_vmtests.sh in {} lists no race selftest",
            tree.display()
        );
    }
    let mut programs: Vec<String> = if khugepaged {
        vec!["khugepaged".to_string()]
    } else {
        Vec::new()
    };
    programs.extend(
        races
            .iter()
            .filter_map(|c| c.command.split_whitespace().next())
            .map(|p| p.trim_start_matches("./").to_string()),
    );
    cases.extend(races.iter().cloned().map(|mut c| {
        if !o.race_prefix.is_empty() {
            c.command = format!("{} && {}", o.race_prefix, c.command);
        }
        c
    }));
    let programs: Vec<&str> = programs.iter().map(String::as_str).collect();
    let (bins, _) = timed(&mut stages, "selftests", || {
        build::selftests(layout, &tree, &build, machine, &programs)
    })?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let dir = layout.runs().join(format!(
        "{stamp}-{}{}",
        if o.build.kernel == series::Kernel::Broken {
            "broken-"
        } else {
            ""
        },
        machine.build_name(o.build.variant.name())
    ));
    std::fs::create_dir_all(&dir)?;
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for p in &programs {
        files.push((bins.join(p), p.to_string()));
    }
    for f in &o.files {
        let (src, name) = match f.split_once(':') {
            Some((s, n)) => (PathBuf::from(s), n.to_string()),
            None => {
                let p = PathBuf::from(f);
                let n = p
                    .file_name()
                    .context("--file needs a file name")?
                    .to_string_lossy()
                    .into_owned();
                (p, n)
            }
        };
        files.push((src, name));
    }
    // The C/Rust switch exists when the series' option is on and the local
    // stack (which adds the switch) is applied.
    let dot_config = std::fs::read_to_string(build.join(".config"))?;
    let impls: Vec<ab::Impl> = if o.build.kernel == series::Kernel::Series
        && !o.build.mailed_only
        && !o.no_khugepaged
        && dot_config.contains("\nCONFIG_KHUGEPAGED_RUST=y")
    {
        o.impls.clone()
    } else {
        Vec::new()
    };
    if !impls.is_empty() {
        cases = ab::blocks(&cases, &impls);
    }
    if !o.command.is_empty() {
        let c = o.command.join(" ");
        cases.push(guest::Case {
            name: c.clone(),
            command: c,
        });
    }
    let init = layout.guest_files().join("init");
    let busybox = toolchain::busybox(layout, machine);
    let initramfs = guest::pack(
        &guest::Initramfs {
            busybox: &busybox,
            init: &init,
            files,
            cases: &cases,
            setup: None,
        },
        &dir,
    )?;
    let disks = guest::disks(&dir)?;
    let append = format!("page_table_check=on {}", o.append);
    let boot = guest::Boot {
        machine,
        kernel: &image,
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
    let accel = guest::resolve_accel(&boot)?;
    eprintln!(
        "  guest: {} on {:?}, 2 vCPUs, logs in {}",
        machine.qemu,
        accel,
        dir.display()
    );
    let outcome = timed(&mut stages, "boot+run", || guest::run(&boot, accel))?;
    for d in &disks {
        let _ = std::fs::remove_file(d);
    }
    let tests_log = std::fs::read_to_string(&boot.tests).unwrap_or_default();
    let console = std::fs::read_to_string(&boot.console).unwrap_or_default();
    let expected: Vec<String> = cases.iter().map(|c| c.name.clone()).collect();
    let v = verdict::judge(&tests_log, &console, &expected, 2, outcome.timed_out, &impls);
    let text = verdict::render(&v);
    std::fs::write(dir.join("verdict.txt"), &text)?;
    let json = serde_json::json!({
        "kernel": o.build.kernel,
        "arch": o.build.arch,
        "config": o.build.variant,
        "impls": impls,
        "accel": accel,
        "image": image,
        "build_dir": build,
        "stages_seconds": stages.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "boot": outcome,
        "verdict": v,
        "ok": v.ok(),
    });
    std::fs::write(dir.join("result.json"), serde_json::to_string_pretty(&json)?)?;
    eprintln!(
        "stages: {}",
        stages
            .iter()
            .map(|(n, s)| format!("{n} {s:.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{text}");
    eprintln!(
        "console: {}\nresult: {}",
        boot.console.display(),
        dir.join("result.json").display()
    );
    Ok((v, dir))
}

/// One guest run of `cargo harness test`: an architecture and a lock configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GuestSpec {
    arch: arch::Arch,
    variant: Variant,
}

impl std::str::FromStr for GuestSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        use clap::ValueEnum;
        let (a, v) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected ARCH:CONFIG, e.g. arm64:default"))?;
        let arch = arch::Arch::from_str(a, false)?;
        arch.guest_machine().map_err(|e| e.to_string())?;
        Ok(GuestSpec {
            arch,
            variant: Variant::from_str(v, false)?,
        })
    }
}

fn test(layout: &Layout, guests: &[GuestSpec], accel: guest::Accel) -> Result<()> {
    let mut failed = Vec::new();
    eprintln!("== cargo test --workspace (harness unit tests, model check)");
    if let Err(e) = cmd::run(
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&layout.repo)
            .args(["test", "--workspace", "--release"]),
    ) {
        failed.push(format!("cargo test: {e:#}"));
    }
    eprintln!(
        "== mail loopback round trip (fixes, then the RFC on top: git send-email to 127.0.0.1, git am, compare trees)"
    );
    if let Err(e) = base::ensure(layout).and_then(|_| mail::loopback_round_trip(layout)) {
        failed.push(format!("mail loopback round trip: {e:#}"));
    }
    eprintln!("== mail --rebase-onto, onto two bases made from this one (fixes merged; a line of a fix changed)");
    if let Err(e) = mail::rebase_self_test(layout) {
        failed.push(format!("mail rebase self-test: {e:#}"));
    }
    // The cheapest cell that catches a break every RUST=y kernel would see (about 3 min
    // with a warm ccache); `cargo harness cross` runs the whole matrix.
    eprintln!("== cross build: x86_64 with CONFIG_RUST=y and THP off (cargo harness cross)");
    let thp_off = cross::Opts {
        arches: vec![cross::Arch::X86_64],
        flavours: vec![cross::Flavour::ThpOff],
        each_patch: Vec::new(),
        fail_fast: false,
    };
    if let Err(e) = cross::run(layout, &thp_off) {
        failed.push(format!("cross build: {e:#}"));
    }
    for g in guests {
        let name = format!("{} {}", g.arch.name(), g.variant.name());
        eprintln!("== guest run, {name}");
        let o = RunOpts {
            build: BuildOpts {
                arch: g.arch,
                variant: g.variant,
                kernel: series::Kernel::Series,
                force: false,
                mailed_only: false,
            },
            accel,
            timeout: 1800,
            files: Vec::new(),
            no_khugepaged: false,
            append: String::new(),
            race_args: String::new(),
            race_only: false,
            race_prefix: String::new(),
            impls: vec![ab::Impl::Rust, ab::Impl::RustRelock, ab::Impl::C],
            command: Vec::new(),
        };
        match run(layout, &o).map(|(v, _)| v.ok()) {
            Ok(true) => {}
            Ok(false) => failed.push(format!("guest run {name}: see its verdict above")),
            Err(e) => failed.push(format!("guest run {name}: {e:#}")),
        }
    }
    eprintln!("== negative control: the race selftest must fail on the broken kernel (patches/broken)");
    let control = control::Opts {
        arch: arch::Arch::X86_64,
        variant: Variant::Default,
        delay_us: 0,
        race_args: String::new(),
        accel,
        timeout: 600,
    };
    if let Err(e) = control::run(layout, &control) {
        failed.push(format!("negative control: {e:#}"));
    }
    if !failed.is_empty() {
        bail!("test suite failed:\n  {}", failed.join("\n  "));
    }
    eprintln!("test suite passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_spec_is_an_arch_with_a_guest_and_a_config() {
        let g: GuestSpec = "arm64:shared-ptl".parse().unwrap();
        assert_eq!(
            g,
            GuestSpec {
                arch: arch::Arch::Arm64,
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
}
