//! kbuild: the kernel image and the mm selftests, from the same tree, with
//! `O=` outside the clone and ccache.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd;
use crate::layout::Layout;
use crate::toolchain;

pub fn jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

pub fn make(layout: &Layout, tree: &Path, build: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(tree)
        .arg(format!("O={}", build.display()))
        .arg(format!("-j{}", jobs()))
        .args(toolchain::make_vars(layout))
        .env("CCACHE_DIR", layout.ccache());
    c
}

/// Build bzImage; returns its path.
pub fn kernel(layout: &Layout, tree: &Path, build: &Path) -> Result<(PathBuf, Duration)> {
    let took = cmd::logged(
        "build kernel",
        make(layout, tree, build).arg("bzImage"),
        &build.join("build.log"),
        None,
    )?;
    Ok((build.join("arch/x86/boot/bzImage"), took))
}

/// Build the mm selftests the guest runs, statically, against this tree's
/// headers. Returns the directory holding the binaries.
pub fn selftests(layout: &Layout, tree: &Path, build: &Path, programs: &[&str]) -> Result<(PathBuf, Duration)> {
    let out = build.join("kselftest/mm");
    std::fs::create_dir_all(&out)?;
    if programs.is_empty() {
        return Ok((out, Duration::ZERO));
    }
    let log = build.join("selftests.log");
    let t1 = cmd::logged(
        "install headers",
        make(layout, tree, build).arg("headers"),
        &build.join("headers.log"),
        None,
    )?;
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(tree.join("tools/testing/selftests/mm"))
        .arg(format!("-j{}", jobs()))
        .arg("EXTRA_CFLAGS=-static")
        .arg(format!("OUTPUT={}", out.display()))
        .arg(format!(
            "KHDR_INCLUDES=-isystem {}",
            build.join("usr/include").display()
        ))
        .args(programs.iter().map(|p| out.join(p)));
    let t2 = cmd::logged("build selftests", &mut c, &log, None)
        .with_context(|| format!("building {} statically", programs.join(", ")))?;
    Ok((out, t1 + t2))
}
