//! `cargo harness cross`: build the mailed series for the architectures with
//! `HAVE_RUST` and in the configurations the kernel test robot will try, with
//! clang/LLVM and the project's rustc and bindgen. A build is `vmlinux` of a
//! small configuration (`tinyconfig` + `configs/cross/*.config`), in
//! `work/cross-tree/build-cross-<arch>-<flavour>` so that ccache is shared
//! with every other build of the same sources.
//!
//! The tree is its own clone of the base with `patches/fixes/` and
//! `patches/` applied (no `patches/local/`: the robot sees what is mailed),
//! re-made when the patches change, so it never disturbs `work/linux`.

use anyhow::{bail, Result};
use fs_err as fs;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::arch::Arch;
use crate::build;
use crate::cmd;
use crate::config;
use crate::layout::{Layout, BASE_TAG};
use crate::series;

/// What the configuration holds besides the architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavour {
    /// The series' options on (`configs/series.config`), with THP and KUnit.
    Series,
    /// `CONFIG_RUST=y` with `CONFIG_TRANSPARENT_HUGEPAGE` off: the series' options cannot be on.
    ThpOff,
    /// `CONFIG_RUST=y`, THP on, the series' options off.
    SeriesOff,
}

impl Flavour {
    pub const ALL: [Flavour; 3] = [Flavour::Series, Flavour::ThpOff, Flavour::SeriesOff];

    pub fn name(self) -> &'static str {
        match self {
            Flavour::Series => "series",
            Flavour::ThpOff => "thp-off",
            Flavour::SeriesOff => "series-off",
        }
    }

    /// Fragments under `configs/`, in merge order, after the architecture's.
    fn fragments(self) -> Vec<&'static str> {
        match self {
            Flavour::Series => vec!["cross/rust.config", "cross/thp.config", "series.config"],
            Flavour::ThpOff => vec!["cross/rust.config", "cross/thp-off.config"],
            Flavour::SeriesOff => vec!["cross/rust.config", "cross/thp.config"],
        }
    }
}

/// The fragment paths of one cell of the matrix.
/// The architecture's fragment comes last, so that it can turn off what the architecture
/// cannot build (powerpc: `CONFIG_BUG`, see configs/cross/arch-powerpc.config).
pub fn fragment_paths(layout: &Layout, arch: Arch, flavour: Flavour) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = flavour
        .fragments()
        .into_iter()
        .map(|f| layout.configs().join(f))
        .collect();
    v.push(layout.configs().join(format!("cross/arch-{}.config", arch.name())));
    v
}

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Architectures to build (default: all eight; none with `--each-patch` alone).
    #[arg(long = "arch", value_enum)]
    pub arches: Vec<Arch>,
    /// Configurations to build (default: all three).
    #[arg(long = "config", value_enum)]
    pub flavours: Vec<Flavour>,
    /// Build every patch in turn for these architectures, with the series' options on (the
    /// configuration made at the last patch, through olddefconfig at each).
    #[arg(long = "each-patch", value_enum)]
    pub each_patch: Vec<Arch>,
    /// Stop at the first failed build.
    #[arg(long)]
    pub fail_fast: bool,
}

/// The outcome of one build.
#[derive(Debug, Clone)]
pub struct Cell {
    pub arch: Arch,
    pub flavour: Flavour,
    /// The commit built, for per-patch builds (its subject).
    pub patch: Option<String>,
    pub took: Duration,
    pub warnings: Vec<String>,
    /// How many warnings were the base's own ([`Arch::base_warnings`]), not in `warnings`.
    pub base_warnings: usize,
    /// The first error line, if the build failed.
    pub error: Option<String>,
    /// Why the cell cannot exist (no THP on the architecture): not built, not a pass either.
    pub not_applicable: Option<&'static str>,
}

impl Cell {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.warnings.is_empty()
    }
}

