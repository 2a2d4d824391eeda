//! The tree's own checkers, run as a maintainer runs them: checkpatch
//! (`--strict`, codespell, commit references looked up only where the tree
//! has history) and kernel-doc.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::SYSTEM_PYTHON;
use crate::cmd;

/// The codespell dictionary checkpatch should use. Debian's codespell puts
/// it under python3's dist-packages, not at checkpatch's default
/// /usr/share/codespell/dictionary.txt, and checkpatch's own fallback asks
/// the `python3` first on PATH (pyenv's here, without codespell_lib).
pub fn codespell_dictionary() -> Result<PathBuf> {
    let default = PathBuf::from("/usr/share/codespell/dictionary.txt");
    if default.is_file() {
        return Ok(default);
    }
    let found = cmd::output(Command::new(SYSTEM_PYTHON).args([
        "-c",
        "import os.path as p, codespell_lib as c; print(p.join(p.dirname(c.__file__), 'data', 'dictionary.txt'), end='')",
    ]))
    .context("codespell is not installed (apt-get install codespell)")?;
    let p = PathBuf::from(found.trim());
    if !p.is_file() {
        bail!("codespell's dictionary {} does not exist", p.display());
    }
    Ok(p)
}

/// checkpatch's `total: E errors, W warnings, C checks, ...` line.
pub fn checkpatch_totals(out: &str) -> Option<(u32, u32, u32)> {
    let line = out.lines().find(|l| l.starts_with("total: "))?;
    let nums: Vec<u32> = line
        .trim_start_matches("total: ")
        .split(", ")
        .take(3)
        .map(|part| part.split_whitespace().next().and_then(|n| n.parse().ok()))
        .collect::<Option<_>>()?;
    Some((nums[0], nums[1], nums[2]))
}

/// Whether `tree` has history below the base tag. Debian's 7.3.4 is one
/// commit, so checkpatch cannot look up the commit ids a patch names
/// (Fixes:, `commit 0123456789ab ("...")`) and calls each one unknown.
pub fn has_history(tree: &Path) -> bool {
    cmd::output(&mut cmd::git(tree, ["rev-list", "--count", crate::layout::BASE_TAG]))
        .is_ok_and(|n| n.trim().parse::<u64>().unwrap_or(0) > 1)
}

/// The commit references of a commit message: `0123456789ab ("subject")`,
/// as in Fixes: tags and in the text; what checkpatch's GIT_COMMIT_ID and
/// UNKNOWN_COMMIT_ID checks look at.
pub fn commit_references(msg: &str) -> Vec<String> {
    let flat = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut v = Vec::new();
    for (i, _) in flat.match_indices(" (\"") {
        let id = flat[..i].rsplit(' ').next().unwrap_or_default();
        if (12..=40).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit()) {
            let rest = &flat[i + 3..];
            let title = rest.find("\")").map_or(rest, |e| &rest[..e]);
            v.push(format!("{id} (\"{title}\")"));
        }
    }
    v
}

/// `checkpatch.pl --strict --codespell` on one mail; `signoff`: also its
/// sign-off checks (without --signoff the mails have no Signed-off-by yet);
/// `history`: the tree has upstream history to look commit ids up in
/// (without it, UNKNOWN_COMMIT_ID is ignored and the caller lists the ids).
pub fn checkpatch(tree: &Path, patch: &Path, dict: &Path, signoff: bool, history: bool) -> Result<()> {
    // checkpatch runs scripts/spdxcheck.py with the first python3 on PATH; Debian's has the
    // modules it needs (python3-ply, python3-git), a pyenv or venv one may not.
    let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
    let out = Command::new("perl")
        .current_dir(tree)
        .env("PATH", path)
        .arg("scripts/checkpatch.pl")
        .args(["--strict", "--codespell", "--codespellfile"])
        .arg(dict)
        .args((!signoff).then_some("--no-signoff"))
        .args(if history {
            &[][..]
        } else {
            &["--ignore", "UNKNOWN_COMMIT_ID"][..]
        })
        .arg(patch)
        .stdin(Stdio::null())
        .output()
        .context("cannot run scripts/checkpatch.pl")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("Traceback (most recent call last)") {
        bail!(
            "a checker run by checkpatch crashed, so its result does not count:\n{}",
            text.trim_end()
        );
    }
    match checkpatch_totals(&text) {
        Some((0, 0, 0)) if out.status.success() => Ok(()),
        Some((e, w, c)) => bail!(
            "checkpatch --strict: {e} errors, {w} warnings, {c} checks:\n{}",
            text.trim_end()
        ),
        None => bail!("checkpatch printed no totals ({}):\n{}", out.status, text.trim_end()),
    }
}

