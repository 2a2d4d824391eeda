//! The series: `patches/series` (quilt format) and `git format-patch` files.
//! Applied with `git am` onto the base tag in an ignored work tree, exported
//! back from the work tree's commits with stable output.
//!
//! Three stacks, applied in this order:
//! - `patches/fixes/series`: the C fixes and their selftests, a series of its
//!   own that is mailed first (stable material); the RFC applies on top.
//!   In the work tree its commits carry a git note `fixes` (ref
//!   [`STACK_NOTES`], kept across `rebase` and `commit --amend` by
//!   `notes.rewriteRef`), which is how `export` tells them from the RFC.
//! - `patches/series`: the mailed RFC series.
//! - `patches/local/series`: local-only patches (debugfs switch,
//!   instrumentation, reproducers not for a public list) applied on top for
//!   test and benchmark kernels and never mailed. Commits whose subject
//!   starts with `LOCAL:` belong to it and must come last.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::path::{Path, PathBuf};

use crate::cmd;
use crate::layout::{Layout, BASE_TAG};

mod export;
pub use export::{export_to, exported_matches, patch_subject, Exported};

pub const LOCAL_PREFIX: &str = "LOCAL:";
/// The notes ref that marks the work tree's commits of the fixes stack.
pub const STACK_NOTES: &str = "refs/notes/khrs-stack";
/// The note text of a commit of the fixes stack.
pub const FIXES_NOTE: &str = "fixes";

/// One stack of patches: a directory with a quilt `series` file.
#[derive(Debug, Clone)]
pub struct Stack {
    pub dir: PathBuf,
    pub patches: Vec<String>,
}

/// Parse a quilt series file: one patch per line, `#` comments, blank lines;
/// quilt's per-patch options (`-p1`) are accepted, anything else refused.
pub fn parse_series(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        for opt in words {
            if opt != "-p1" {
                bail!(
                    "series line {}: option `{opt}` is not supported (git am applies with -p1)",
                    n + 1
                );
            }
        }
        if out.iter().any(|p| p == name) {
            bail!("series line {}: {name} is listed twice", n + 1);
        }
        out.push(name.to_string());
    }
    Ok(out)
}

impl Stack {
    pub fn load(dir: &Path) -> Result<Stack> {
        let file = dir.join("series");
        let patches = match fs::read_to_string(&file) {
            Ok(t) => parse_series(&t).with_context(|| file.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| file.display().to_string()),
        };
        for p in &patches {
            if !dir.join(p).is_file() {
                bail!(
                    "{} names {p}, which does not exist in {}",
                    file.display(),
                    dir.display()
                );
            }
        }
        Ok(Stack {
            dir: dir.to_path_buf(),
            patches,
        })
    }
    pub fn paths(&self) -> Vec<PathBuf> {
        self.patches.iter().map(|p| self.dir.join(p)).collect()
    }
}

pub fn mailed(layout: &Layout) -> Result<Stack> {
    Stack::load(&layout.patches())
}
pub fn fixes(layout: &Layout) -> Result<Stack> {
    Stack::load(&fixes_dir(&layout.patches()))
}
fn fixes_dir(patches: &Path) -> PathBuf {
    patches.join("fixes")
}
pub fn local(layout: &Layout) -> Result<Stack> {
    Stack::load(&layout.patches().join("local"))
}

/// Which kernel to build from the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kernel {
    /// The series (`patches/series`, and `patches/local/series` unless --mailed-only), in work/linux.
    Series,
    /// The negative control, in work/linux-broken: the base with `patches/broken/series` (the
    /// 2023 window re-opened) and the selftest parts of the series, so that the race
    /// selftest can run on it.
    Broken,
}

pub fn broken(layout: &Layout) -> Result<Stack> {
    Stack::load(&layout.patches().join("broken"))
}

/// The files a patch touches (`diff --git a/X b/X` lines).
pub fn touched_files(patch: &str) -> Vec<String> {
    patch
        .lines()
        .filter_map(|l| l.strip_prefix("diff --git a/"))
        .filter_map(|l| l.split_once(" b/").map(|(a, _)| a.to_string()))
        .collect()
}

/// Where the selftests live: the part of the series the negative control takes.
pub const SELFTESTS: &str = "tools/testing/selftests/";

