//! Kernel configuration: `make tinyconfig`, then the kconfig fragments of
//! `configs/` (and the tree's own `tools/testing/selftests/mm/config`) merged
//! with `scripts/kconfig/merge_config.sh`, then a check that every symbol a
//! fragment asks for ended up in `.config` with that value.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::arch::Machine;
use crate::cmd;
use crate::config_stamp;
use crate::layout::Layout;
use crate::toolchain;

/// The fragment that turns on `CONFIG_RUST_INLINE_HELPERS`.
pub const INLINE_HELPERS: &str = "inline-helpers.config";

/// A named lock/debug configuration a user can ask for with `--config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Variant {
    /// Split PTE and PMD ptlocks (the x86-64 default): ptl != pml.
    Default,
    /// Split ptlocks off (NR_CPUS=2): ptl == pml, the trylock must be skipped.
    SharedPtl,
    /// KASAN (generic, inline) on top of the default.
    Kasan,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::SharedPtl => "shared-ptl",
            Variant::Kasan => "kasan",
        }
    }
    /// Fragments under `configs/`, in merge order.
    pub fn fragments(self) -> Vec<&'static str> {
        let mut v = vec![
            "guest.config",
            "mm.config",
            "kunit.config",
            "rust.config",
            "debug.config",
            "series.config",
        ];
        match self {
            Variant::Default => {}
            Variant::SharedPtl => v.push("shared-ptl.config"),
            Variant::Kasan => v.push("kasan.config"),
        }
        v
    }
}

/// The value a fragment asks for: `Some("y")`, `Some("8")`, or `None` for
/// "is not set" / `=n`.
pub type Want = Option<String>;

/// Whether `config` (a parsed `.config`) has `symbol=y`.
pub fn has(config: &BTreeMap<String, Want>, symbol: &str) -> bool {
    config.get(symbol).is_some_and(|v| v.as_deref() == Some("y"))
}

/// Parse a kconfig fragment or `.config`.
pub fn parse(text: &str) -> BTreeMap<String, Want> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(sym) = rest.strip_suffix(" is not set") {
                if sym.starts_with("CONFIG_") {
                    m.insert(sym.to_string(), None);
                }
            }
        } else if let Some((k, v)) = line.split_once('=') {
            if k.starts_with("CONFIG_") {
                let v = v.trim();
                m.insert(k.to_string(), if v == "n" { None } else { Some(v.to_string()) });
            }
        }
    }
    m
}

/// Every symbol whose value in `.config` differs from what the fragments
/// ask for. Fragments are in merge order: a later one overrides an earlier
/// one, as merge_config.sh does.
pub fn mismatches(fragments: &[(String, String)], config: &str) -> Vec<String> {
    let have = parse(config);
    let mut want: BTreeMap<String, (String, Want)> = BTreeMap::new();
    for (name, text) in fragments {
        for (sym, v) in parse(text) {
            want.insert(sym, (name.clone(), v));
        }
    }
    let show = |v: &Want| v.clone().unwrap_or_else(|| "n (not set)".into());
    want.into_iter()
        .filter_map(|(sym, (name, want))| {
            let got = have.get(&sym).cloned().flatten();
            (got != want).then(|| format!("{sym}: {name} asks for {}, .config has {}", show(&want), show(&got)))
        })
        .collect()
}

