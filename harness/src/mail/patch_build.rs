//! Bisectability: every patch of a series built in turn, in the series' own
//! build directory.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::path::Path;

use crate::build;
use crate::cmd;
use crate::config;
use crate::layout::Layout;

/// The machine the per-patch builds are for: the x86-64 test kernel's configuration.
const MACHINE: &crate::arch::Machine = &crate::arch::X86_64_PC;

fn mail_make(layout: &Layout, tree: &Path, bdir: &Path) -> std::process::Command {
    let mut c = build::make(layout, tree, bdir);
    c.args(MACHINE.make_vars());
    c
}

/// Build every patch of the series `m` in turn, with the stacks below it
/// applied (`commits` are the series' commits in the mail tree `tree`), in
/// the series' own build directory (`work/mail-tree/build-mail-<series>`): vmlinux with Rust
/// on and without a warning; for the RFC the series' options must be on at
/// the last patch, which is built with CLIPPY=1, then rustfmtcheck and
/// rustdoc.
pub fn build_check(layout: &Layout, m: &super::Mailing, tree: &Path, commits: &[String]) -> Result<()> {
    let bdir = m.build_dir.clone();
    fs::create_dir_all(&bdir)?;
    let series_frag = fs::read_to_string(layout.configs().join("series.config"))?;
    let n = commits.len();
    let res = (|| -> Result<()> {
        cmd::output(&mut cmd::git(tree, ["checkout", "-q", "--detach", &commits[n - 1]]))?;
        config::configure(layout, tree, &bdir, MACHINE, config::Variant::Default, m.rust(), &[])?;
        let series_config = config::SeriesConfig::keep(&bdir)?;
        for (i, c) in commits.iter().enumerate() {
            cmd::output(&mut cmd::git(tree, ["checkout", "-q", "--detach", c]))?;
            let subject = cmd::output(&mut cmd::git(tree, ["log", "-1", "--format=%s", c]))?
                .trim()
                .to_string();
            let cfg = series_config
                .for_patch(mail_make(layout, tree, &bdir).arg("olddefconfig"))
                .with_context(|| format!("patch {}/{n} \"{subject}\"", i + 1))?;
            let on: Vec<String> = config::parse(&series_frag)
                .into_keys()
                .filter(|k| cfg.get(k).cloned().flatten().is_some())
                .collect();
            eprintln!(
                "  patch {}/{n}: series options on: {}",
                i + 1,
                if on.is_empty() { "none".into() } else { on.join(" ") }
            );
            if i + 1 == n && m.rust() {
                let text = fs::read_to_string(bdir.join(".config"))?;
                let bad = config::mismatches(&[("configs/series.config".into(), series_frag.clone())], &text);
                if !bad.is_empty() {
                    bail!(
                        "the series' options are not all on at the last patch:\n  {}",
                        bad.join("\n  ")
                    );
                }
            }
            let last = i + 1 == n && m.rust();
            let mut make = mail_make(layout, tree, &bdir);
            make.arg("vmlinux");
            if last {
                make.arg("CLIPPY=1");
            }
            let log = bdir.join(format!("patch-{:02}.log", i + 1));
            let stage = format!("build {}/{n}{}", i + 1, if last { " (CLIPPY=1)" } else { "" });
            cmd::logged(&stage, &mut make, &log, None)
                .with_context(|| format!("patch {}/{n} \"{subject}\" does not build (vmlinux, Rust on)", i + 1))?;
            no_warnings(
                &log,
                &format!(
                    "patch {}/{n} \"{subject}\"{}",
                    i + 1,
                    if last { " with CLIPPY=1" } else { "" }
                ),
            )?;
        }
        if !m.rust() {
            return Ok(());
        }
        cmd::logged(
            "rustfmtcheck",
            mail_make(layout, tree, &bdir).arg("rustfmtcheck"),
            &bdir.join("rustfmtcheck.log"),
            None,
        )
        .context("`make rustfmtcheck` fails on the series")?;
        let log = bdir.join("rustdoc.log");
        cmd::logged("rustdoc", mail_make(layout, tree, &bdir).arg("rustdoc"), &log, None)
            .context("`make rustdoc` fails on the series")?;
        no_warnings(&log, "make rustdoc on the series")
    })();
    cmd::output(&mut cmd::git(tree, ["checkout", "-q", "mail"]))?;
    res?;
    eprintln!(
        "  build check ({}): all {} patch(es) of the {} series build in turn with Rust on and without a warning{}",
        bdir.display(),
        commits.len(),
        m.name(),
        if m.rust() {
            "; clippy, rustfmtcheck and rustdoc clean"
        } else {
            ""
        }
    );
    Ok(())
}

/// Fails if the build log `log` has a compiler, clippy or rustdoc warning.
pub fn no_warnings(log: &Path, what: &str) -> Result<()> {
    let warned = build::warnings(&fs::read_to_string(log)?);
    if !warned.is_empty() {
        bail!(
            "{what}: {} warning(s) ({}):\n  {}",
            warned.len(),
            log.display(),
            warned.join("\n  ")
        );
    }
    Ok(())
}
