//! Export: the work tree's commits since the base back into `patches/`, one
//! stack a folder, as format-patch files that are stable across exports.

use anyhow::{bail, Result};
use fs_err as fs;
use std::path::{Path, PathBuf};

use super::{fixes_dir, Stack, FIXES_NOTE, LOCAL_PREFIX, STACK_NOTES};
use crate::cmd;
use crate::layout::BASE_TAG;

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
pub fn patch_subject(text: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cmd::git_ok as git;

    /// Export, re-apply on the base, export again: identical files.
    #[test]
    fn export_is_stable_and_splits_local() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        cmd::git_repo_with_base(&tree, "main", ("T", "t@example.org"), ("f", "base\n"));
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