/// The fragments of `machine`'s test kernel for `variant`: the common ones, the tree's
/// selftests config, then the machine's own (`guest-<arch>.config`, which may say that a
/// symbol the selftests config asks for does not exist there), then `series.config` and the
/// variant's. With an `llvm` that can inline the C helpers into Rust, `inline-helpers.config`
/// follows `rust.config`. Without the series (the negative control) `series.config` is left
/// out, its symbols do not exist there, and so are `rust.config` and `inline-helpers.config`:
/// that kernel is the base's C with the 2023 window re-opened and runs only the race
/// selftest, so Rust would only add its crates' compile time (rustc's output is not cached,
/// and the crates and doctests took about 150 s of every such build). `kunit.config` stays:
/// without it `task_struct` changes, and no C file would hit what the series' kernel left in
/// ccache.
pub fn fragment_paths(
    layout: &Layout,
    tree: &Path,
    machine: &Machine,
    llvm: toolchain::Llvm,
    variant: Variant,
    with_series: bool,
) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for f in variant.fragments() {
        if f == "series.config" {
            v.push(tree.join("tools/testing/selftests/mm/config"));
            v.push(layout.configs().join(machine.guest_fragment));
        }
        if !with_series && matches!(f, "rust.config" | "series.config") {
            continue;
        }
        v.push(layout.configs().join(f));
        if f == "rust.config" && llvm.inlines_helpers() {
            v.push(layout.configs().join(INLINE_HELPERS));
        }
    }
    v
}

/// Configure `build` for `machine` and `variant` and check the result.
pub fn configure(
    layout: &Layout,
    tree: &Path,
    build: &Path,
    machine: &Machine,
    variant: Variant,
    with_series: bool,
    extra: &[PathBuf],
) -> Result<()> {
    let mut frags = fragment_paths(layout, tree, machine, toolchain::llvm(), variant, with_series);
    frags.extend_from_slice(extra);
    configure_fragments(layout, tree, build, &machine.make_vars(), &frags)
}

/// `make tinyconfig` in `build`, the fragments `frags` merged in order, `olddefconfig`, and the
/// check that every symbol a fragment asks for has that value. `make_vars` are extra `make`
/// variables (`ARCH=...` for a cross build).
pub fn configure_fragments(
    layout: &Layout,
    tree: &Path,
    build: &Path,
    make_vars: &[String],
    frags: &[PathBuf],
) -> Result<()> {
    fs::create_dir_all(build)?;
    let make_args: Vec<String> = toolchain::make_vars(layout)
        .into_iter()
        .chain(make_vars.iter().cloned())
        .collect();
    let make = |target: &str| {
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(tree)
            .arg(format!("O={}", build.display()))
            .args(&make_args)
            .arg(target);
        c
    };
    let inputs = config_stamp::inputs_digest(&config_stamp::Inputs {
        tree,
        make_args: &make_args,
        fragments: frags,
        tools: &toolchain::binaries(layout),
    })?;
    if config_stamp::is_current(build, inputs) {
        eprintln!("  configure: skipped (inputs and .config as at the last configure)");
        return Ok(());
    }
    config_stamp::clear(build)?;
    let dot_config = build.join(".config");
    let old = fs::read_to_string(&dot_config).unwrap_or_default();
    let old_mtime = fs::metadata(&dot_config).and_then(|m| m.modified()).ok();
    let pb = cmd::stage_bar("configure");
    pb.set_message("tinyconfig + merge_config.sh + olddefconfig");
    cmd::output(&mut make("tinyconfig"))?;
    cmd::output(
        Command::new(tree.join("scripts/kconfig/merge_config.sh"))
            .current_dir(tree)
            .arg("-m")
            .arg("-O")
            .arg(build)
            .arg(build.join(".config"))
            .args(frags),
    )?;
    cmd::output(&mut make("olddefconfig"))?;
    pb.finish_and_clear();
    let new = fs::read_to_string(build.join(".config"))?;
    let texts: Vec<(String, String)> = frags
        .iter()
        .map(|p| {
            Ok((
                p.display().to_string(),
                fs::read_to_string(p).with_context(|| p.display().to_string())?,
            ))
        })
        .collect::<Result<_>>()?;
    let bad = mismatches(&texts, &new);
    if !bad.is_empty() {
        bail!(
            "{} kconfig symbol(s) did not stick in {}/.config (a missing dependency, or a toolchain kconfig could not detect):\n  {}",
            bad.len(),
            build.display(),
            bad.join("\n  ")
        );
    }
    if old == new {
        // Keep the old mtime so that kbuild does not re-sync and relink.
        if let Some(t) = old_mtime {
            fs::File::options().write(true).open(&dot_config)?.set_modified(t)?;
        }
        eprintln!("  configure: .config unchanged");
    }
    config_stamp::record(build, inputs)?;
    Ok(())
}

