//! The stamp that lets an unchanged configure be skipped: `make tinyconfig`, merge_config.sh
//! and `olddefconfig` take ~12 s on this machine (each `make` re-runs the toolchain probes of
//! Kconfig), and in the edit loop they give the same `.config` every time.
//!
//! The stamp (`<build>/.khrs-configure`) holds a digest of everything the result is made of
//! and a digest of the `.config` that came out: the `make` command line, the fragments (path
//! and text, in order), the tree's Kconfig files, the kconfig scripts and the tree's own
//! config fragments (`tinyconfig` merges `kernel/configs/tiny.config` and
//! `arch/*/configs/tiny.config`), the top Makefile and `scripts/*` (the probes Kconfig runs),
//! the toolchain's binaries (path, size, mtime) and the environment variables kbuild reads.
//! Configuring is skipped only when both digests match: a `.config` edited by hand
//! (`make menuconfig`) or any changed input configures again.

use anyhow::Result;
use fs_err as fs;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::layout::BUILD_DIR_PREFIX;

/// The file in the build directory.
pub const STAMP: &str = ".khrs-configure";

/// Environment variables kbuild's configuration reads (besides the command line's).
const ENV: &[&str] = &[
    "ARCH",
    "SUBARCH",
    "SRCARCH",
    "CROSS_COMPILE",
    "LLVM",
    "LLVM_IAS",
    "CC",
    "HOSTCC",
    "LD",
    "RUSTC",
    "BINDGEN",
    "LIBCLANG_PATH",
    "KCFLAGS",
    "KCONFIG_CONFIG",
    "KCONFIG_ALLCONFIG",
    "KCONFIG_SEED",
    "KCONFIG_PROBABILITY",
    "KBUILD_DEFCONFIG",
    "KBUILD_KCONFIG",
];

/// The inputs of one configure of `tree`.
pub struct Inputs<'a> {
    pub tree: &'a Path,
    /// `make`'s arguments (toolchain variables, `ARCH=...`).
    pub make_args: &'a [String],
    /// The fragments merged, in order.
    pub fragments: &'a [PathBuf],
    /// Programs whose identity (size, mtime) goes into the digest: the compilers, bindgen.
    pub tools: &'a [PathBuf],
}

/// Whether a file of the tree is one a configure reads (`rel` is relative to the tree).
fn configure_reads(rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
    name.starts_with("Kconfig")
        || matches!(
            parts.as_slice(),
            ["Makefile"] | ["scripts", _] | ["scripts", "kconfig", _]
        )
        || matches!(parts.as_slice(), ["kernel", "configs", _] | ["arch", _, "configs", _] if name.ends_with(".config"))
}

