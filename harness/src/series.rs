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
use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd;
use crate::layout::{Layout, BASE_TAG};

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

/// Render commits `base..head` of `tree` as format-patch files into `dir`,
/// stable across exports: zero commit ids, no signature, no dates that change.
fn format_patches(tree: &Path, range: &str, dir: &Path) -> Result<Vec<String>> {
    fs::create_dir_all(dir)?;
    let out = cmd::output(&mut cmd::git(
        tree,
        [
            "-c",
            "core.abbrev=12",
            "-c",
            "diff.noprefix=false",
            "format-patch",
            "--zero-commit",
            "--no-signature",
            "--no-numbered",
            "--full-index",
            "--output-directory",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([dir.display().to_string(), range.to_string()]),
    ))?;
    Ok(out
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            Path::new(l)
                .file_name()
                .expect("format-patch prints files")
                .to_string_lossy()
                .into_owned()
        })
        .collect())
}

/// The work tree's commits since the base, by stack.
#[derive(Debug, Default, PartialEq)]
struct Split {
    fixes: Vec<String>,
    mailed: Vec<String>,
    local: Vec<String>,
    /// Subjects of the mailed and local commits, to catch a fix that lost its note.
    unmarked_subjects: Vec<(String, String)>,
}

/// The `Subject:` of a format-patch file, without the `[PATCH]` prefix.
fn patch_subject(text: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("Subject: "));
    let mut subject = lines.next()?.trim_start_matches("Subject: ").to_string();
    // Folded header lines continue with whitespace.
    for l in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
        subject.push_str(l);
    }
    let subject = subject.trim();
    Some(match subject.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((_, rest)) => rest.to_string(),
        None => subject.to_string(),
    })
}

/// Commits since the base split into stacks: those with the `fixes` note
/// first, then the mailed ones, then from the first `LOCAL:` subject on the
/// local ones; any other order is an error.
fn split_commits(tree: &Path) -> Result<Split> {
    let log = cmd::output(&mut cmd::git(
        tree,
        [
            "log",
            "--reverse",
            &format!("--notes={STACK_NOTES}"),
            "--format=%H%x1f%s%x1f%N%x1e",
            &format!("{BASE_TAG}..HEAD"),
        ],
    ))?;
    let mut split = Split::default();
    for rec in log.split('\x1e').map(str::trim).filter(|r| !r.is_empty()) {
        let mut f = rec.split('\x1f');
        let (id, subject, note) = (
            f.next().unwrap_or_default().to_string(),
            f.next().unwrap_or_default(),
            f.next().unwrap_or_default().trim(),
        );
        if note == FIXES_NOTE {
            if !split.mailed.is_empty() || !split.local.is_empty() {
                bail!("commit {id} \"{subject}\" is marked as a fix but comes after a commit of the series; move the fixes first");
            }
            split.fixes.push(id);
        } else if !note.is_empty() {
            bail!("commit {id} \"{subject}\" has the {STACK_NOTES} note \"{note}\"; the only stack note is \"{FIXES_NOTE}\"");
        } else if subject.starts_with(LOCAL_PREFIX) {
            split.unmarked_subjects.push((id.clone(), subject.to_string()));
            split.local.push(id);
        } else if !split.local.is_empty() {
            bail!("commit {id} \"{subject}\" comes after a LOCAL: commit; move local-only commits to the end");
        } else {
            split.unmarked_subjects.push((id.clone(), subject.to_string()));
            split.mailed.push(id);
        }
    }
    Ok(split)
}

/// The range of `commits` (consecutive, oldest first) whose parent is `from`.
fn range(from: &str, commits: &[String]) -> String {
    commits.last().map(|c| format!("{from}..{c}")).unwrap_or_default()
}

fn write_stack(tree: &Path, range: &str, dir: &Path) -> Result<Vec<String>> {
    // Remove the old patch files of this stack, keep everything else.
    if let Ok(old) = Stack::load(dir) {
        for p in old.paths() {
            let _ = fs::remove_file(p);
        }
    }
    let names = if range.is_empty() {
        Vec::new()
    } else {
        format_patches(tree, range, dir)?
    };
    let mut series = String::new();
    for n in &names {
        series.push_str(n);
        series.push('\n');
    }
    fs::create_dir_all(dir)?;
    fs::write(dir.join("series"), series)?;
    Ok(names)
}