/// The configuration of a whole series, for building each of its patches in turn: made at
/// the last patch, and copied back before every patch's `olddefconfig`, because olddefconfig
/// drops the symbols a patch does not know yet and they must come back on with the patch
/// that adds them.
pub struct SeriesConfig {
    kept: PathBuf,
    dot_config: PathBuf,
}

impl SeriesConfig {
    /// Keep `build`'s `.config`, configured with the series' last patch checked out.
    pub fn keep(build: &Path) -> Result<Self> {
        let c = SeriesConfig {
            kept: build.join("series.config.full"),
            dot_config: build.join(".config"),
        };
        fs::copy(&c.dot_config, &c.kept)?;
        Ok(c)
    }

    /// The `.config` for the patch checked out: the kept one through `olddefconfig` (a
    /// `make` of that target for the tree and build directory). Fails if `CONFIG_RUST` is
    /// not on: a patch that turns Rust off builds nothing of the series.
    pub fn for_patch(&self, olddefconfig: &mut Command) -> Result<BTreeMap<String, Want>> {
        // Copied only when it differs, so that an unchanged .config keeps its mtime.
        if fs::read(&self.kept)? != fs::read(&self.dot_config).unwrap_or_default() {
            fs::copy(&self.kept, &self.dot_config)?;
        }
        cmd::output(olddefconfig)?;
        let cfg = parse(&fs::read_to_string(&self.dot_config)?);
        if cfg.get("CONFIG_RUST").cloned().flatten().as_deref() != Some("y") {
            bail!("CONFIG_RUST is off in {}", self.dot_config.display());
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_control_kernel_gets_neither_the_series_options_nor_rust() {
        let layout = crate::layout::Layout::new("/r".into(), "/c".into());
        let tree = std::path::Path::new("/t");
        let names = |with| -> Vec<String> {
            let m = &crate::arch::ARM64_VIRT;
            super::fragment_paths(
                &layout,
                tree,
                m,
                toolchain::MATCHED_LLVM,
                super::Variant::SharedPtl,
                with,
            )
            .iter()
            .map(|p| p.display().to_string())
            .collect()
        };
        assert_eq!(
            names(true),
            [
                "/r/configs/guest.config",
                "/r/configs/mm.config",
                "/r/configs/kunit.config",
                "/r/configs/rust.config",
                "/r/configs/inline-helpers.config",
                "/r/configs/debug.config",
                "/t/tools/testing/selftests/mm/config",
                "/r/configs/guest-arm64.config",
                "/r/configs/series.config",
                "/r/configs/shared-ptl.config"
            ]
        );
        let control = names(false);
        for f in ["series.config", "rust.config", "inline-helpers.config"] {
            assert!(!control.iter().any(|n| n.ends_with(f)), "{f} in {control:?}");
        }
        assert_eq!(control.len(), 7);
        let fallback = super::fragment_paths(
            &layout,
            tree,
            &crate::arch::X86_64_PC,
            toolchain::FALLBACK_LLVM,
            super::Variant::Default,
            true,
        );
        assert!(!fallback.iter().any(|p| p.ends_with(super::INLINE_HELPERS)));
        assert_eq!(fallback.len(), 8);
    }

    use super::*;

    #[test]
    fn parses_both_spellings_of_off() {
        let m = parse("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=n\nCONFIG_D=\"x y\"\n# comment\nCONFIG_E=8\n");
        assert_eq!(m["CONFIG_A"], Some("y".into()));
        assert_eq!(m["CONFIG_B"], None);
        assert_eq!(m["CONFIG_C"], None);
        assert_eq!(m["CONFIG_D"], Some("\"x y\"".into()));
        assert_eq!(m["CONFIG_E"], Some("8".into()));
    }

    #[test]
    fn names_symbols_that_did_not_stick() {
        let frag = vec![(
            "rust.config".to_string(),
            "CONFIG_RUST=y\nCONFIG_NR_CPUS=2\n# CONFIG_SLUB_TINY is not set\nCONFIG_KUNIT=y\n".to_string(),
        )];
        let config = "CONFIG_NR_CPUS=8\nCONFIG_SLUB_TINY=y\nCONFIG_KUNIT=y\n";
        let bad = mismatches(&frag, config);
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(bad[0].starts_with("CONFIG_NR_CPUS: rust.config asks for 2, .config has 8"));
        assert!(bad[1].starts_with("CONFIG_RUST: rust.config asks for y, .config has n (not set)"));
        assert!(bad[2].starts_with("CONFIG_SLUB_TINY: rust.config asks for n (not set), .config has y"));
        assert!(mismatches(&frag, "CONFIG_RUST=y\nCONFIG_NR_CPUS=2\nCONFIG_KUNIT=y\n").is_empty());
        // A later fragment overrides an earlier one.
        let two = vec![
            ("guest.config".to_string(), "CONFIG_NR_CPUS=8\n".to_string()),
            ("shared-ptl.config".to_string(), "CONFIG_NR_CPUS=2\n".to_string()),
        ];
        assert!(mismatches(&two, "CONFIG_NR_CPUS=2\n").is_empty());
        assert_eq!(
            mismatches(&two, "CONFIG_NR_CPUS=8\n"),
            ["CONFIG_NR_CPUS: shared-ptl.config asks for 2, .config has 8"]
        );
    }

    /// The real fragments of the repository parse and are not empty.
    #[test]
    fn repository_fragments_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        for v in [Variant::Default, Variant::SharedPtl, Variant::Kasan] {
            let machines = [
                crate::arch::X86_64_PC.guest_fragment,
                crate::arch::ARM64_VIRT.guest_fragment,
            ];
            for f in v.fragments().into_iter().chain(machines).chain([INLINE_HELPERS]) {
                let t = fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
                if f != "series.config" {
                    assert!(!parse(&t).is_empty(), "{f} sets nothing");
                }
            }
        }
    }

    #[test]
    fn each_patch_gets_the_whole_series_configuration_back() {
        let d = tempfile::tempdir().unwrap();
        let dot = d.path().join(".config");
        let full = "CONFIG_RUST=y\nCONFIG_KHUGEPAGED_RUST=y\n";
        std::fs::write(&dot, full).unwrap();
        let kept = super::SeriesConfig::keep(d.path()).unwrap();
        // An olddefconfig at a patch that does not know the series' option drops it ...
        let drop_it = |c: &str| {
            let mut sh = std::process::Command::new("sh");
            sh.arg("-c").arg(format!("printf '{c}' > {}", dot.display()));
            sh
        };
        let cfg = kept.for_patch(&mut drop_it("CONFIG_RUST=y\\n")).unwrap();
        assert_eq!(cfg.get("CONFIG_KHUGEPAGED_RUST"), None);
        // ... and the next patch starts from the whole configuration again.
        let cfg = kept.for_patch(&mut std::process::Command::new("true")).unwrap();
        assert_eq!(
            cfg.get("CONFIG_KHUGEPAGED_RUST").cloned().flatten().as_deref(),
            Some("y")
        );
        // A patch whose olddefconfig turns Rust off is named as such.
        let e = kept.for_patch(&mut drop_it("# CONFIG_RUST is not set\\n")).unwrap_err();
        assert!(format!("{e:#}").contains("CONFIG_RUST is off"), "{e:#}");
    }
}
