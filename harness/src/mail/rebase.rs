//! `cargo harness mail --rebase-onto <git tree>`: the series on a base the
//! project did not test on (a user's mm-new or v7.3 checkout). mm will ask for
//! a series on mm-new; this machine cannot reach it, so the harness does what a
//! submitter would do by hand and says what happened, patch by patch.
//!
//! The tree given is never touched: `work/rebase-tree` is a `git clone --shared`
//! of it at its HEAD. Every stack the series needs (the fixes below the RFC,
//! then the series) is applied there with `git am -3`, one patch at a time, and
//! each patch's outcome recorded: applied as is, applied by a 3-way merge,
//! already in the tree (`git am` makes no commit), or a conflict (the files,
//! then `git am --skip` so the rest are still tried). Only when nothing
//! conflicts are the mail checks re-run on the result: checkpatch as the
//! mail command runs it (with the target's history, so commit references are
//! looked up there), then the per-patch build unless `--no-build-check`.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::fmt;
use std::path::{Path, PathBuf};

use super::checkpatch::{checkpatch, codespell_dictionary, has_history};
use super::patch_build::build_check;
use super::{file_name, Mailing};
use crate::cmd;
use crate::layout::Layout;

/// What `git am -3` did with one patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Applied, but only by falling back to a 3-way merge: the context moved.
    Merged,
    /// The change is in the target already ("No changes -- Patch already applied.").
    AlreadyApplied,
    /// The target's history has a commit with the same patch-id (not applied again).
    InHistory(String),
    /// `git am -3` stopped; these files have conflicts. The patch was skipped.
    Conflict(Vec<String>),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Outcome::Applied => write!(f, "applied"),
            Outcome::Merged => write!(f, "applied (3-way merge)"),
            Outcome::AlreadyApplied => write!(f, "already in the tree (no commit)"),
            Outcome::InHistory(c) => write!(f, "already in the tree as commit {c} (same patch-id)"),
            Outcome::Conflict(files) => write!(f, "CONFLICT in {}, skipped", files.join(", ")),
        }
    }
}

impl Outcome {
    /// The change was in the target before: no commit of the series for it.
    pub fn is_in_tree(&self) -> bool {
        matches!(self, Outcome::AlreadyApplied | Outcome::InHistory(_))
    }
}

/// One patch of the report: its stack, file and outcome.
#[derive(Debug, Clone)]
pub struct Step {
    pub stack: String,
    pub patch: String,
    pub outcome: Outcome,
}

/// The outcome of a `git am -3` of one patch that succeeded, from what git printed.
pub fn applied_outcome(am_output: &str) -> Outcome {
    if am_output.contains("No changes -- Patch already applied") {
        Outcome::AlreadyApplied
    } else if am_output.contains("Falling back to patching base and 3-way merge") {
        Outcome::Merged
    } else {
        Outcome::Applied
    }
}

/// The report as the command prints it, one line a patch.
pub fn render(target: &str, steps: &[Step]) -> String {
    let mut s = format!("rebase onto {target}:\n");
    for st in steps {
        s.push_str(&format!("  [{}] {}: {}\n", st.stack, st.patch, st.outcome));
    }
    let conflicts = steps
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Conflict(_)))
        .count();
    s.push_str(&format!(
        "  {} patch(es): {} conflict(s), {} by 3-way merge, {} already in the tree\n",
        steps.len(),
        conflicts,
        steps.iter().filter(|s| s.outcome == Outcome::Merged).count(),
        steps.iter().filter(|s| s.outcome.is_in_tree()).count()
    ));
    s
}