/// The patch files written by an export, per stack.
#[derive(Debug)]
pub struct Exported {
    pub fixes: Vec<String>,
    pub mailed: Vec<String>,
    pub local: Vec<String>,
}

/// Export the work tree's commits into `patches/fixes/`, `patches/` and
/// `patches/local/`.
pub fn export_to(tree: &Path, patches: &Path) -> Result<Exported> {
    let split = split_commits(tree)?;
    // A fix whose note got lost (a tool that rewrote it without notes.rewriteRef) would move
    // into the RFC series without a word: refuse instead.
    if let Ok(stack) = Stack::load(&fixes_dir(patches)) {
        for p in stack.paths() {
            let Some(fix) = fs::read_to_string(&p).ok().as_deref().and_then(patch_subject) else {
                continue;
            };
            if let Some((id, _)) = split.unmarked_subjects.iter().find(|(_, s)| *s == fix) {
                bail!(
                    "commit {id} \"{fix}\" is a patch of {} but has no {STACK_NOTES} note; \
                     mark it with `git notes --ref={STACK_NOTES} add -f -m {FIXES_NOTE} {id}`",
                    fixes_dir(patches).display()
                );
            }
        }
    }
    let after_fixes = split.fixes.last().cloned().unwrap_or_else(|| BASE_TAG.to_string());
    let after_mailed = split.mailed.last().cloned().unwrap_or_else(|| after_fixes.clone());
    Ok(Exported {
        fixes: write_stack(tree, &range(BASE_TAG, &split.fixes), &fixes_dir(patches))?,
        mailed: write_stack(tree, &range(&after_fixes, &split.mailed), patches)?,
        local: write_stack(tree, &range(&after_mailed, &split.local), &patches.join("local"))?,
    })
}

