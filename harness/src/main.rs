//! `cargo harness`: build, boot and test the khugepaged Rust series on
//! Linux 7.3. Thin orchestration around kbuild, kselftest, QEMU and git.
//!
//! This file only maps the command line onto the library's stages (`lib.rs`).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use harness::failure::{self, Failure};
use harness::layout::Layout;
use harness::pipeline::{self, BuildOpts, Stages};
use harness::run::{self, RunOpts};
use harness::suite::{self, GuestSpec};
use harness::{arch, base, bench, control, cross, guest, mail, series, toolchain};

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
        #[arg(long = "guest", default_values = ["x86_64:default", "x86_64:shared-ptl", "arm64:default"])]
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

fn main() {
    let cli = Cli::parse();
    let layout = Layout::discover();
    let r = match cli.command {
        Command::Install { arches } => pipeline::install(&layout, &arches),
        Command::Check => base::ensure(&layout).and_then(|_| toolchain::check(&layout, &layout.base_repo())),
        Command::Apply { force, mailed_only } => base::ensure(&layout)
            .and_then(|_| series::apply(&layout, !mailed_only, force))
            .map(|wt| {
                eprintln!("work tree ready: {}", wt.display());
            }),
        Command::Export => export(&layout),
        Command::Build(o) => pipeline::prepare(&layout, &o, &mut Stages::default()).map(|_| ()),
        Command::Run(o) => run::run(&layout, &o).and_then(|(v, _)| {
            if v.ok() {
                Ok(())
            } else {
                Err(anyhow::anyhow!("the verdict is a failure")).context(Failure::Test)
            }
        }),
        Command::Control(o) => control::run(&layout, &o),
        Command::Test { guests, accel } => suite::test(&layout, &guests, accel),
        Command::Bench(o) => bench::run(&layout, &o).and_then(|ok| {
            if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("the benchmark is not a result")).context(Failure::Test)
            }
        }),
        Command::Mail(o) => base::ensure(&layout).and_then(|_| mail::run(&layout, &o)),
        Command::Cross(o) => base::ensure(&layout).and_then(|_| cross::run(&layout, &o).map(|_| ())),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(failure::exit_code(&e));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `.ci/run` is `cargo harness test` without arguments: its guests are these defaults.
    #[test]
    fn the_suite_boots_both_x86_64_configurations_and_arm64_by_default() {
        let Ok(Cli {
            command: Command::Test { guests, .. },
        }) = Cli::try_parse_from(["harness", "test"])
        else {
            panic!("`harness test` does not parse as the suite");
        };
        let names: Vec<String> = guests
            .iter()
            .map(|g| format!("{}:{}", g.arch.name(), g.variant.name()))
            .collect();
        assert_eq!(names, ["x86_64:default", "x86_64:shared-ptl", "arm64:default"]);
    }
}