/// The first line of a failed kbuild log that says what went wrong.
pub fn first_error(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let i = lines.iter().position(|l| {
        l.starts_with("error")
            || l.contains(": error:")
            || l.contains(": fatal error:")
            || l.contains("undefined reference")
    })?;
    let mut s = lines[i].trim().to_string();
    // rustc prints the location on a following line.
    if let Some(at) = lines[i + 1..]
        .iter()
        .take(3)
        .find_map(|n| n.trim_start().strip_prefix("--> "))
    {
        let _ = write!(s, " ({at})");
    }
    Some(s)
}

/// The warnings of a build log of `arch` that fail the cell, and how many others were the
/// base's own ([`Arch::base_warnings`]: exact texts).
fn warnings(arch: Arch, log: &str) -> (Vec<String>, usize) {
    let (base, ours): (Vec<String>, Vec<String>) = build::warnings(log)
        .into_iter()
        .partition(|w| arch.base_warnings().contains(&w.as_str()));
    (ours, base.len())
}

/// Render the matrix as the table the README and the closing notes show.
pub fn render(cells: &[Cell]) -> String {
    let mut s = String::new();
    for c in cells {
        let what = match (&c.error, c.warnings.len()) {
            _ if c.not_applicable.is_some() => "n/a".to_string(),
            (Some(_), _) => "FAILED".to_string(),
            (None, 0) if c.base_warnings > 0 => format!("built ({} of the base's)", c.base_warnings),
            (None, 0) => "built".to_string(),
            (None, n) => format!("built, {n} warning(s)"),
        };
        let _ = writeln!(
            s,
            "{:<9} {:<10} {:<25} {:>5}s  {}{}",
            c.arch.name(),
            c.flavour.name(),
            what,
            c.took.as_secs(),
            c.patch.as_deref().map(|p| format!("[{p}] ")).unwrap_or_default(),
            c.error
                .clone()
                .or_else(|| c.warnings.first().cloned())
                .or_else(|| c.not_applicable.map(str::to_string))
                .unwrap_or_default()
        );
    }
    s
}

/// The cross tree: a clone of the base with the fixes and the mailed series applied.
/// Returns it and the commits of the two stacks, oldest first.
fn prepare_tree(layout: &Layout) -> Result<(PathBuf, Vec<String>)> {
    let tree = series::ensure_tree(layout, &layout.cross_tree())?;
    let mut patches = series::fixes(layout)?.paths();
    patches.extend(series::mailed(layout)?.paths());
    let patches: Vec<(PathBuf, Option<String>)> = patches.into_iter().map(|p| (p, None)).collect();
    // A per-patch run leaves the tree detached: back to the branch first.
    cmd::output(&mut cmd::git(&tree, ["checkout", "-q", "-f", "cross"])).ok();
    series::apply_derived(&tree, "cross", &patches)?;
    let commits = cmd::output(&mut cmd::git(
        &tree,
        ["rev-list", "--reverse", &format!("{BASE_TAG}..cross")],
    ))?
    .lines()
    .map(str::to_string)
    .collect();
    Ok((tree, commits))
}

/// A cell of `arch` and `flavour` (of `patch`, for per-patch builds), not built yet.
fn cell(arch: Arch, flavour: Flavour, patch: Option<String>) -> Cell {
    Cell {
        arch,
        flavour,
        patch,
        took: Duration::ZERO,
        warnings: Vec::new(),
        base_warnings: 0,
        error: None,
        not_applicable: (!arch.has_thp() && flavour != Flavour::ThpOff)
            .then_some("the architecture has no THP: only thp-off applies"),
    }
}

/// The build directory of `arch` and `flavour` in the cross tree.
fn build_dir(tree: &Path, arch: Arch, flavour: Flavour) -> PathBuf {
    Layout::build_dir(tree, &format!("cross-{}-{}", arch.name(), flavour.name()))
}

/// Configure `c` from its fragments in the tree as it is checked out. A configuration that
/// cannot have what it asks for (say Rust, for a toolchain kconfig rejects) is a failed
/// cell, named, not a silent pass. Returns whether `c` can be built.
fn configure(layout: &Layout, tree: &Path, c: &mut Cell) -> bool {
    let frags = fragment_paths(layout, c.arch, c.flavour);
    let build = build_dir(tree, c.arch, c.flavour);
    match config::configure_fragments(layout, tree, &build, &c.arch.make_vars(), &frags) {
        Ok(()) => true,
        Err(e) => {
            c.error = Some(format!("configure: {e:#}"));
            false
        }
    }
}