/// The rebase tree: a shared clone of `target` at its HEAD (the target is not touched). A
/// tree already cloned from the same target is reused (fetch, checkout, clean): the
/// kernel's 90k files are checked out once, not per run.
fn clone_target(layout: &Layout, target: &Path) -> Result<(PathBuf, String)> {
    let head = cmd::output(&mut cmd::git(target, ["rev-parse", "--verify", "HEAD^{commit}"]))
        .with_context(|| format!("--rebase-onto {}: not a git tree with a HEAD commit", target.display()))?
        .trim()
        .to_string();
    let tree = layout.repo.join("work/rebase-tree");
    let abs = fs::canonicalize(target)?;
    let stamp = tree.join(".git/khrs-target");
    let reuse = fs::read_to_string(&stamp).ok().as_deref() == Some(abs.to_string_lossy().as_ref());
    if reuse {
        cmd::output(&mut cmd::git(&tree, ["am", "--abort"])).ok();
        cmd::output(cmd::git(&tree, ["fetch", "-q"]).arg(&abs).arg(&head))?;
        cmd::output(&mut cmd::git(&tree, ["checkout", "-q", "-f", "--detach", &head]))?;
        crate::base::clean(&tree)?;
    } else {
        let _ = fs::remove_dir_all(&tree);
        cmd::output(
            std::process::Command::new("git")
                .args(["clone", "-q", "--shared", "--no-checkout"])
                .arg(&abs)
                .arg(&tree),
        )?;
        cmd::output(&mut cmd::git(&tree, ["checkout", "-q", "--detach", &head]))?;
        crate::base::exclude_build_dirs(&tree)?;
        fs::write(&stamp, abs.to_string_lossy().as_bytes())?;
    }
    crate::series::ensure_identity(&tree)?;
    Ok((tree, head))
}

/// How far back in the target's history a patch is looked for by its patch-id.
const HISTORY_DEPTH: usize = 2000;

/// `git patch-id --stable` of what `input` holds (a patch file, or `git log -p` output
/// read from `log`): (patch-id, commit id) pairs.
fn patch_ids(tree: &Path, input: std::process::Stdio) -> Result<Vec<(String, String)>> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(tree)
        .args(["patch-id", "--stable"])
        .stdin(input)
        .output()
        .context("running git patch-id")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect())
}