/// The files of `tree` a configure reads, sorted; `.git` and the build directories
/// (`build-*`, direct children of the tree) are not walked.
fn tree_files(tree: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        for entry in fs::read_dir(tree.join(&rel))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let child = rel.join(&*name);
            let kind = entry.file_type()?;
            if kind.is_dir() {
                let top = rel.as_os_str().is_empty();
                if name != ".git" && !(top && name.starts_with(BUILD_DIR_PREFIX)) {
                    dirs.push(child);
                }
            } else if configure_reads(&child) {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The digest of everything a configure's `.config` is made of.
pub fn inputs_digest(i: &Inputs) -> Result<u64> {
    let mut h = DefaultHasher::new();
    i.make_args.hash(&mut h);
    for f in i.fragments {
        f.hash(&mut h);
        fs::read(f)?.hash(&mut h);
    }
    for rel in tree_files(i.tree)? {
        rel.hash(&mut h);
        fs::read(i.tree.join(&rel))?.hash(&mut h);
    }
    for t in i.tools {
        t.hash(&mut h);
        // A missing tool is an input too (Kconfig's probes fail without it).
        if let Ok(m) = std::fs::metadata(t) {
            m.len().hash(&mut h);
            m.modified().ok().hash(&mut h);
        }
    }
    for v in ENV {
        (v, std::env::var_os(v)).hash(&mut h);
    }
    Ok(h.finish())
}

fn text_digest(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn stamp_text(inputs: u64, dot_config: &str) -> String {
    format!("inputs {inputs:016x}\nconfig {:016x}\n", text_digest(dot_config))
}

/// Whether `build` was configured from these inputs and its `.config` is still what came out.
pub fn is_current(build: &Path, inputs: u64) -> bool {
    let stamp = std::fs::read_to_string(build.join(STAMP));
    let config = std::fs::read_to_string(build.join(".config"));
    matches!((stamp, config), (Ok(s), Ok(c)) if s == stamp_text(inputs, &c))
}

/// Records that `build`'s `.config` is the result of a configure from these inputs.
pub fn record(build: &Path, inputs: u64) -> Result<()> {
    let config = fs::read_to_string(build.join(".config"))?;
    fs::write(build.join(STAMP), stamp_text(inputs, &config))?;
    Ok(())
}

/// Forgets the stamp (before a configure, so that one that fails is not taken as done).
pub fn clear(build: &Path) -> Result<()> {
    match std::fs::remove_file(build.join(STAMP)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_the_kconfig_files_and_not_the_build_directories() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path();
        for rel in [
            "Kconfig",
            "Makefile",
            "mm/Kconfig",
            "mm/Kconfig.debug",
            "mm/Makefile",
            "mm/khugepaged_rs.rs",
            "scripts/Kconfig.include",
            "scripts/rustc-version.sh",
            "scripts/kconfig/merge_config.sh",
            "scripts/kconfig/lexer.l",
            "scripts/mod/modpost.c",
            "kernel/configs/tiny.config",
            "arch/x86/configs/tiny.config",
            "arch/x86/configs/x86_64_defconfig",
            "build-x86_64-default/.config",
            "build-x86_64-default/Kconfig",
            ".git/Kconfig",
        ] {
            write(tree, rel, "x");
        }
        let files: Vec<String> = tree_files(tree)
            .unwrap()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            files,
            [
                "Kconfig",
                "Makefile",
                "arch/x86/configs/tiny.config",
                "kernel/configs/tiny.config",
                "mm/Kconfig",
                "mm/Kconfig.debug",
                "scripts/Kconfig.include",
                "scripts/kconfig/lexer.l",
                "scripts/kconfig/merge_config.sh",
                "scripts/rustc-version.sh",
            ]
        );
    }

    #[test]
    fn every_input_changes_the_digest_and_only_they_do() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        write(&tree, "mm/Kconfig", "config TRANSPARENT_HUGEPAGE\n");
        write(&tree, "mm/khugepaged_rs.rs", "fn collapse() {}\n");
        let frag = t.path().join("series.config");
        write(t.path(), "series.config", "CONFIG_KHUGEPAGED_RS=y\n");
        let tool = t.path().join("rustc");
        write(t.path(), "rustc", "1.96");
        let args = vec!["LLVM=-22".to_string()];
        let digest = |args: &[String]| {
            inputs_digest(&Inputs {
                tree: &tree,
                make_args: args,
                fragments: std::slice::from_ref(&frag),
                tools: std::slice::from_ref(&tool),
            })
            .unwrap()
        };
        let d0 = digest(&args);
        assert_eq!(digest(&args), d0, "the same inputs, the same digest");
        write(&tree, "mm/khugepaged_rs.rs", "fn collapse() { edit(); }\n");
        assert_eq!(digest(&args), d0, "a source edit is not an input");
        write(&tree, "build-x86_64-default/.config", "CONFIG_RUST=y\n");
        assert_eq!(digest(&args), d0, "nor is a build directory");
        assert_ne!(digest(&["LLVM=-19".to_string()]), d0, "the make command line");
        write(t.path(), "series.config", "CONFIG_KHUGEPAGED_RS=n\n");
        let d1 = digest(&args);
        assert_ne!(d1, d0, "a fragment's text");
        write(&tree, "mm/Kconfig", "config TRANSPARENT_HUGEPAGE\n\tbool\n");
        let d2 = digest(&args);
        assert_ne!(d2, d1, "a Kconfig file");
        write(t.path(), "rustc", "1.97.0");
        assert_ne!(digest(&args), d2, "a tool's binary");
    }

    #[test]
    fn a_stamp_holds_while_the_config_is_what_came_out() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        assert!(!is_current(b, 1), "no stamp, no .config");
        write(b, ".config", "CONFIG_RUST=y\n");
        assert!(!is_current(b, 1), "no stamp");
        record(b, 1).unwrap();
        assert!(is_current(b, 1));
        assert!(!is_current(b, 2), "other inputs");
        write(b, ".config", "CONFIG_RUST=y\nCONFIG_KASAN=y\n");
        assert!(!is_current(b, 1), "a .config edited since");
        record(b, 1).unwrap();
        clear(b).unwrap();
        assert!(!is_current(b, 1), "cleared");
        clear(b).unwrap();
    }
}