/// The patches of `stack` that touch the selftests.
pub fn touching_selftests(stack: &Stack) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in stack.paths() {
        let text = fs::read_to_string(&p).with_context(|| p.display().to_string())?;
        if touched_files(&text).iter().any(|f| f.starts_with(SELFTESTS)) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Apply the negative control's patches to work/linux-broken. The tree is derived, never
/// edited: it is re-made from the base whenever the patches changed.
pub fn apply_broken(layout: &Layout) -> Result<PathBuf> {
    let wt = ensure_tree(layout, &layout.broken_tree())?;
    let mut tests = touching_selftests(&fixes(layout)?)?;
    tests.extend(touching_selftests(&mailed(layout)?)?);
    let broken = broken(layout)?;
    if broken.patches.is_empty() {
        bail!("{}/series lists no patch", broken.dir.display());
    }
    // Only the selftest part of a series patch (its MAINTAINERS or docs hunks may need the
    // patches left out).
    let mut patches: Vec<(PathBuf, Option<String>)> =
        tests.into_iter().map(|p| (p, Some(format!("{SELFTESTS}*")))).collect();
    patches.extend(broken.paths().into_iter().map(|p| (p, None)));
    apply_derived(&wt, "broken", &patches)?;
    Ok(wt)
}

/// `git am` commits: a machine without a git identity still needs one for the trees the
/// harness makes (derived, rebase).
pub fn ensure_identity(tree: &Path) -> Result<()> {
    if cmd::output(&mut cmd::git(tree, ["config", "user.email"])).is_err() {
        cmd::output(&mut cmd::git(tree, ["config", "user.name", "khugepaged-rs harness"]))?;
        cmd::output(&mut cmd::git(tree, ["config", "user.email", "harness@localhost"]))?;
    }
    Ok(())
}

/// Make a derived tree (the negative control's, the cross builds') the base with `patches`
/// applied by `git am` on branch `branch`, each limited to the paths matching its pattern if it
/// has one (`git am --include`). A stamp in the tree's `.git` holds the patches' text: the tree
/// is left alone, mtimes and all, while they have not changed. Build directories survive.
pub fn apply_derived(tree: &Path, branch: &str, patches: &[(PathBuf, Option<String>)]) -> Result<()> {
    let mut key = String::new();
    for (p, include) in patches {
        key.push_str(&fs::read_to_string(p).with_context(|| p.display().to_string())?);
        key.push_str(include.as_deref().unwrap_or(""));
    }
    let stamp = tree.join(".git/khrs-applied");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) && is_clean(tree)? {
        return Ok(());
    }
    ensure_identity(tree)?;
    cmd::output(&mut cmd::git(tree, ["am", "--abort"])).ok();
    cmd::output(&mut cmd::git(tree, ["checkout", "-q", "-f", "-B", branch, BASE_TAG]))?;
    crate::base::clean(tree)?;
    for (p, include) in patches {
        let mut am = cmd::git(tree, ["am", "-q", "--keep-cr"]);
        if let Some(include) = include {
            am.arg(format!("--include={include}"));
        }
        if let Err(e) = cmd::output(am.arg(p)) {
            cmd::output(&mut cmd::git(tree, ["am", "--abort"])).ok();
            bail!("patch {} does not apply to {BASE_TAG}:\n{e:#}", p.display());
        }
    }
    fs::write(&stamp, key)?;
    Ok(())
}

/// Make sure the work tree exists: a clone of the base repository.
pub fn ensure_work_tree(layout: &Layout) -> Result<PathBuf> {
    ensure_tree(layout, &layout.work_tree())
}

pub fn ensure_tree(layout: &Layout, wt: &Path) -> Result<PathBuf> {
    let wt = wt.to_path_buf();
    if !wt.join(".git").exists() {
        crate::base::clone_to(layout, &wt, "series")?;
    } else {
        // The base may have been re-made: fetch its tag.
        cmd::output(&mut cmd::git(&wt, ["fetch", "-q", "--tags", "origin"]))?;
        crate::base::exclude_build_dirs(&wt)?;
    }
    Ok(wt)
}

fn is_clean(tree: &Path) -> Result<bool> {
    Ok(cmd::output(&mut cmd::git(
        tree,
        ["status", "--porcelain", "--untracked-files=normal"],
    ))?
    .trim()
    .is_empty())
}

