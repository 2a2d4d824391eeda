//! kbuild: the kernel image and the mm selftests, from the same tree, with
//! `O=<tree>/build-<config>` and ccache. A build directory that is a direct child
//! of the tree makes kbuild's srctree `..`, so compiler command lines hold no
//! absolute path and ccache hits across clones (CI's fresh one) and trees (the
//! negative control's). `CCACHE_NOHASHDIR` keeps the working directory out of
//! the hash too: a debug-info object from another clone names that clone's
//! build directory, which no test reads.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::arch::Machine;
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
        .env("CCACHE_DIR", layout.ccache())
        .env("CCACHE_NOHASHDIR", "1");
    c
}

/// Build `machine`'s boot image (bzImage, Image); returns its path. The base builds without a single compiler warning in the
/// configurations here, so a warning (rustc's or clang's, in what this build recompiled) is
/// an error: kbuild does not stop on it and a reviewer's build would show it.
pub fn kernel(layout: &Layout, tree: &Path, build: &Path, machine: &Machine) -> Result<(PathBuf, Duration)> {
    let log = build.join("build.log");
    let mut make = make(layout, tree, build);
    make.args(machine.make_vars()).arg(machine.image_target);
    let took = cmd::logged(&format!("build {} kernel", machine.arch.name()), &mut make, &log, None)?;
    let warned = warnings(&fs_err::read_to_string(&log).unwrap_or_default());
    if !warned.is_empty() {
        bail!(
            "the kernel built, but with {} compiler warning(s) (full log {}):\n  {}",
            warned.len(),
            log.display(),
            warned.join("\n  ")
        );
    }
    check_helpers_inlined(build)?;
    Ok((build.join(machine.image), took))
}

/// The object of the Rust collapse (`CONFIG_KHUGEPAGED_RUST`).
pub const RUST_COLLAPSE_OBJECT: &str = "mm/khugepaged_rs.o";

/// With `CONFIG_RUST_INLINE_HELPERS` the Rust collapse must not call a single C helper
/// (`rust_helper_*`) out of line: its per-PTE loops are where the benchmark's cost was.
/// Checked on the object's relocations (`llvm-objdump -dr`), every call site counted.
/// A kernel without the Rust collapse or without inlined helpers has nothing to check.
fn check_helpers_inlined(build: &Path) -> Result<()> {
    let config = fs_err::read_to_string(build.join(".config"))
        .with_context(|| format!("reading {}/.config", build.display()))?;
    let config = crate::config::parse(&config);
    let on = |sym: &str| crate::config::has(&config, sym);
    if !on("CONFIG_KHUGEPAGED_RUST") || !on("CONFIG_RUST_INLINE_HELPERS") {
        return Ok(());
    }
    let obj = build.join(RUST_COLLAPSE_OBJECT);
    let objdump = toolchain::llvm().tool("llvm-objdump");
    let listing = cmd::output(Command::new(&objdump).arg("-dr").arg(&obj))
        .with_context(|| format!("{objdump} -dr {}", obj.display()))?;
    let calls = helper_calls(&listing);
    if !calls.is_empty() {
        let list: Vec<String> = calls.iter().map(|(f, n)| format!("{f} ({n})")).collect();
        bail!(
            "CONFIG_RUST_INLINE_HELPERS=y, yet {} still calls C helpers out of line: {}",
            obj.display(),
            list.join(", ")
        );
    }
    eprintln!("  build: {RUST_COLLAPSE_OBJECT} calls no rust_helper_* (inlined)");
    Ok(())
}

