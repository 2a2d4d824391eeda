//! The upstream base: Debian 7.3.4 is not an upstream commit; which files
//! the series touches differ from upstream v7.3.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cmd;
use crate::layout::{Layout, BASE_TAG};

pub fn upstream_file(layout: &Layout) -> PathBuf {
    layout.patches().join("upstream-base.json")
}

// ---------------------------------------------------------------------------
// The upstream base

/// patches/upstream-base.json: upstream v7.3 as far as it is known here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpstreamBase {
    /// Upstream tag the series is based on.
    pub tag: String,
    /// Its commit id in torvalds/linux; None while unknown.
    pub commit: Option<String>,
    /// Blob id at `tag` of each file the series touches, or "absent" for a
    /// file that does not exist there.
    pub blobs: BTreeMap<String, String>,
    /// How the ids were obtained.
    pub provenance: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Same blob in Debian 7.3.4 and upstream.
    Same,
    /// Both have the file, with different contents.
    Differs,
    /// Neither has it: the series adds it.
    New,
    /// Present in one only.
    OnlyOne,
    /// Upstream's blob is not recorded.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct BaseReport {
    pub tag: String,
    pub commit: Option<String>,
    /// Debian's own description of the base (the base commit's subject).
    pub debian: String,
    pub files: Vec<(String, Compare)>,
}

/// Compare Debian's blobs (None: no such file) with the recorded upstream ones.
pub fn compare(up: &UpstreamBase, debian: &[(String, Option<String>)]) -> Vec<(String, Compare)> {
    debian
        .iter()
        .map(|(path, d)| {
            let c = match (up.blobs.get(path).map(String::as_str), d) {
                (None, _) => Compare::Unknown,
                (Some("absent"), None) => Compare::New,
                (Some("absent"), Some(_)) => Compare::OnlyOne,
                (Some(_), None) => Compare::OnlyOne,
                (Some(u), Some(d)) if u == d => Compare::Same,
                (Some(_), Some(_)) => Compare::Differs,
            };
            (path.clone(), c)
        })
        .collect()
}

impl BaseReport {
    fn with(&self, c: Compare) -> Vec<&str> {
        self.files
            .iter()
            .filter(|(_, k)| *k == c)
            .map(|(p, _)| p.as_str())
            .collect()
    }
    /// The paragraph about the base for the cover letter.
    pub fn statement(&self) -> String {
        let mut lines = vec![format!(
            "Base: developed and tested on Debian's {} ({} sha256 {}), i.e. {} plus the \
             7.3.y stable updates and Debian's patches, not on an upstream commit.{}",
            self.debian.trim(),
            crate::base::TARBALL,
            crate::base::TARBALL_SHA256,
            self.tag,
            match &self.commit {
                Some(id) => format!(" The base-commit below is upstream {} ({id}).", self.tag),
                None => String::new(),
            }
        )];
        if self.commit.is_none() {
            lines.push(format!(
                "[[TODO: upstream {} commit id unknown offline: run `cargo harness mail \
                 --record-upstream <torvalds/linux clone>` to record it and the blob ids; until \
                 then the base-commit below is the local commit of Debian's tree, in no upstream \
                 repository.]]",
                self.tag
            ));
        }
        let groups = [
            (Compare::Same, format!("Identical in {} and Debian 7.3.4:", self.tag)),
            (
                Compare::Differs,
                format!(
                    "DIFFERENT between {} and Debian 7.3.4 (tested on Debian's version only):",
                    self.tag
                ),
            ),
            (
                Compare::OnlyOne,
                format!("Present in only one of {} and Debian 7.3.4:", self.tag),
            ),
            (
                Compare::Unknown,
                format!(
                    "[[TODO: not yet compared with upstream {} (no recorded blob id):",
                    self.tag
                ),
            ),
        ];
        for (kind, head) in groups {
            let files = self.with(kind);
            if !files.is_empty() {
                let close = if kind == Compare::Unknown { "]]" } else { "" };
                lines.push(format!("{head} {}.{close}", files.join(", ")));
            }
        }
        lines.iter().map(|l| wrap(l, 72)).collect::<Vec<_>>().join("\n")
    }
}

/// Greedy word wrap at `width` columns.
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut col = 0;
    for w in text.split_whitespace() {
        if col > 0 && col + 1 + w.len() > width {
            out.push('\n');
            col = 0;
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(w);
        col += w.len();
    }
    out
}