/// Build `vmlinux` of `c`, configured, in the tree as it is checked out; `at` is the patch
/// (i of n) of a per-patch build, which gets its own log, `patch-<i>.log`.
fn make_vmlinux(layout: &Layout, tree: &Path, c: &mut Cell, at: Option<(usize, usize)>) {
    let build = build_dir(tree, c.arch, c.flavour);
    let log = build.join(match at {
        Some((i, _)) => format!("patch-{i:02}.log"),
        None => "build.log".into(),
    });
    let stage = format!(
        "build {} {}{}",
        c.arch.name(),
        c.flavour.name(),
        at.map(|(i, n)| format!(" at patch {i}/{n}")).unwrap_or_default()
    );
    let mut make = build::make(layout, tree, &build);
    make.args(c.arch.make_vars()).arg("vmlinux");
    let started = std::time::Instant::now();
    let res = cmd::logged(&stage, &mut make, &log, None);
    c.took = started.elapsed();
    let text = fs::read_to_string(&log).unwrap_or_default();
    match res {
        Ok(_) => (c.warnings, c.base_warnings) = warnings(c.arch, &text),
        Err(e) => c.error = Some(first_error(&text).unwrap_or_else(|| format!("{e:#}"))),
    }
}

/// Configure and build one cell in the tree as it is checked out.
fn build_cell(layout: &Layout, tree: &Path, arch: Arch, flavour: Flavour) -> Cell {
    let mut c = cell(arch, flavour, None);
    if c.not_applicable.is_none() && configure(layout, tree, &mut c) {
        make_vmlinux(layout, tree, &mut c, None);
    }
    c
}

/// Build every commit of `commits` in turn for `arch` with the series' options on: configured
/// from the fragments at the last commit (where every symbol must stick), then that
/// configuration through olddefconfig at each commit ([`config::SeriesConfig`]), so that
/// each option comes on with the patch that adds it. Stops early if `stop` says so.
fn each_patch(
    layout: &Layout,
    tree: &Path,
    arch: Arch,
    commits: &[String],
    stop: impl Fn(&[Cell]) -> bool,
) -> Result<Vec<Cell>> {
    let n = commits.len();
    let checkout = |c: &str| cmd::output(&mut cmd::git(tree, ["checkout", "-q", "--detach", c]));
    let mut cells = Vec::new();
    let Some(last) = commits.last() else {
        return Ok(cells);
    };
    checkout(last)?;
    let mut at_last = cell(arch, Flavour::Series, Some(format!("configured at patch {n}/{n}")));
    if at_last.not_applicable.is_some() || !configure(layout, tree, &mut at_last) {
        cells.push(at_last);
        return Ok(cells);
    }
    let build = build_dir(tree, arch, Flavour::Series);
    let kept = config::SeriesConfig::keep(&build)?;
    for (i, commit) in commits.iter().enumerate() {
        checkout(commit)?;
        let subject = cmd::output(&mut cmd::git(tree, ["log", "-1", "--format=%s", commit]))?;
        let mut c = cell(arch, Flavour::Series, Some(format!("{}/{n} {}", i + 1, subject.trim())));
        let mut olddefconfig = build::make(layout, tree, &build);
        olddefconfig.args(arch.make_vars()).arg("olddefconfig");
        match kept.for_patch(&mut olddefconfig) {
            Ok(_) => make_vmlinux(layout, tree, &mut c, Some((i + 1, n))),
            Err(e) => c.error = Some(format!("configure: {e:#}")),
        }
        cells.push(c);
        if stop(&cells) {
            break;
        }
    }
    Ok(cells)
}