/// Would exporting the work tree change `patches/`? Compares the rendered
/// patches byte for byte.
pub fn exported_matches(tree: &Path, patches: &Path, with_local: bool) -> Result<bool> {
    let tmp = tempdir_in(tree)?;
    let res = (|| {
        export_to(tree, &tmp)?;
        let mut pairs = vec![
            (fixes_dir(&tmp), fixes_dir(patches)),
            (tmp.clone(), patches.to_path_buf()),
        ];
        if with_local {
            pairs.push((tmp.join("local"), patches.join("local")));
        } else if !Stack::load(&tmp.join("local"))?.patches.is_empty() {
            return Ok(false);
        }
        for (a, b) in pairs {
            let (sa, sb) = (Stack::load(&a)?, Stack::load(&b)?);
            if sa.patches != sb.patches {
                return Ok(false);
            }
            for p in &sa.patches {
                if fs::read(a.join(p))? != fs::read(b.join(p))? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })();
    let _ = fs::remove_dir_all(&tmp);
    res
}

fn tempdir_in(tree: &Path) -> Result<PathBuf> {
    let d = tree.join(".git/khrs-export-check");
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d)?;
    Ok(d)
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

    fn git(dir: &Path, args: &[&str]) {
        cmd::output(&mut cmd::git(dir, args)).unwrap();
    }

    /// Export, re-apply on the base, export again: identical files.
    #[test]
    fn export_is_stable_and_splits_local() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        git(&tree, &["init", "-q", "-b", "main"]);
        git(&tree, &["config", "user.name", "T"]);
        git(&tree, &["config", "user.email", "t@example.org"]);
        fs::write(tree.join("f"), "base\n").unwrap();
        git(&tree, &["add", "f"]);
        git(&tree, &["commit", "-q", "-m", "base"]);
        git(&tree, &["tag", BASE_TAG]);
        git(&tree, &["config", "notes.rewriteRef", STACK_NOTES]);
        fs::write(tree.join("h"), "fix\n").unwrap();
        git(&tree, &["add", "h"]);
        git(&tree, &["commit", "-q", "-m", "mm: a fix"]);
        let notes = format!("--ref={STACK_NOTES}");
        git(&tree, &["notes", &notes, "add", "-m", FIXES_NOTE, "HEAD"]);
        fs::write(tree.join("f"), "one\n").unwrap();
        git(&tree, &["commit", "-q", "-am", "mm: one"]);
        fs::write(tree.join("g"), "local\n").unwrap();
        git(&tree, &["add", "g"]);
        git(&tree, &["commit", "-q", "-m", "LOCAL: debug knob"]);
        let patches = t.path().join("patches");
        let e = export_to(&tree, &patches).unwrap();
        assert_eq!(e.fixes, vec!["0001-mm-a-fix.patch"]);
        assert_eq!(e.mailed, vec!["0001-mm-one.patch"]);
        assert_eq!(e.local, vec!["0001-LOCAL-debug-knob.patch"]);
        // A rebase keeps the note on the rewritten fix (notes.rewriteRef).
        fs::write(tree.join("h"), "fix, amended\n").unwrap();
        git(&tree, &["commit", "-q", "-a", "--fixup=HEAD~2"]);
        git(
            &tree,
            &[
                "-c",
                "sequence.editor=true",
                "rebase",
                "-q",
                "-i",
                "--autosquash",
                BASE_TAG,
            ],
        );
        let e = export_to(&tree, &patches).unwrap();
        assert_eq!((e.fixes.len(), e.mailed.len(), e.local.len()), (1, 1, 1));
        assert!(fs::read_to_string(patches.join("fixes/0001-mm-a-fix.patch"))
            .unwrap()
            .contains("+fix, amended"));
        assert!(exported_matches(&tree, &patches, true).unwrap());
        assert!(!exported_matches(&tree, &patches, false).unwrap());
        let first = fs::read_to_string(patches.join("0001-mm-one.patch")).unwrap();
        assert!(first.starts_with("From 0000000000000000000000000000000000000000 "));
        // Re-apply from the patches onto the base and export again.
        git(&tree, &["checkout", "-q", "-f", "-B", "main", BASE_TAG]);
        for p in Stack::load(&patches.join("fixes")).unwrap().paths() {
            git(&tree, &["am", "-q", p.to_str().unwrap()]);
            git(&tree, &["notes", &notes, "add", "-f", "-m", FIXES_NOTE, "HEAD"]);
        }
        for p in Stack::load(&patches)
            .unwrap()
            .paths()
            .into_iter()
            .chain(Stack::load(&patches.join("local")).unwrap().paths())
        {
            git(&tree, &["am", "-q", p.to_str().unwrap()]);
        }
        assert!(exported_matches(&tree, &patches, true).unwrap());
        export_to(&tree, &patches).unwrap();
        assert_eq!(fs::read_to_string(patches.join("0001-mm-one.patch")).unwrap(), first);
        // A mailed commit after a local one is refused.
        fs::write(tree.join("f"), "two\n").unwrap();
        git(&tree, &["commit", "-q", "-am", "mm: two"]);
        assert!(export_to(&tree, &t.path().join("p2")).is_err());
        // So is a fix after a commit of the series.
        git(&tree, &["reset", "-q", "--hard", "HEAD~2"]);
        fs::write(tree.join("h"), "late fix\n").unwrap();
        git(&tree, &["commit", "-q", "-am", "mm: late fix"]);
        git(&tree, &["notes", &notes, "add", "-m", FIXES_NOTE, "HEAD"]);
        let err = export_to(&tree, &t.path().join("p3")).unwrap_err().to_string();
        assert!(err.contains("marked as a fix but comes after"), "{err}");
        // And a fix of patches/fixes/ that lost its note.
        git(&tree, &["reset", "-q", "--hard", "HEAD~1"]);
        git(&tree, &["notes", &notes, "remove", "HEAD~1"]);
        let err = export_to(&tree, &patches).unwrap_err().to_string();
        assert!(err.contains("\"mm: a fix\" is a patch of"), "{err}");
        assert_eq!(
            patch_subject("Subject: [PATCH v2 1/3] mm: folded\n subject\n\nbody"),
            Some("mm: folded subject".into())
        );
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        cmd::output(&mut cmd::git(dir, args)).unwrap();
    }

    /// A base repository with a tag, a clone layout, and a series whose
    /// second patch does not apply: the error names that patch, and the
    /// work tree is left without a half-applied `git am`.
    #[test]
    fn a_patch_that_does_not_apply_is_named() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout {
            repo: t.path().join("repo"),
            cache: t.path().join("cache"),
        };
        let base = layout.base_repo();
        fs::create_dir_all(&base).unwrap();
        git(&base, &["init", "-q", "-b", "base"]);
        git(&base, &["config", "user.name", "T"]);
        git(&base, &["config", "user.email", "t@example.org"]);
        fs::write(base.join("f"), "a\nb\nc\n").unwrap();
        git(&base, &["add", "f"]);
        git(&base, &["commit", "-q", "-m", "base"]);
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