/// kernel-doc warnings without the `file:line: ` part, so that the same
/// warning before and after the series compares equal.
pub fn normalize_kdoc(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            for tag in [": warning: ", ": error: "] {
                if let Some(i) = l.find(tag) {
                    return l[i + 2..].to_string();
                }
            }
            l.to_string()
        })
        .collect()
}

pub fn kdoc_run(tree: &Path, file: &Path) -> Result<String> {
    let out = Command::new(tree.join("scripts/kernel-doc"))
        .current_dir(tree)
        .arg("-none")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .context("cannot run scripts/kernel-doc")?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `scripts/kernel-doc -none` on every C file the series touches; returns
/// the warnings that the file did not have at `below` (where the series
/// starts: the base, or the last patch of the stacks below).
pub fn kernel_doc(tree: &Path, below: &str) -> Result<Vec<String>> {
    let names = cmd::output(&mut cmd::git(
        tree,
        ["diff", "--name-only", "--diff-filter=AMR", &format!("{below}..HEAD")],
    ))?;
    let scratch = tree.join(".git/khrs-kdoc-base");
    let mut new = Vec::new();
    for f in names.lines().filter(|f| f.ends_with(".c") || f.ends_with(".h")) {
        let after = normalize_kdoc(&kdoc_run(tree, Path::new(f))?);
        let before = match cmd::output(&mut cmd::git(tree, ["show", &format!("{below}:{f}")])) {
            Ok(text) => {
                let copy = scratch.join(f);
                fs::create_dir_all(copy.parent().expect("a file has a parent"))?;
                fs::write(&copy, text)?;
                normalize_kdoc(&kdoc_run(tree, &copy)?)
            }
            Err(_) => BTreeSet::new(),
        };
        new.extend(after.difference(&before).map(|w| format!("{f}: {w}")));
    }
    let _ = fs::remove_dir_all(&scratch);
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_references_in_a_message() {
        let msg = "Since commit 6dfd0d2cb369 (\"mm: khugepaged: collapse_pte_mapped_thp() use\n\
                   pte_offset_map_rw_nolock()\") the check is\nconditional.\n\n\
                   Fixes: 6375e95f381e (\"mm: pgtable: reclaim empty PTE page\")\nCc: stable@vger.kernel.org\n";
        assert_eq!(
            commit_references(msg),
            vec![
                "6dfd0d2cb369 (\"mm: khugepaged: collapse_pte_mapped_thp() use pte_offset_map_rw_nolock()\")",
                "6375e95f381e (\"mm: pgtable: reclaim empty PTE page\")",
            ]
        );
        assert!(commit_references("no ids (\"here\")").is_empty());
    }

    #[test]
    fn checkpatch_and_kernel_doc_output() {
        assert_eq!(
            checkpatch_totals("foo\ntotal: 0 errors, 2 warnings, 1 checks, 22 lines checked\n"),
            Some((0, 2, 1))
        );
        assert_eq!(checkpatch_totals("nothing"), None);
        let w = normalize_kdoc("mm/x.c:12: warning: Function parameter 'a' not described\n");
        assert!(w.contains("warning: Function parameter 'a' not described"));
    }
}