/// The patch-ids of the target's last [`HISTORY_DEPTH`] commits, so that a patch merged
/// as it was mailed is recognised even where re-applying it would conflict with what
/// came after it.
fn history_patch_ids(tree: &Path) -> Result<std::collections::HashMap<String, String>> {
    let log = std::process::Command::new("git")
        .arg("-C")
        .arg(tree)
        // Not a root commit: Debian's base is one, and its diff is the whole kernel.
        .args([
            "log",
            "--no-merges",
            "--min-parents=1",
            "-p",
            &format!("-{HISTORY_DEPTH}"),
            "HEAD",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running git log -p")?;
    let ids = patch_ids(tree, log.stdout.context("git log's output")?.into())?;
    Ok(ids.into_iter().collect())
}

/// Apply every stack of `m` onto `target` and report by patch. Returns the tree, the
/// target's HEAD and the steps; does not fail on a conflict (the caller decides).
pub fn apply_onto(layout: &Layout, m: &Mailing, target: &Path) -> Result<(PathBuf, String, Vec<Step>)> {
    let (tree, head) = clone_target(layout, target)?;
    let mut stacks: Vec<(&str, &crate::series::Stack)> = Vec::new();
    for b in &m.below {
        stacks.push((b.name(), &b.stack));
    }
    stacks.push((m.name(), &m.stack));
    let known = history_patch_ids(&tree)?;
    let mut steps = Vec::new();
    for (name, stack) in stacks {
        for p in stack.paths() {
            let id = patch_ids(&tree, fs::File::open(&p)?.into_parts().0.into())?
                .into_iter()
                .next()
                .map(|(id, _)| id);
            if let Some(commit) = id.and_then(|id| known.get(&id)) {
                steps.push(Step {
                    stack: name.to_string(),
                    patch: file_name(&p),
                    outcome: Outcome::InHistory(commit[..12.min(commit.len())].to_string()),
                });
                continue;
            }
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(&tree)
                .args(["am", "-3", "--keep-cr"])
                .arg(&p)
                .output()
                .with_context(|| format!("running git am -3 {}", p.display()))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let outcome = if out.status.success() {
                applied_outcome(&text)
            } else {
                let files = cmd::output(&mut cmd::git(&tree, ["diff", "--name-only", "--diff-filter=U"]))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>();
                cmd::output(&mut cmd::git(&tree, ["am", "--skip"])).ok();
                if files.is_empty() {
                    // Not a merge conflict: git am could not use the patch at all.
                    let why = text
                        .lines()
                        .rfind(|l| l.starts_with("error:"))
                        .unwrap_or("git am failed");
                    Outcome::Conflict(vec![format!("(no merge: {why})")])
                } else {
                    Outcome::Conflict(files)
                }
            };
            steps.push(Step {
                stack: name.to_string(),
                patch: file_name(&p),
                outcome,
            });
        }
    }
    cmd::output(&mut cmd::git(&tree, ["am", "--abort"])).ok();
    Ok((tree, head, steps))
}

/// `mail --rebase-onto`: apply, report, and if nothing conflicts re-run the checks.
pub fn run(layout: &Layout, m: &mut Mailing, target: &Path, build: bool) -> Result<()> {
    let (tree, head, steps) = apply_onto(layout, m, target)?;
    print!("{}", render(&format!("{} ({})", target.display(), &head[..12]), &steps));
    let conflicts: Vec<&Step> = steps
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Conflict(_)))
        .collect();
    if !conflicts.is_empty() {
        bail!(
            "the {} series does not apply to {}: {} patch(es) conflict ({}); resolve them in a tree of \
             your own (git am -3, edit, git am --continue), then bring the result back with \
             `git format-patch` into patches/",
            m.name(),
            target.display(),
            conflicts.len(),
            conflicts
                .iter()
                .map(|s| s.patch.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // The series' own commits on the target: the last ones, one per patch that made a commit.
    let own = steps
        .iter()
        .filter(|s| s.stack == m.name() && !s.outcome.is_in_tree())
        .count();
    let out = m.out_dir.join("rebased");
    let _ = fs::remove_dir_all(&out);
    cmd::output(
        cmd::git(&tree, ["format-patch", "-q", "-o"])
            .arg(&out)
            .arg(format!("-{own}")),
    )?;
    let mut patches: Vec<PathBuf> = fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    patches.sort();
    let dict = codespell_dictionary()?;
    let history = has_history(&tree);
    let mut problems = Vec::new();
    for p in &patches {
        if let Err(e) = checkpatch(&tree, p, &dict, false, history) {
            problems.push(format!("{}: {e:#}", file_name(p)));
        }
    }
    if !problems.is_empty() {
        bail!(
            "checkpatch on the rebased {} series ({} problem(s)):\n  {}",
            m.name(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    eprintln!(
        "  checkpatch --strict: clean on the {} rebased patch(es) in {}{}",
        patches.len(),
        out.display(),
        if history {
            " (commit references looked up in the target's history)"
        } else {
            ""
        }
    );
    if build {
        let commits: Vec<String> = cmd::output(&mut cmd::git(
            &tree,
            ["rev-list", "--reverse", &format!("-{own}"), "HEAD"],
        ))?
        .lines()
        .map(str::to_string)
        .collect();
        m.build_dir = Layout::build_dir(&tree, &format!("rebase-{}", m.name()));
        build_check(layout, m, &tree, &commits)?;
    } else {
        eprintln!("  build check: SKIPPED (--no-build-check)");
    }
    Ok(())
}

/// Where a patch removes a line of `file`: (1-based line number in the old file, the line).
pub fn first_removed_line(patch: &str, file: &str) -> Option<(usize, String)> {
    let mut in_file = false;
    let mut old = 0usize;
    for l in patch.lines() {
        if let Some(f) = l.strip_prefix("+++ b/") {
            in_file = f == file;
            continue;
        }
        if l.starts_with("--- ") || l.starts_with("diff --git") {
            continue;
        }
        if !in_file {
            continue;
        }
        if let Some(h) = l.strip_prefix("@@ -") {
            old = h.split([',', ' ']).next()?.parse().ok()?;
            continue;
        }
        if let Some(rest) = l.strip_prefix('-') {
            return Some((old, rest.to_string()));
        }
        if l.starts_with(' ') || l.is_empty() {
            old += 1;
        }
    }
    None
}

/// The self-test's targets: one repository without a work tree, a shared clone of the base
/// repository, whose HEAD is pointed at each target in turn. Its commits are made with git's
/// plumbing (a private index, `apply --cached`, `commit-tree`): nothing is checked out.
struct Targets {
    repo: PathBuf,
}

impl Targets {
    fn new(layout: &Layout) -> Result<Targets> {
        let repo = layout.repo.join("work/rebase-targets");
        let _ = fs::remove_dir_all(&repo);
        // The rebase tree shares this repository's objects (`clone --shared`): remade with it.
        let _ = fs::remove_dir_all(layout.repo.join("work/rebase-tree"));
        cmd::output(
            std::process::Command::new("git")
                .args(["clone", "-q", "--shared", "--no-checkout"])
                .arg(layout.base_repo())
                .arg(&repo),
        )?;
        Ok(Targets { repo })
    }

    fn git<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&self, args: I) -> std::process::Command {
        let mut c = cmd::git(&self.repo, args);
        c.env("GIT_INDEX_FILE", self.repo.join(".git/khrs-index"))
            .env("GIT_AUTHOR_NAME", "khugepaged-rs harness")
            .env("GIT_AUTHOR_EMAIL", "harness@localhost")
            .env("GIT_COMMITTER_NAME", "khugepaged-rs harness")
            .env("GIT_COMMITTER_EMAIL", "harness@localhost");
        c
    }

    /// Commit the private index on `parent` as `subject`; returns the commit.
    fn commit(&self, parent: &str, subject: &str) -> Result<String> {
        let tree = cmd::output(&mut self.git(["write-tree"]))?.trim().to_string();
        Ok(
            cmd::output(&mut self.git(["commit-tree", &tree, "-p", parent, "-m", subject]))?
                .trim()
                .to_string(),
        )
    }

    /// A branch `name` on the base: one commit per patch, each applied to the index.
    fn with_patches(&self, name: &str, patches: &[PathBuf]) -> Result<()> {
        cmd::output(&mut self.git(["read-tree", crate::layout::BASE_TAG]))?;
        let mut head = crate::layout::BASE_TAG.to_string();
        for p in patches {
            cmd::output(self.git(["apply", "--cached"]).arg(p))
                .with_context(|| format!("applying {} to the base", p.display()))?;
            head = self.commit(&head, &file_name(p))?;
        }
        self.point_head(name, &head)
    }

    /// A branch `name` on the base with `file` rewritten by `edit`.
    fn with_edit(&self, name: &str, file: &str, edit: impl FnOnce(&str) -> Result<String>) -> Result<()> {
        cmd::output(&mut self.git(["read-tree", crate::layout::BASE_TAG]))?;
        let old = cmd::output(&mut self.git(["show", &format!("{}:{file}", crate::layout::BASE_TAG)]))?;
        let new = edit(&old)?;
        let tmp = self.repo.join(".git/khrs-blob");
        fs::write(&tmp, new)?;
        let blob = cmd::output(self.git(["hash-object", "-w"]).arg(&tmp))?
            .trim()
            .to_string();
        cmd::output(&mut self.git(["update-index", "--cacheinfo", &format!("100644,{blob},{file}")]))?;
        let head = self.commit(crate::layout::BASE_TAG, &format!("{file}: changed under a fix"))?;
        self.point_head(name, &head)
    }

    fn point_head(&self, name: &str, commit: &str) -> Result<()> {
        cmd::output(&mut self.git(["update-ref", &format!("refs/heads/{name}"), commit]))?;
        cmd::output(&mut self.git(["symbolic-ref", "HEAD", &format!("refs/heads/{name}")]))?;
        Ok(())
    }
}

/// The check `cargo harness test` runs: the RFC onto two bases the project makes itself.
/// (1) The base with the fixes already applied (as after they are merged): every fix must be
/// recognised in the target's history (re-applying one can conflict with the next fix) and
/// every RFC patch must apply. (2) The base with one line
/// that a fix removes changed meanwhile: that fix must be reported as a conflict in its file.
pub fn self_test(layout: &Layout) -> Result<()> {
    let m = Mailing::new(layout, super::SeriesName::Rfc, 1)?;
    let fixes = m.below.first().context("the RFC has the fixes below it")?;
    let targets = Targets::new(layout)?;
    targets.with_patches("fixes-merged", &fixes.stack.paths())?;
    let (_, _, steps) = apply_onto(layout, &m, &targets.repo)?;
    print!("{}", render("the base with the fixes merged", &steps));
    for s in &steps {
        let want_ok = if s.stack == fixes.name() {
            matches!(s.outcome, Outcome::InHistory(_))
        } else {
            matches!(s.outcome, Outcome::Applied | Outcome::Merged)
        };
        if !want_ok {
            bail!(
                "rebase self-test: onto the base with the fixes merged, [{}] {} was {}",
                s.stack,
                s.patch,
                s.outcome
            );
        }
    }
    let file = "mm/khugepaged.c";
    let (patch, (line, text)) = fixes
        .stack
        .paths()
        .into_iter()
        .find_map(|p| {
            let t = fs::read_to_string(&p).ok()?;
            first_removed_line(&t, file).map(|r| (p, r))
        })
        .with_context(|| format!("rebase self-test: no fix removes a line of {file}"))?;
    targets.with_edit("line-changed", file, |src| {
        let mut lines: Vec<String> = src.lines().map(str::to_string).collect();
        let l = lines
            .get_mut(line - 1)
            .filter(|l| **l == text)
            .with_context(|| format!("rebase self-test: {file}:{line} is not {text:?}"))?;
        l.push_str(" /* changed under the fix */");
        Ok(lines.join("\n") + "\n")
    })?;
    let (_, _, steps) = apply_onto(layout, &m, &targets.repo)?;
    print!("{}", render("the base with a line of the fix changed", &steps));
    let name = file_name(&patch);
    match steps.iter().find(|s| s.patch == name).map(|s| &s.outcome) {
        Some(Outcome::Conflict(files)) if files.iter().any(|f| f == file) => {}
        other => bail!("rebase self-test: {name} should conflict in {file}, it was {other:?}"),
    }
    eprintln!("  rebase self-test: both bases reported as expected");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_removed_line_and_its_number() {
        let patch = "--- a/mm/other.c\n+++ b/mm/other.c\n@@ -1,2 +1,2 @@\n-x\n+y\n\
                     diff --git a/mm/khugepaged.c b/mm/khugepaged.c\n--- a/mm/khugepaged.c\n+++ b/mm/khugepaged.c\n\
                     @@ -1700,7 +1700,8 @@ static int f(void)\n \tint a;\n \n+\tint b;\n-\treturn 0;\n+\treturn b;\n";
        assert_eq!(
            super::first_removed_line(patch, "mm/khugepaged.c"),
            Some((1702, "\treturn 0;".to_string()))
        );
        assert_eq!(super::first_removed_line(patch, "mm/none.c"), None);
    }

    #[test]
    fn outcomes_from_what_git_am_printed() {
        assert_eq!(applied_outcome("Applying: mm: x\n"), Outcome::Applied);
        assert_eq!(
            applied_outcome(
                "Applying: mm: x\nUsing index info to reconstruct a base tree...\nM\tmm/khugepaged.c\n\
                 Falling back to patching base and 3-way merge...\nAuto-merging mm/khugepaged.c\n"
            ),
            Outcome::Merged
        );
        assert_eq!(
            applied_outcome(
                "Applying: mm: x\nUsing index info to reconstruct a base tree...\n\
                 Falling back to patching base and 3-way merge...\nNo changes -- Patch already applied.\n"
            ),
            Outcome::AlreadyApplied
        );
    }

    #[test]
    fn the_report_names_each_patch_and_counts() {
        let steps = vec![
            Step {
                stack: "fixes".into(),
                patch: "0001-a.patch".into(),
                outcome: Outcome::AlreadyApplied,
            },
            Step {
                stack: "fixes".into(),
                patch: "0002-b.patch".into(),
                outcome: Outcome::Conflict(vec!["mm/khugepaged.c".into()]),
            },
            Step {
                stack: "rfc".into(),
                patch: "0001-c.patch".into(),
                outcome: Outcome::Merged,
            },
        ];
        let r = render("/src/mm (0123456789ab)", &steps);
        assert!(
            r.contains("  [fixes] 0002-b.patch: CONFLICT in mm/khugepaged.c, skipped\n"),
            "{r}"
        );
        assert!(r.contains("  [rfc] 0001-c.patch: applied (3-way merge)\n"), "{r}");
        assert!(
            r.contains("3 patch(es): 1 conflict(s), 1 by 3-way merge, 1 already in the tree"),
            "{r}"
        );
    }
}
