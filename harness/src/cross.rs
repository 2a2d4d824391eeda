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
    /// Architectures to build (default: all eight).
    #[arg(long = "arch", value_enum)]
    pub arches: Vec<Arch>,
    /// Configurations to build (default: all three).
    #[arg(long = "config", value_enum)]
    pub flavours: Vec<Flavour>,
    /// Also build every patch in turn (with the series' options on), for these architectures.
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

/// Render the matrix as the table the README and the closing notes show.
pub fn render(cells: &[Cell]) -> String {
    let mut s = String::new();
    for c in cells {
        let what = match (&c.error, c.warnings.len()) {
            _ if c.not_applicable.is_some() => "n/a".to_string(),
            (Some(_), _) => "FAILED".to_string(),
            (None, 0) => "built".to_string(),
            (None, n) => format!("built, {n} warning(s)"),
        };
        let _ = writeln!(
            s,
            "{:<9} {:<10} {:<22} {:>5}s  {}{}",
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
    let tree = series::ensure_tree(layout, &layout.repo.join("work/cross-tree"))?;
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

/// Configure and build one cell in the tree as it is checked out.
fn build_cell(layout: &Layout, tree: &Path, arch: Arch, flavour: Flavour, patch: Option<String>) -> Result<Cell> {
    let build = Layout::build_dir(tree, &format!("cross-{}-{}", arch.name(), flavour.name()));
    let frags = fragment_paths(layout, arch, flavour);
    let mut cell = Cell {
        arch,
        flavour,
        patch,
        took: Duration::ZERO,
        warnings: Vec::new(),
        error: None,
        not_applicable: None,
    };
    if !arch.has_thp() && flavour != Flavour::ThpOff {
        cell.not_applicable = Some("the architecture has no THP: only thp-off applies");
        return Ok(cell);
    }
    // A configuration that cannot have what it asks for (say Rust, for a toolchain kconfig
    // rejects) is a failed cell, named, not a silent pass.
    if let Err(e) = config::configure_fragments(layout, tree, &build, &arch.make_vars(), &frags) {
        cell.error = Some(format!("configure: {e:#}"));
        return Ok(cell);
    }
    let log = build.join("build.log");
    let stage = format!("build {} {}", arch.name(), flavour.name());
    let mut make = build::make(layout, tree, &build);
    make.args(arch.make_vars()).arg("vmlinux");
    let started = std::time::Instant::now();
    let res = cmd::logged(&stage, &mut make, &log, None);
    cell.took = started.elapsed();
    let text = fs::read_to_string(&log).unwrap_or_default();
    match res {
        Ok(_) => {
            cell.warnings = build::warnings(&text);
        }
        Err(e) => {
            cell.error = Some(first_error(&text).unwrap_or_else(|| format!("{e:#}")));
        }
    }
    Ok(cell)
}

/// Run the matrix; prints the table and fails if any cell failed or warned.
pub fn run(layout: &Layout, o: &Opts) -> Result<Vec<Cell>> {
    let arches: Vec<Arch> = if o.arches.is_empty() {
        Arch::ALL.to_vec()
    } else {
        o.arches.clone()
    };
    let flavours: Vec<Flavour> = if o.flavours.is_empty() {
        Flavour::ALL.to_vec()
    } else {
        o.flavours.clone()
    };
    let (tree, commits) = prepare_tree(layout)?;
    let mut cells = Vec::new();
    let stop = |cells: &[Cell]| o.fail_fast && cells.iter().any(|c| !c.ok());
    'matrix: for &arch in &arches {
        for &flavour in &flavours {
            cells.push(build_cell(layout, &tree, arch, flavour, None)?);
            if stop(&cells) {
                break 'matrix;
            }
        }
    }
    for &arch in &o.each_patch {
        if stop(&cells) {
            break;
        }
        for c in &commits {
            cmd::output(&mut cmd::git(&tree, ["checkout", "-q", "--detach", c]))?;
            let subject = cmd::output(&mut cmd::git(&tree, ["log", "-1", "--format=%s", c]))?;
            cells.push(build_cell(layout, &tree, arch, Flavour::Series, Some(subject))?);
            if stop(&cells) {
                break;
            }
        }
        cmd::output(&mut cmd::git(&tree, ["checkout", "-q", "cross"]))?;
    }
    eprint!("{}", render(&cells));
    let bad = cells.iter().filter(|c| !c.ok()).count();
    if bad > 0 {
        bail!(
            "{bad} of {} cross build(s) failed or warned (logs in {}/build-cross-*/build.log)",
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
                error: Some("error[E0425]: x".into()),
                not_applicable: None,
            },
            Cell {
                arch: Arch::X86_64,
                flavour: Flavour::ThpOff,
                patch: Some("rust: mm: add abstractions".into()),
                took: Duration::from_secs(200),
                warnings: vec![],
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
}