/// The `rust_helper_*` functions an `llvm-objdump -dr` listing has relocations against,
/// with the number of sites.
pub fn helper_calls(listing: &str) -> std::collections::BTreeMap<String, usize> {
    let mut calls = std::collections::BTreeMap::new();
    for line in listing.lines() {
        let mut words = line.split_whitespace();
        let Some(kind) = words.nth(1) else { continue };
        if !kind.starts_with("R_") {
            continue;
        }
        let Some(target) = words.next() else { continue };
        let name = target.split(['+', '-']).next().unwrap_or(target);
        if name.starts_with("rust_helper_") {
            *calls.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    calls
}

/// Compiler warnings in a kbuild log, each with the location rustc prints on the next lines.
pub fn warnings(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(rest) = l.strip_prefix("warning: ") {
            if rest.ends_with("warnings emitted") || rest.ends_with("warning emitted") {
                continue;
            }
            let at = lines[i + 1..]
                .iter()
                .take(3)
                .find_map(|n| n.trim_start().strip_prefix("--> "))
                .unwrap_or("?");
            out.push(format!("{at}: {rest}"));
        } else if l.contains(": warning: ") {
            out.push(l.to_string());
        }
    }
    out
}

/// Build the mm selftests the guest runs, statically, against this tree's
/// headers, for `machine` (with its `CROSS_COMPILE` when it is not the host).
/// Returns the directory holding the binaries.
pub fn selftests(
    layout: &Layout,
    tree: &Path,
    build: &Path,
    machine: &Machine,
    programs: &[&str],
) -> Result<(PathBuf, Duration)> {
    let out = build.join("kselftest/mm");
    fs_err::create_dir_all(&out)?;
    if programs.is_empty() {
        return Ok((out, Duration::ZERO));
    }
    let log = build.join("selftests.log");
    let t1 = cmd::logged(
        "install headers",
        make(layout, tree, build).args(machine.make_vars()).arg("headers"),
        &build.join("headers.log"),
        None,
    )?;
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(tree.join("tools/testing/selftests/mm"))
        .arg(format!("-j{}", jobs()))
        .arg("EXTRA_CFLAGS=-static")
        .args((!machine.is_host()).then(|| format!("CROSS_COMPILE={}", machine.cross_compile)))
        .arg(format!("OUTPUT={}", out.display()))
        .arg(format!(
            "KHDR_INCLUDES=-isystem {}",
            build.join("usr/include").display()
        ))
        .args(programs.iter().map(|p| out.join(p)));
    let t2 = cmd::logged("build selftests", &mut c, &log, None).with_context(|| {
        format!(
            "building {} statically for {}",
            programs.join(", "),
            machine.arch.name()
        )
    })?;
    Ok((out, t1 + t2))
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_calls_to_helpers_from_relocations() {
        let x86 = "
0000000000000000 <_RNvCs_khugepaged_rs_collapse>:
       0: 55                            \tpushq\t%rbp
       1: e8 00 00 00 00                \tcallq\t0x6 <_RNv...+0x6>
\t\t0000000000000002:  R_X86_64_PLT32\trust_helper_spin_lock-0x4
      10: e8 00 00 00 00                \tcallq\t0x15
\t\t0000000000000011:  R_X86_64_PLT32\trust_helper_spin_lock-0x4
      20: e8 00 00 00 00                \tcallq\t0x25
\t\t0000000000000021:  R_X86_64_PLT32\t_RNvMs_NtCs_6kernel5typesINtB4_6OpaqueNtNtCs_8bindings9mm_structE3getB8_-0x4
";
        let arm64 = "      1c: 94000000     \tbl\t0x1c <x+0x1c>
\t\t000000000000001c:  R_AARCH64_CALL26\trust_helper_ptep_get
";
        let calls = super::helper_calls(x86);
        assert_eq!(
            calls.into_iter().collect::<Vec<_>>(),
            [("rust_helper_spin_lock".to_string(), 2)]
        );
        assert_eq!(super::helper_calls(arm64)["rust_helper_ptep_get"], 1);
        assert!(super::helper_calls("       1: 55  \tpushq\t%rbp\n").is_empty());
    }

    #[test]
    fn finds_rustc_and_clang_warnings() {
        let log = "  CLIPPY L rust/kernel.o
warning: unnecessary `unsafe` block
   --> /t/rust/kernel/kunit.rs:73:30
    |
warning: 12 warnings emitted

  CC      mm/khugepaged.o
/t/mm/khugepaged.c:12:5: warning: unused variable 'x' [-Wunused-variable]
  LD      vmlinux
";
        assert_eq!(
            super::warnings(log),
            [
                "/t/rust/kernel/kunit.rs:73:30: unnecessary `unsafe` block",
                "/t/mm/khugepaged.c:12:5: warning: unused variable 'x' [-Wunused-variable]"
            ]
        );
        assert!(super::warnings("  CC mm/khugepaged.o\n  LD vmlinux\n").is_empty());
    }
}
