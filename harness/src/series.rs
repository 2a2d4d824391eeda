//! The series: `patches/series` (quilt format) and `git format-patch` files.
//! Applied with `git am` onto the base tag in an ignored work tree, exported
//! back from the work tree's commits with stable output.
//!
//! Two stacks: `patches/series` is the mailed series; `patches/local/series`
//! holds local-only patches (debugfs switch, instrumentation) applied on top
//! for test and benchmark kernels and never mailed. Commits whose subject
//! starts with `LOCAL:` belong to the local stack and must come last.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd;
use crate::layout::{Layout, BASE_TAG};

pub const LOCAL_PREFIX: &str = "LOCAL:";

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
    let tests = touching_selftests(&mailed(layout)?)?;
    let broken = broken(layout)?;
    if broken.patches.is_empty() {
        bail!("{}/series lists no patch", broken.dir.display());
    }
    let mut patches = tests.clone();
    patches.extend(broken.paths());
    let mut key = String::new();
    for p in &patches {
        key.push_str(&fs::read_to_string(p).with_context(|| p.display().to_string())?);
    }
    let stamp = wt.join(".git/khrs-applied");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) && is_clean(&wt)? {
        return Ok(wt);
    }
    cmd::output(&mut cmd::git(&wt, ["am", "--abort"])).ok();
    cmd::output(&mut cmd::git(&wt, ["checkout", "-q", "-f", "-B", "broken", BASE_TAG]))?;
    cmd::output(&mut cmd::git(&wt, ["clean", "-q", "-fdx"]))?;
    for p in &patches {
        // Only the selftest part of a series patch (its MAINTAINERS or docs hunks may need the
        // patches left out).
        let include = format!("--include={SELFTESTS}*");
        let mut am = cmd::git(&wt, ["am", "-q", "--keep-cr"]);
        if tests.contains(p) {
            am.arg(&include);
        }
        if let Err(e) = cmd::output(am.arg(p)) {
            cmd::output(&mut cmd::git(&wt, ["am", "--abort"])).ok();
            bail!("patch {} does not apply to {BASE_TAG}:\n{e:#}", p.display());
        }
    }
    fs::write(&stamp, key)?;
    Ok(wt)
}

/// Make sure the work tree exists: a clone of the base repository.
pub fn ensure_work_tree(layout: &Layout) -> Result<PathBuf> {
    ensure_tree(layout, &layout.work_tree())
}

fn ensure_tree(layout: &Layout, wt: &Path) -> Result<PathBuf> {
    let wt = wt.to_path_buf();
    if !wt.join(".git").exists() {
        crate::base::clone_to(layout, &wt, "series")?;
    } else {
        // The base may have been re-made: fetch its tag.
        cmd::output(&mut cmd::git(&wt, ["fetch", "-q", "--tags", "origin"]))?;
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

/// Commits since the base: (mailed range end, local range end) split at the
/// first `LOCAL:` subject; a mailed commit after a local one is an error.
fn split_commits(tree: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let log = cmd::output(&mut cmd::git(
        tree,
        ["log", "--reverse", "--format=%H %s", &format!("{BASE_TAG}..HEAD")],
    ))?;
    let (mut mailed, mut local) = (Vec::new(), Vec::new());
    for line in log.lines() {
        let (id, subject) = line.split_once(' ').unwrap_or((line, ""));
        if subject.starts_with(LOCAL_PREFIX) {
            local.push(id.to_string());
        } else if !local.is_empty() {
            bail!("commit {id} \"{subject}\" comes after a LOCAL: commit; move local-only commits to the end");
        } else {
            mailed.push(id.to_string());
        }
    }
    Ok((mailed, local))
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

/// Export the work tree's commits into `patches/` and `patches/local/`.
pub fn export_to(tree: &Path, patches: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let (mailed, local) = split_commits(tree)?;
    let mailed_range = mailed.last().map(|c| format!("{BASE_TAG}..{c}")).unwrap_or_default();
    let local_range = match (mailed.last(), local.last()) {
        (_, None) => String::new(),
        (Some(m), Some(l)) => format!("{m}..{l}"),
        (None, Some(l)) => format!("{BASE_TAG}..{l}"),
    };
    let a = write_stack(tree, &mailed_range, patches)?;
    let b = write_stack(tree, &local_range, &patches.join("local"))?;
    Ok((a, b))
}

/// Would exporting the work tree change `patches/`? Compares the rendered
/// patches byte for byte.
pub fn exported_matches(tree: &Path, patches: &Path, with_local: bool) -> Result<bool> {
    let tmp = tempdir_in(tree)?;
    let res = (|| {
        export_to(tree, &tmp)?;
        let mut pairs = vec![(tmp.clone(), patches.to_path_buf())];
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
    cmd::output(&mut cmd::git(&wt, ["clean", "-q", "-fdx"]))?;
    let mut all = mailed.paths();
    if with_local {
        all.extend(local.paths());
    }
    for p in &all {
        let r = cmd::output(cmd::git(&wt, ["am", "-q", "--keep-cr"]).arg(p));
        if let Err(e) = r {
            cmd::output(&mut cmd::git(&wt, ["am", "--abort"])).ok();
            bail!("patch {} does not apply to {BASE_TAG}:\n{e:#}", p.display());
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
        fs::write(tree.join("f"), "one\n").unwrap();
        git(&tree, &["commit", "-q", "-am", "mm: one"]);
        fs::write(tree.join("g"), "local\n").unwrap();
        git(&tree, &["add", "g"]);
        git(&tree, &["commit", "-q", "-m", "LOCAL: debug knob"]);
        let patches = t.path().join("patches");
        let (a, b) = export_to(&tree, &patches).unwrap();
        assert_eq!(a, vec!["0001-mm-one.patch"]);
        assert_eq!(b, vec!["0001-LOCAL-debug-knob.patch"]);
        assert!(exported_matches(&tree, &patches, true).unwrap());
        assert!(!exported_matches(&tree, &patches, false).unwrap());
        let first = fs::read_to_string(patches.join("0001-mm-one.patch")).unwrap();
        assert!(first.starts_with("From 0000000000000000000000000000000000000000 "));
        // Re-apply from the patches onto the base and export again.
        git(&tree, &["checkout", "-q", "-f", "-B", "main", BASE_TAG]);
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