/// Debian's blob ids at the base for the files the series touches.
pub fn debian_blobs(tree: &Path) -> Result<Vec<(String, Option<String>)>> {
    let names = cmd::output(&mut cmd::git(
        tree,
        ["diff", "--name-only", "--no-renames", &format!("{BASE_TAG}..HEAD")],
    ))?;
    let paths: Vec<&str> = names.lines().filter(|l| !l.is_empty()).collect();
    let ls = cmd::output(cmd::git(tree, ["ls-tree", BASE_TAG, "--"]).args(&paths))?;
    let known: BTreeMap<&str, &str> = ls
        .lines()
        .filter_map(|l| {
            let (meta, path) = l.split_once('\t')?;
            Some((path, meta.split_whitespace().nth(2)?))
        })
        .collect();
    Ok(paths
        .iter()
        .map(|p| (p.to_string(), known.get(p).map(|b| b.to_string())))
        .collect())
}

pub fn load_upstream(layout: &Layout) -> Result<UpstreamBase> {
    let f = upstream_file(layout);
    let text = fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", f.display()))
}

/// Which files the series touches differ between Debian 7.3.4 and upstream.
pub fn base_report(layout: &Layout, tree: &Path) -> Result<BaseReport> {
    let up = load_upstream(layout)?;
    let debian = cmd::output(&mut cmd::git(tree, ["log", "-1", "--format=%s", BASE_TAG]))?;
    // "Linux 7.3.4 (Debian linux-source-7.3 7.3.4-1~bpo13+1)" -> the package.
    let debian = debian
        .trim()
        .rsplit_once("(Debian ")
        .map(|(_, p)| p.trim_end_matches(')').to_string())
        .unwrap_or_else(|| debian.trim().to_string());
    let files = compare(&up, &debian_blobs(tree)?);
    Ok(BaseReport {
        tag: up.tag.clone(),
        commit: up.commit.clone(),
        debian,
        files,
    })
}

pub fn print_base(b: &BaseReport) {
    eprintln!(
        "  base: Debian {} vs upstream {} ({})",
        b.debian,
        b.tag,
        b.commit
            .as_deref()
            .unwrap_or("commit id UNKNOWN: no base-commit trailer")
    );
    for (p, c) in &b.files {
        eprintln!("    {c:?}: {p}");
    }
}

/// Record upstream's commit and the touched files' blob ids from a local
/// clone of torvalds/linux that has the tag.
pub fn record_upstream(layout: &Layout, tree: &Path, upstream: &Path) -> Result<()> {
    let mut up = load_upstream(layout)?;
    let commit = cmd::output(&mut cmd::git(
        upstream,
        ["rev-parse", &format!("{}^{{commit}}", up.tag)],
    ))?
    .trim()
    .to_string();
    if let Some(old) = &up.commit {
        if *old != commit {
            bail!(
                "{} recorded {} as {old}, but {} has {commit}",
                upstream_file(layout).display(),
                up.tag,
                upstream.display()
            );
        }
    }
    let paths: Vec<String> = debian_blobs(tree)?.into_iter().map(|(p, _)| p).collect();
    let ls = cmd::output(cmd::git(upstream, ["ls-tree", &commit, "--"]).args(&paths))?;
    for p in &paths {
        let blob = ls
            .lines()
            .find_map(|l| {
                l.split_once('\t')
                    .filter(|(_, path)| path == p)
                    .and_then(|(m, _)| m.split_whitespace().nth(2))
            })
            .unwrap_or("absent");
        up.blobs.insert(p.clone(), blob.to_string());
    }
    up.commit = Some(commit.clone());
    up.provenance.push(format!(
        "{}: commit and {} blob id(s) recorded by `cargo harness mail --record-upstream {}`",
        unix_now(),
        paths.len(),
        upstream.display()
    ));
    fs::write(upstream_file(layout), serde_json::to_string_pretty(&up)? + "\n")?;
    eprintln!("recorded upstream {} = {commit} and {} blob id(s)", up.tag, paths.len());
    Ok(())
}

pub fn unix_now() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("unix time {s}")
}

/// `git patch-id --stable` of every commit of `range` in `tree`, oldest
/// first: what `format-patch --base` writes as `prerequisite-patch-id:`.
pub fn patch_ids(tree: &Path, range: &str) -> Result<Vec<String>> {
    let log = cmd::output(&mut cmd::git(tree, ["log", "--reverse", "-p", "--no-color", range]))?;
    let mut c = cmd::git(tree, ["patch-id", "--stable"]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().context("cannot run git patch-id")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("git patch-id has no stdin")?;
        stdin.write_all(log.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("git patch-id failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect())
}