/// Apply the series (and the local stack if `with_local`) to the work tree.
/// A work tree that already holds exactly these patches is left alone, so an
/// unchanged series does not touch mtimes and rebuild. A work tree with
/// commits or edits that are not in `patches/` is refused unless `force`.
pub fn apply(layout: &Layout, with_local: bool, force: bool) -> Result<PathBuf> {
    let wt = ensure_work_tree(layout)?;
    let fixes = fixes(layout)?;
    let mailed = mailed(layout)?;
    let local = local(layout)?;
    let head_is_base = cmd::output(&mut cmd::git(&wt, ["rev-parse", "HEAD"]))?
        == cmd::output(&mut cmd::git(&wt, ["rev-parse", &format!("{BASE_TAG}^{{commit}}")]))?;
    let clean = is_clean(&wt)?;
    if clean && exported_matches(&wt, &layout.patches(), with_local)? {
        return Ok(wt);
    }
    if !force && (!clean || (!head_is_base && !exported_matches(&wt, &layout.patches(), true)?)) {
        bail!(
            "the work tree {} has changes that are not in patches/ (uncommitted edits, or commits not exported).\n\
             Run `cargo harness export` to keep them, or pass --force to discard them.",
            wt.display()
        );
    }
    cmd::output(&mut cmd::git(&wt, ["am", "--abort"])).ok();
    cmd::output(&mut cmd::git(&wt, ["checkout", "-q", "-f", "-B", "series", BASE_TAG]))?;
    crate::base::clean(&wt)?;
    // Rebases and amends carry the stack notes over to the new commits.
    cmd::output(&mut cmd::git(&wt, ["config", "notes.rewriteRef", STACK_NOTES]))?;
    let mut all: Vec<(PathBuf, bool)> = fixes.paths().into_iter().map(|p| (p, true)).collect();
    all.extend(mailed.paths().into_iter().map(|p| (p, false)));
    if with_local {
        all.extend(local.paths().into_iter().map(|p| (p, false)));
    }
    for (p, is_fix) in &all {
        let r = cmd::output(cmd::git(&wt, ["am", "-q", "--keep-cr"]).arg(p));
        if let Err(e) = r {
            cmd::output(&mut cmd::git(&wt, ["am", "--abort"])).ok();
            bail!("patch {} does not apply to {BASE_TAG}:\n{e:#}", p.display());
        }
        if *is_fix {
            cmd::output(&mut cmd::git(
                &wt,
                [
                    "notes",
                    &format!("--ref={STACK_NOTES}"),
                    "add",
                    "-f",
                    "-m",
                    FIXES_NOTE,
                    "HEAD",
                ],
            ))?;
        }
    }
    Ok(wt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_format() {
        let s = "# the mailed series\n0001-a.patch\n\n0002-b.patch -p1  # trailing comment\n";
        assert_eq!(parse_series(s).unwrap(), vec!["0001-a.patch", "0002-b.patch"]);
        assert!(parse_series("").unwrap().is_empty());
        assert!(parse_series("x.patch -p0\n").is_err());
        assert!(parse_series("x.patch\nx.patch\n").is_err());
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;

    use crate::cmd::git_ok as git;

    /// A base repository with a tag, a clone layout, and a series whose
    /// second patch does not apply: the error names that patch, and the
    /// work tree is left without a half-applied `git am`.
    #[test]
    fn a_patch_that_does_not_apply_is_named() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::new(t.path().join("repo"), t.path().join("cache"));
        let base = layout.base_repo();
        cmd::git_repo_with_base(&base, "base", ("T", "t@example.org"), ("f", "a\nb\nc\n"));
        git(&base, &["tag", BASE_TAG]);
        // Make two patches on a scratch branch of the base.
        git(&base, &["checkout", "-q", "-b", "scratch"]);
        fs::write(base.join("f"), "a\nB\nc\n").unwrap();
        git(&base, &["commit", "-q", "-am", "mm: good"]);
        fs::write(base.join("f"), "a\nB\nC\n").unwrap();
        git(&base, &["commit", "-q", "-am", "mm: broken"]);
        let p = layout.patches();
        export_to(&base, &p).unwrap();
        git(&base, &["checkout", "-q", "base"]);
        // Break the second patch's context.
        let name = "0002-mm-broken.patch";
        let text = fs::read_to_string(p.join(name)).unwrap().replace(" a\n", " x\n");
        fs::write(p.join(name), text).unwrap();
        fs::create_dir_all(layout.repo.join("work")).unwrap();
        let err = format!("{:#}", apply(&layout, true, false).unwrap_err());
        assert!(err.contains("0002-mm-broken.patch does not apply"), "{err}");
        let wt = layout.work_tree();
        assert!(!wt.join(".git/rebase-apply").exists(), "git am left in progress");
        // The good first patch alone applies, and a re-apply is a no-op.
        fs::write(p.join("series"), "0001-mm-good.patch\n").unwrap();
        apply(&layout, true, false).unwrap();
        assert_eq!(fs::read_to_string(wt.join("f")).unwrap(), "a\nB\nc\n");
        apply(&layout, true, false).unwrap();
        // Local edits are not thrown away without --force.
        fs::write(wt.join("f"), "edited\n").unwrap();
        assert!(format!("{:#}", apply(&layout, true, false).unwrap_err()).contains("--force"));
        apply(&layout, true, true).unwrap();
        assert_eq!(fs::read_to_string(wt.join("f")).unwrap(), "a\nB\nc\n");
    }
}