/// The architectures and configurations of the matrix `o` asks for: all of them unless
/// `--arch` or `--config` narrows it, none with `--each-patch` alone.
fn matrix(o: &Opts) -> (Vec<Arch>, Vec<Flavour>) {
    let arches: Vec<Arch> = if !o.arches.is_empty() {
        o.arches.clone()
    } else if o.flavours.is_empty() && !o.each_patch.is_empty() {
        // `--each-patch` alone: only the per-patch builds.
        Vec::new()
    } else {
        Arch::ALL.to_vec()
    };
    let flavours: Vec<Flavour> = if o.flavours.is_empty() {
        Flavour::ALL.to_vec()
    } else {
        o.flavours.clone()
    };
    (arches, flavours)
}

/// Run the matrix; prints the table and fails if any cell failed or warned.
pub fn run(layout: &Layout, o: &Opts) -> Result<Vec<Cell>> {
    let (arches, flavours) = matrix(o);
    let (tree, commits) = prepare_tree(layout)?;
    let mut cells = Vec::new();
    let stop = |cells: &[Cell]| o.fail_fast && cells.iter().any(|c| !c.ok());
    'matrix: for &arch in &arches {
        for &flavour in &flavours {
            cells.push(build_cell(layout, &tree, arch, flavour));
            if stop(&cells) {
                break 'matrix;
            }
        }
    }
    for &arch in &o.each_patch {
        if stop(&cells) {
            break;
        }
        let built = each_patch(layout, &tree, arch, &commits, stop);
        // Back to the branch whatever happened: the next run applies onto it.
        cmd::output(&mut cmd::git(&tree, ["checkout", "-q", "cross"]))?;
        cells.extend(built?);
    }
    eprint!("{}", render(&cells));
    let bad = cells.iter().filter(|c| !c.ok()).count();
    if bad > 0 {
        bail!(
            "{bad} of {} cross build(s) failed or warned (logs in {}/build-cross-*/: build.log, patch-NN.log)",
            cells.len(),
            tree.display()
        );
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_error_names_the_rustc_error_and_where() {
        let log = "  RUSTC L rust/kernel.o\n\
                   error[E0425]: cannot find value `PTRS_PER_PTE` in crate `bindings`\n  \
                   --> rust/kernel/mm/pgtable.rs:33:46\n   |\n";
        assert_eq!(
            first_error(log).as_deref(),
            Some(
                "error[E0425]: cannot find value `PTRS_PER_PTE` in crate `bindings` (rust/kernel/mm/pgtable.rs:33:46)"
            )
        );
        let c = "  CC      mm/khugepaged.o\n../mm/khugepaged.c:12:1: error: unknown type name 'foo'\n";
        assert_eq!(
            first_error(c).as_deref(),
            Some("../mm/khugepaged.c:12:1: error: unknown type name 'foo'")
        );
        assert_eq!(first_error("  LD vmlinux\n"), None);
    }

    #[test]
    fn every_cell_has_its_fragments() {
        let layout = Layout::discover();
        for arch in Arch::ALL {
            for flavour in Flavour::ALL {
                let frags = fragment_paths(&layout, arch, flavour);
                for f in &frags {
                    assert!(f.exists(), "{} missing", f.display());
                }
                assert!(frags
                    .last()
                    .unwrap()
                    .ends_with(format!("cross/arch-{}.config", arch.name())));
            }
        }
    }

    #[test]
    fn the_table_says_what_failed() {
        let cells = [
            Cell {
                arch: Arch::Riscv,
                flavour: Flavour::Series,
                patch: None,
                took: Duration::from_secs(300),
                warnings: vec![],
                base_warnings: 0,
                error: Some("error[E0425]: x".into()),
                not_applicable: None,
            },
            Cell {
                arch: Arch::X86_64,
                flavour: Flavour::ThpOff,
                patch: Some("rust: mm: add abstractions".into()),
                took: Duration::from_secs(200),
                warnings: vec![],
                base_warnings: 0,
                error: None,
                not_applicable: None,
            },
        ];
        let t = render(&cells);
        assert!(t.contains("riscv     series     FAILED"), "{t}");
        assert!(t.contains("error[E0425]: x"), "{t}");
        assert!(t.contains("x86_64    thp-off    built"), "{t}");
        assert!(t.contains("[rust: mm: add abstractions]"), "{t}");
        assert!(!cells[0].ok() && cells[1].ok());
    }

    /// What 7.3.4's arch/s390/Makefile makes rustc print (from a series-off build's log), and
    /// a warning with a location, which fails the cell on s390 too.
    #[test]
    fn the_bases_own_rustc_warnings_are_counted_apart_and_only_on_their_architecture() {
        let base = "  RUSTC L rust/core.o\n\
                    warning: unstable feature specified for `-Ctarget-feature`: `backchain`\n  |\n\
                    \x20 = note: this feature is not stably supported; its behavior can change in the future\n\n\
                    warning: 1 warning emitted\n";
        let ours = "warning: unused variable: `pte`\n   --> mm/khugepaged_rs.rs:10:9\n";
        let log = format!("{base}{base}{ours}");
        let (w, n) = warnings(Arch::S390, &log);
        assert_eq!(n, 2);
        assert_eq!(w, ["mm/khugepaged_rs.rs:10:9: unused variable: `pte`"]);
        let (w, n) = warnings(Arch::X86_64, &log);
        assert_eq!((w.len(), n), (3, 0));
        let t = render(&[Cell {
            arch: Arch::S390,
            flavour: Flavour::SeriesOff,
            patch: None,
            took: Duration::from_secs(90),
            warnings: vec![],
            base_warnings: 23,
            error: None,
            not_applicable: None,
        }]);
        assert!(t.contains("s390      series-off built (23 of the base's)"), "{t}");
        // um's is clang's, on the base's asm-generic/io.h, with its location.
        let io = "In file included from ../kernel/sched/rq-offsets.c:5:\n\
                  ../include/asm-generic/io.h:1209:55: warning: performing pointer arithmetic on \
                  a null pointer has undefined behavior [-Wnull-pointer-arithmetic]\n \
                  1209 |         return (port > MMIO_UPPER_LIMIT) ? NULL : PCI_IOBASE + port;\n";
        let elsewhere = "../mm/memory.c:10:55: warning: performing pointer arithmetic on a null \
                         pointer has undefined behavior [-Wnull-pointer-arithmetic]\n";
        let (w, n) = warnings(Arch::Um, &format!("{io}{io}{elsewhere}"));
        assert_eq!(n, 2);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("../mm/memory.c:10:55"), "{w:?}");
        assert_eq!(warnings(Arch::X86_64, io).1, 0);
    }

    #[test]
    fn each_patch_alone_builds_no_matrix() {
        let o = |arches: Vec<Arch>, flavours: Vec<Flavour>, each_patch: Vec<Arch>| Opts {
            arches,
            flavours,
            each_patch,
            fail_fast: false,
        };
        let (a, f) = matrix(&o(vec![], vec![], vec![]));
        assert_eq!((a.len(), f.len()), (Arch::ALL.len(), Flavour::ALL.len()));
        let (a, _) = matrix(&o(vec![], vec![], vec![Arch::Arm64]));
        assert!(a.is_empty(), "{a:?}");
        let (a, f) = matrix(&o(vec![Arch::Riscv], vec![], vec![Arch::Arm64]));
        assert_eq!((a, f.len()), (vec![Arch::Riscv], Flavour::ALL.len()));
        let (a, f) = matrix(&o(vec![], vec![Flavour::ThpOff], vec![Arch::Arm64]));
        assert_eq!((a.len(), f), (Arch::ALL.len(), vec![Flavour::ThpOff]));
    }

    #[test]
    fn a_per_patch_cell_of_an_architecture_without_thp_is_not_built() {
        let c = cell(Arch::Um, Flavour::Series, Some("1/2 x".into()));
        assert!(c.not_applicable.is_some());
        assert!(cell(Arch::Um, Flavour::ThpOff, None).not_applicable.is_none());
        assert!(cell(Arch::Arm64, Flavour::Series, None).not_applicable.is_none());
    }
}
