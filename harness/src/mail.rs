//! `cargo harness mail`: the mailed series as an RFC patch set for linux-mm.
//!
//! The mailed stack (`patches/series`, never `patches/local/`) is applied
//! with `git am` in its own clone of the base (`work/mail-tree`, not the
//! developer's work tree), rendered with `git format-patch --cover-letter`
//! into `work/mail/vN/`, the cover letter is filled in from
//! `patches/cover-letter.txt`, and then checked the way reviewers and bots
//! will: checkpatch (strict, codespell), Signed-off-by and subject style,
//! kernel-doc, a build of every patch in turn with Rust on (bisectability;
//! clippy on the last one; rustfmtcheck), and get_maintainer for the
//! recipients. `git send-email` runs as `--dry-run` unless `--send` and an
//! explicit `--smtp-server` are given.
//!
//! The base is Debian's 7.3.4, which is not an upstream commit: the
//! `base-commit:` trailer names upstream v7.3 from `patches/upstream-base.json`
//! and the cover letter says which touched files differ between the two.
//!
//! [`loopback_round_trip`] sends the series to an SMTP sink on 127.0.0.1,
//! applies what arrives onto a fresh clone of the base and checks that the
//! resulting tree is the mail tree's.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::base;
use crate::build;
use crate::cmd;
use crate::config;
use crate::layout::{Layout, BASE_TAG};
use crate::series;

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// Version of the series: `[RFC PATCH vN m/n]`, output in work/mail/vN.
    #[arg(short = 'v', long = "reroll-count", default_value_t = 1, value_name = "N")]
    pub version: u32,
    /// Really send the mails (the default is `git send-email --dry-run`).
    /// Needs --smtp-server.
    #[arg(long, requires = "smtp_server", conflicts_with = "check_only")]
    pub send: bool,
    /// SMTP server for --send (never taken from anywhere else).
    #[arg(long, value_name = "HOST")]
    pub smtp_server: Option<String>,
    /// SMTP port for --send.
    #[arg(long, value_name = "P")]
    pub smtp_port: Option<u16>,
    /// Generate and check only; do not run git send-email at all.
    #[arg(long)]
    pub check_only: bool,
    /// Skip the per-patch kernel builds (bisectability, clippy, rustfmtcheck).
    #[arg(long)]
    pub no_build_check: bool,
    /// Record the upstream base (commit and blob ids of the touched files)
    /// from a local clone of torvalds/linux into patches/upstream-base.json.
    #[arg(long, value_name = "GIT_DIR")]
    pub record_upstream: Option<PathBuf>,
    /// Only the loopback round trip (as in `cargo harness test`): send to an
    /// SMTP sink on 127.0.0.1, `git am` what arrives, compare the trees.
    #[arg(long, conflicts_with_all = ["send", "check_only"])]
    pub loopback: bool,
}

/// The list every mm patch goes to, and the mm tree's maintainer: To.
/// Everyone else get_maintainer names is Cc.
const TO_LIST: &str = "linux-mm@kvack.org";
const TO_AKPM: &str = "Andrew Morton <akpm@linux-foundation.org>";

/// People of the 2023 thread and of the 7.3 code the series builds on, Cc'd
/// whatever files the series touches (addresses as in 7.3.4's MAINTAINERS):
/// Jann Horn found the bug and proposed this locking; Hugh Dickins wrote
/// both fixes; Peter Xu reviewed them; Qi Zheng wrote
/// pte_offset_map_rw_nolock() and PT_RECLAIM, whose pmd_same() rechecks the
/// Rust path keeps.
pub const EXTRA_CC: &[&str] = &[
    "Jann Horn <jannh@google.com>",
    "Hugh Dickins <hughd@google.com>",
    "Peter Xu <peterx@redhat.com>",
    "Qi Zheng <qi.zheng@linux.dev>",
];

const SUBJECT_PREFIX: &str = "RFC PATCH";
/// Marks a place in the cover letter that a person must fill in (measured
/// numbers, test results): a real send refuses while any is left.
pub const PLACEHOLDER: &str = "[[";
/// Where the generated statement about the base goes in cover-letter.txt.
const BASE_TOKEN: &str = "{{base}}";
/// Debian's python (pyenv's python3, first on PATH, has neither aiosmtpd
/// nor codespell_lib).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn mail_tree(layout: &Layout) -> PathBuf {
    layout.repo.join("work/mail-tree")
}
fn out_dir(layout: &Layout, version: u32) -> PathBuf {
    layout.repo.join("work/mail").join(format!("v{version}"))
}
fn cover_letter_file(layout: &Layout) -> PathBuf {
    layout.patches().join("cover-letter.txt")
}
fn upstream_file(layout: &Layout) -> PathBuf {
    layout.patches().join("upstream-base.json")
}

pub fn run(layout: &Layout, o: &Opts) -> Result<()> {
    if o.send && o.smtp_server.as_deref().unwrap_or("").is_empty() {
        bail!("--send needs an explicit --smtp-server");
    }
    if o.loopback {
        return loopback_round_trip(layout);
    }
    let (tree, commits) = prepare_tree(layout)?;
    eprintln!(
        "mail tree {}: {} mailed patch(es) on {BASE_TAG}",
        tree.display(),
        commits.len()
    );
    if let Some(up) = &o.record_upstream {
        record_upstream(layout, &tree, up)?;
    }
    let base = base_report(layout, &tree)?;
    print_base(&base);
    let out = out_dir(layout, o.version);
    let files = format_series(layout, &tree, o.version, &out, &base)?;
    let (cover, patches) = files.split_first().expect("format-patch wrote a cover letter");
    eprintln!("format-patch: {} files in {}", files.len(), out.display());

    // The cheap checks first, all of them, so that one run lists every problem.
    let mut problems = Vec::new();
    for p in patches {
        let name = file_name(p);
        let text = fs::read_to_string(p)?;
        if let Err(e) = check_mail_patch(&text) {
            problems.push(format!("{name}: {e}"));
        }
    }
    let dict = codespell_dictionary()?;
    for p in patches {
        if let Err(e) = checkpatch(&tree, p, &dict) {
            problems.push(format!("{}: {e:#}", file_name(p)));
        }
    }
    match kernel_doc(&tree) {
        Ok(w) if w.is_empty() => eprintln!("  kernel-doc: clean on the touched C files"),
        Ok(w) => problems.push(format!(
            "kernel-doc warnings that the series adds:\n    {}",
            w.join("\n    ")
        )),
        Err(e) => problems.push(format!("kernel-doc: {e:#}")),
    }
    if !problems.is_empty() {
        bail!(
            "the series is not ready to mail ({} problem(s)):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    eprintln!(
        "  checkpatch --strict --codespell: 0 errors, 0 warnings, 0 checks on all {} patch(es)",
        patches.len()
    );

    if o.no_build_check {
        eprintln!("  build check: SKIPPED (--no-build-check); do not send without it");
    } else {
        build_check(layout, &tree, &commits)?;
    }

    let gm = cmd::output(
        Command::new("perl")
            .current_dir(&tree)
            .arg("scripts/get_maintainer.pl")
            .args(["--no-git", "--no-git-fallback", "--rolestats"])
            .args(patches),
    )?;
    fs::write(out.join("get_maintainer.txt"), &gm)?;
    let entries = parse_get_maintainer(&gm);
    let recips = recipients(&entries, EXTRA_CC);
    print_recipients(&recips, &entries);

    let cover_text = fs::read_to_string(cover)?;
    let left = placeholders(&cover_text);
    if !left.is_empty() {
        eprintln!(
            "warning: the cover letter still has {} place(s) to fill in ({PLACEHOLDER}...]]):\n  {}",
            left.len(),
            left.join("\n  ")
        );
    }
    if o.check_only {
        eprintln!(
            "--check-only: not running git send-email; the series is in {}",
            out.display()
        );
        return Ok(());
    }
    if o.send {
        if !left.is_empty() {
            bail!("refusing to send: fill in the marked places in patches/cover-letter.txt first");
        }
        if base.commit.is_none() {
            bail!("refusing to send: the upstream base commit is unknown (see patches/upstream-base.json)");
        }
        if o.no_build_check {
            bail!("refusing to send without the build check (drop --no-build-check)");
        }
    }
    send_email(layout, &files, &recips, o)
}

// ---------------------------------------------------------------------------
// The mail tree and format-patch

/// A clone of the base with exactly the mailed stack applied. Returns the
/// tree and the commit ids of the series, oldest first.
pub fn prepare_tree(layout: &Layout) -> Result<(PathBuf, Vec<String>)> {
    let stack = series::mailed(layout)?;
    if stack.patches.is_empty() {
        bail!(
            "{}/series lists no patches: nothing to mail",
            layout.patches().display()
        );
    }
    let tree = mail_tree(layout);
    if !tree.join(".git").exists() {
        let pb = cmd::stage_bar("mail tree");
        pb.set_message(format!("cloning {} (first time only)", layout.base_repo().display()));
        base::clone_to(layout, &tree, "mail")?;
        pb.finish_and_clear();
    } else {
        cmd::output(&mut cmd::git(&tree, ["fetch", "-q", "--tags", "origin"]))?;
    }
    if cmd::output(&mut cmd::git(&tree, ["config", "user.email"])).is_err() {
        cmd::output(&mut cmd::git(&tree, ["config", "user.name", "khugepaged-rs harness"]))?;
        cmd::output(&mut cmd::git(&tree, ["config", "user.email", "harness@localhost"]))?;
    }
    cmd::output(&mut cmd::git(&tree, ["am", "--abort"])).ok();
    cmd::output(&mut cmd::git(&tree, ["checkout", "-q", "-f", "-B", "mail", BASE_TAG]))?;
    cmd::output(&mut cmd::git(&tree, ["clean", "-q", "-fdx"]))?;
    for p in stack.paths() {
        if let Err(e) = cmd::output(cmd::git(&tree, ["am", "-q"]).arg(&p)) {
            cmd::output(&mut cmd::git(&tree, ["am", "--abort"])).ok();
            bail!("patch {} does not apply to {BASE_TAG}:\n{e:#}", p.display());
        }
    }
    let log = cmd::output(&mut cmd::git(
        &tree,
        ["log", "--reverse", "--format=%H %s", &format!("{BASE_TAG}..HEAD")],
    ))?;
    let mut commits = Vec::new();
    for line in log.lines() {
        let (id, subject) = line.split_once(' ').unwrap_or((line, ""));
        if subject.starts_with(series::LOCAL_PREFIX) {
            bail!("patches/series holds a local-only patch \"{subject}\": move it to patches/local/");
        }
        commits.push(id.to_string());
    }
    Ok((tree, commits))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `git format-patch --cover-letter -v N` into `out` (old files removed),
/// with the cover letter filled in. Returns the files, cover letter first.
fn format_series(layout: &Layout, tree: &Path, version: u32, out: &Path, base: &BaseReport) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(out)?;
    for e in fs::read_dir(out)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "patch") {
            fs::remove_file(p)?;
        }
    }
    let listed = cmd::output(
        cmd::git(tree, ["-c", "core.abbrev=12", "format-patch", "--cover-letter"])
            .arg(format!("--reroll-count={version}"))
            .arg(format!("--subject-prefix={SUBJECT_PREFIX}"))
            .arg("--output-directory")
            .arg(out)
            .arg(format!("{BASE_TAG}..HEAD")),
    )?;
    let files: Vec<PathBuf> = listed.lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect();
    let cover = files.first().context("format-patch wrote nothing")?;
    let template = fs::read_to_string(cover_letter_file(layout))
        .with_context(|| format!("cannot read {}", cover_letter_file(layout).display()))?;
    let generated = fs::read_to_string(cover)?;
    fs::write(cover, fill_cover(&generated, &template, base)?)?;
    Ok(files)
}

/// Fill format-patch's cover letter: subject and blurb from the template
/// (first line, blank line, body; `{{base}}` becomes the base statement,
/// or it is appended), and the `base-commit:` trailer before the signature.
pub fn fill_cover(generated: &str, template: &str, base: &BaseReport) -> Result<String> {
    let (subject, body) = template.split_once('\n').unwrap_or((template, ""));
    let subject = subject.trim();
    if subject.is_empty() {
        bail!("cover-letter.txt: the first line (the subject) is empty");
    }
    let body = body.trim_matches('\n');
    let statement = base.statement();
    let body = if body.contains(BASE_TOKEN) {
        body.replace(BASE_TOKEN, &statement)
    } else {
        format!("{body}\n\n{statement}")
    };
    for marker in ["*** SUBJECT HERE ***", "*** BLURB HERE ***"] {
        if !generated.contains(marker) {
            bail!("format-patch's cover letter has no `{marker}`");
        }
    }
    let mut text = generated
        .replacen("*** SUBJECT HERE ***", subject, 1)
        .replacen("*** BLURB HERE ***", &body, 1);
    if let Some(id) = &base.commit {
        let trailer = format!("base-commit: {id}\n");
        match text.rfind("\n-- \n") {
            Some(i) => text.insert_str(i + 1, &trailer),
            None => text.push_str(&format!("\n{trailer}")),
        }
    }
    Ok(text)
}

/// The `[[...]]` places left in a text, one line each.
pub fn placeholders(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(PLACEHOLDER))
        .map(|l| l.trim().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Patch mails: headers, subject style, Signed-off-by

/// Headers of a mail (up to the first blank line), continuation lines
/// unfolded; the mbox `From <id> <date>` line is skipped.
pub fn headers(mail: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in mail.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with("From ") && out.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.to_string(), v.trim().to_string()));
        }
    }
    out
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The subject without `[RFC PATCH v2 3/9]`-style tags.
pub fn strip_tags(subject: &str) -> &str {
    let mut s = subject.trim();
    while s.starts_with('[') {
        match s.find(']') {
            Some(i) => s = s[i + 1..].trim_start(),
            None => break,
        }
    }
    s
}

/// The `[.. m/n]` numbers of a subject.
pub fn patch_number(subject: &str) -> Option<(u32, u32)> {
    let tag = subject.trim().strip_prefix('[')?.split(']').next()?;
    let last = tag.split_whitespace().last()?;
    let (m, n) = last.split_once('/')?;
    Some((m.parse().ok()?, n.parse().ok()?))
}

/// Files a patch touches (new names, and old names of renames/deletions).
pub fn touched_files(patch: &str) -> Vec<String> {
    let mut v = BTreeSet::new();
    for line in patch.lines() {
        if let Some(rest) = line.strip_prefix("diff --git a/") {
            if let Some((a, b)) = rest.split_once(" b/") {
                v.insert(a.to_string());
                v.insert(b.to_string());
            }
        }
    }
    v.into_iter().collect()
}

/// Subsystem prefixes the series may use, each with the paths a patch
/// under it must touch (at least one): the first component of the subject.
const PREFIXES: &[(&str, &[&str])] = &[
    ("mm", &["mm/", "include/linux/", "include/asm-generic/", "arch/"]),
    ("rust", &["rust/"]),
    ("selftests/mm", &["tools/testing/selftests/mm/"]),
    ("Documentation/mm", &["Documentation/mm/"]),
    ("docs", &["Documentation/"]),
    ("MAINTAINERS", &["MAINTAINERS"]),
];

/// The subject (tags stripped) in the style of the subsystem it touches:
/// `mm/khugepaged: fix ...`, `rust: mm: add ...`, `selftests/mm: ...`,
/// `Documentation/mm: ...`, `MAINTAINERS: ...`.
pub fn check_subject(subject: &str, files: &[String]) -> std::result::Result<(), String> {
    let s = strip_tags(subject);
    if !s.is_ascii() {
        return Err(format!("subject \"{s}\" is not plain ASCII"));
    }
    if s.starts_with(series::LOCAL_PREFIX) {
        return Err(format!("\"{s}\" is a local-only patch and must not be mailed"));
    }
    // Leading `prefix: ` components: words without spaces.
    let mut comps = Vec::new();
    let mut rest = s;
    while let Some((c, r)) = rest.split_once(": ") {
        if c.is_empty() || c.contains(' ') || c.len() > 32 {
            break;
        }
        comps.push(c);
        rest = r;
    }
    let Some(first) = comps.first() else {
        return Err(format!(
            "subject \"{s}\" has no subsystem prefix (e.g. `mm/khugepaged: `, `rust: `)"
        ));
    };
    let summary = rest.trim();
    // `mm/khugepaged` style: `mm/<file>` needs that file; the rest needs its area.
    let ok_area = if let Some(unit) = first.strip_prefix("mm/") {
        files
            .iter()
            .any(|f| f.starts_with(&format!("mm/{unit}")) || f.starts_with(&format!("include/linux/{unit}")))
    } else if let Some((_, paths)) = PREFIXES.iter().find(|(p, _)| p == first) {
        files.iter().any(|f| paths.iter().any(|p| f.starts_with(p)))
    } else {
        let known: Vec<&str> = PREFIXES.iter().map(|(p, _)| *p).collect();
        return Err(format!(
            "subject prefix `{first}: ` is not one of mm/<unit>, {}",
            known.join(", ")
        ));
    };
    if !ok_area {
        return Err(format!(
            "subject prefix `{first}: ` does not match the files the patch touches ({})",
            files.join(", ")
        ));
    }
    if summary.is_empty() {
        return Err(format!("subject \"{s}\" has no summary after the prefix"));
    }
    if summary.ends_with('.') {
        return Err(format!("subject \"{s}\" ends with a period"));
    }
    let word = summary.split_whitespace().next().unwrap_or_default();
    let identifier = word
        .chars()
        .skip(1)
        .any(|c| c.is_ascii_uppercase() || c == '_' || c == '(' || c.is_ascii_digit());
    if word.starts_with(|c: char| c.is_ascii_uppercase()) && !identifier {
        return Err(format!(
            "subject \"{s}\": the summary starts with a capital (\"{word}\"); mm style is lower case"
        ));
    }
    if s.len() > 75 {
        return Err(format!(
            "subject \"{s}\" is {} characters long; keep it within 75",
            s.len()
        ));
    }
    Ok(())
}

/// The address inside `Name <addr>` (or the whole thing).
pub fn email_of(addr: &str) -> String {
    match (addr.rfind('<'), addr.rfind('>')) {
        (Some(a), Some(b)) if a < b => addr[a + 1..b].trim().to_ascii_lowercase(),
        _ => addr.trim().to_ascii_lowercase(),
    }
}

/// One mailed patch: a subject in the subsystem's style, a commit message,
/// and a Signed-off-by from its author.
pub fn check_mail_patch(text: &str) -> std::result::Result<(), String> {
    let h = headers(text);
    let subject = header(&h, "Subject").ok_or("no Subject header")?;
    let from = header(&h, "From").ok_or("no From header")?;
    let files = touched_files(text);
    if files.is_empty() {
        return Err("the patch changes no file".into());
    }
    check_subject(subject, &files)?;
    let body_start = text.find("\n\n").ok_or("no body")? + 2;
    let body = &text[body_start..];
    let msg = body.split("\n---\n").next().unwrap_or(body);
    // An in-body `From:` line (author differs from sender) wins.
    let author = msg
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("From: "))
        .unwrap_or(from);
    let sobs: Vec<String> = msg
        .lines()
        .filter_map(|l| l.strip_prefix("Signed-off-by:"))
        .map(email_of)
        .collect();
    if sobs.is_empty() {
        return Err("no Signed-off-by".into());
    }
    if !sobs.contains(&email_of(author)) {
        return Err(format!("no Signed-off-by from the author {author}"));
    }
    if msg.lines().filter(|l| !l.trim().is_empty() && !l.contains(':')).count() == 0 {
        return Err("no commit message besides the trailers".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// checkpatch and kernel-doc

/// The codespell dictionary checkpatch should use. Debian's codespell puts
/// it under python3's dist-packages, not at checkpatch's default
/// /usr/share/codespell/dictionary.txt, and checkpatch's own fallback asks
/// the `python3` first on PATH (pyenv's here, without codespell_lib).
fn codespell_dictionary() -> Result<PathBuf> {
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

fn checkpatch(tree: &Path, patch: &Path, dict: &Path) -> Result<()> {
    // checkpatch runs scripts/spdxcheck.py with the first python3 on PATH; Debian's has the
    // modules it needs (python3-ply, python3-git), a pyenv or venv one may not.
    let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
    let out = Command::new("perl")
        .current_dir(tree)
        .env("PATH", path)
        .arg("scripts/checkpatch.pl")
        .args(["--strict", "--codespell", "--codespellfile"])
        .arg(dict)
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
fn normalize_kdoc(out: &str) -> BTreeSet<String> {
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

fn kdoc_run(tree: &Path, file: &Path) -> Result<String> {
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
/// the warnings that the base version of the file did not have.
fn kernel_doc(tree: &Path) -> Result<Vec<String>> {
    let names = cmd::output(&mut cmd::git(
        tree,
        ["diff", "--name-only", "--diff-filter=AMR", &format!("{BASE_TAG}..HEAD")],
    ))?;
    let scratch = tree.join(".git/khrs-kdoc-base");
    let mut new = Vec::new();
    for f in names.lines().filter(|f| f.ends_with(".c") || f.ends_with(".h")) {
        let after = normalize_kdoc(&kdoc_run(tree, Path::new(f))?);
        let before = match cmd::output(&mut cmd::git(tree, ["show", &format!("{BASE_TAG}:{f}")])) {
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

// ---------------------------------------------------------------------------
// Build every patch in turn

fn build_check(layout: &Layout, tree: &Path, commits: &[String]) -> Result<()> {
    let bdir = layout.build_dir("mail-bisect");
    fs::create_dir_all(&bdir)?;
    let default_cfg = layout.build_dir("default").join(".config");
    let mine = bdir.join(".config");
    // The configuration of the whole series, copied back before every patch's olddefconfig:
    // olddefconfig drops the symbols a patch does not know yet, and they must come back on
    // with the patch that adds them.
    let full = bdir.join("series.config.full");
    let series_frag = fs::read_to_string(layout.configs().join("series.config"))?;
    let n = commits.len();
    let res = (|| -> Result<()> {
        cmd::output(&mut cmd::git(tree, ["checkout", "-q", "--detach", &commits[n - 1]]))?;
        if default_cfg.is_file() {
            fs::copy(&default_cfg, &full)?;
        } else {
            config::configure(layout, tree, &bdir, config::Variant::Default, true)?;
            fs::copy(&mine, &full)?;
        }
        for (i, c) in commits.iter().enumerate() {
            cmd::output(&mut cmd::git(tree, ["checkout", "-q", "--detach", c]))?;
            let subject = cmd::output(&mut cmd::git(tree, ["log", "-1", "--format=%s", c]))?
                .trim()
                .to_string();
            if fs::read(&full)? != fs::read(&mine).unwrap_or_default() {
                fs::copy(&full, &mine)?;
            }
            cmd::output(build::make(layout, tree, &bdir).arg("olddefconfig"))?;
            let text = fs::read_to_string(&mine)?;
            let cfg = config::parse(&text);
            if cfg.get("CONFIG_RUST").cloned().flatten().as_deref() != Some("y") {
                bail!(
                    "CONFIG_RUST is off in {} after patch {}/{n} \"{subject}\"",
                    mine.display(),
                    i + 1
                );
            }
            let on: Vec<String> = config::parse(&series_frag)
                .into_keys()
                .filter(|k| cfg.get(k).cloned().flatten().is_some())
                .collect();
            eprintln!(
                "  patch {}/{n}: series options on: {}",
                i + 1,
                if on.is_empty() { "none".into() } else { on.join(" ") }
            );
            if i + 1 == n {
                let bad = config::mismatches(&[("configs/series.config".into(), series_frag.clone())], &text);
                if !bad.is_empty() {
                    bail!(
                        "the series' options are not all on at the last patch:\n  {}",
                        bad.join("\n  ")
                    );
                }
            }
            let last = i + 1 == n;
            let mut make = build::make(layout, tree, &bdir);
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
        cmd::logged(
            "rustfmtcheck",
            build::make(layout, tree, &bdir).arg("rustfmtcheck"),
            &bdir.join("rustfmtcheck.log"),
            None,
        )
        .context("`make rustfmtcheck` fails on the series")?;
        let log = bdir.join("rustdoc.log");
        cmd::logged("rustdoc", build::make(layout, tree, &bdir).arg("rustdoc"), &log, None)
            .context("`make rustdoc` fails on the series")?;
        no_warnings(&log, "make rustdoc on the series")
    })();
    cmd::output(&mut cmd::git(tree, ["checkout", "-q", "mail"]))?;
    res?;
    eprintln!(
        "  build check: all {} patch(es) build in turn with Rust on and without a warning; clippy, rustfmtcheck and rustdoc clean",
        commits.len()
    );
    Ok(())
}

/// Fails if the build log `log` has a compiler, clippy or rustdoc warning.
fn no_warnings(log: &Path, what: &str) -> Result<()> {
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

// ---------------------------------------------------------------------------
// Recipients

/// One line of `get_maintainer.pl` output: the address as printed and the
/// role in parentheses (empty with --no-rolestats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub addr: String,
    pub role: String,
}

pub fn parse_get_maintainer(out: &str) -> Vec<Entry> {
    let mut v = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // The role is the last balanced `( ... )` group.
        let (addr, role) = if line.ends_with(')') {
            let mut depth = 0;
            let mut start = None;
            for (i, ch) in line.char_indices().rev() {
                match ch {
                    ')' => depth += 1,
                    '(' => {
                        depth -= 1;
                        if depth == 0 {
                            start = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            match start {
                Some(i) if line[..i].contains('@') => (line[..i].trim(), &line[i + 1..line.len() - 1]),
                _ => (line, ""),
            }
        } else {
            (line, "")
        };
        if !addr.contains('@') {
            continue;
        }
        v.push(Entry {
            addr: addr.to_string(),
            role: role.to_string(),
        });
    }
    v
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recipients {
    pub to: Vec<String>,
    pub cc: Vec<String>,
}

/// To: linux-mm and Andrew Morton; Cc: everyone else get_maintainer names
/// (maintainers, reviewers, lists) and `extra`; each address once.
pub fn recipients(entries: &[Entry], extra: &[&str]) -> Recipients {
    let mut seen = BTreeSet::new();
    let mut r = Recipients::default();
    let akpm = entries
        .iter()
        .find(|e| email_of(&e.addr) == email_of(TO_AKPM))
        .map(|e| e.addr.clone())
        .unwrap_or_else(|| TO_AKPM.to_string());
    for a in [TO_LIST.to_string(), akpm] {
        seen.insert(email_of(&a));
        r.to.push(a);
    }
    for a in entries.iter().map(|e| e.addr.as_str()).chain(extra.iter().copied()) {
        if seen.insert(email_of(a)) {
            r.cc.push(a.to_string());
        }
    }
    r
}

fn print_recipients(r: &Recipients, entries: &[Entry]) {
    let role = |a: &str| {
        entries
            .iter()
            .find(|e| email_of(&e.addr) == email_of(a))
            .map(|e| e.role.clone())
            .unwrap_or_else(|| "2023 thread / 7.3 code, see mail::EXTRA_CC".into())
    };
    println!("To ({}):", r.to.len());
    for a in &r.to {
        println!("  {a}  [{}]", role(a));
    }
    println!("Cc ({}):", r.cc.len());
    for a in &r.cc {
        println!("  {a}  [{}]", role(a));
    }
}

// ---------------------------------------------------------------------------
// Sending

/// The developer's identity for `From:` (the repository's git config).
fn sender(layout: &Layout) -> Result<String> {
    let ident = cmd::output(&mut cmd::git(&layout.repo, ["var", "GIT_AUTHOR_IDENT"]))?;
    let ident = ident.trim();
    // "Name <email> 1700000000 +0000": drop the date.
    let end = ident.rfind('>').context("git var GIT_AUTHOR_IDENT has no email")?;
    Ok(ident[..=end].to_string())
}

fn send_email(layout: &Layout, files: &[PathBuf], r: &Recipients, o: &Opts) -> Result<()> {
    let mut c = Command::new("git");
    c.current_dir(mail_tree(layout))
        .args([
            "send-email",
            "--confirm=never",
            "--no-annotate",
            "--no-format-patch",
            "--suppress-cc=self",
            "--8bit-encoding=UTF-8",
        ])
        .arg(format!("--from={}", sender(layout)?));
    for a in &r.to {
        c.arg(format!("--to={a}"));
    }
    for a in &r.cc {
        c.arg(format!("--cc={a}"));
    }
    if o.send {
        let server = o.smtp_server.as_deref().expect("checked by run()");
        c.arg(format!("--smtp-server={server}"));
        if let Some(p) = o.smtp_port {
            c.arg(format!("--smtp-server-port={p}"));
        }
    } else {
        c.arg("--dry-run");
    }
    c.args(files);
    let out = cmd::output(&mut c)?;
    let log = out_dir(layout, o.version).join(if o.send {
        "send-email.log"
    } else {
        "send-email-dry-run.log"
    });
    fs::write(&log, &out)?;
    for l in out
        .lines()
        .filter(|l| l.starts_with("Subject: ") || l.starts_with("Dry-OK") || l.starts_with("OK."))
    {
        println!("  {l}");
    }
    if o.send {
        println!(
            "sent {} mail(s) through {}; log {}",
            files.len(),
            o.smtp_server.as_deref().unwrap_or(""),
            log.display()
        );
    } else {
        println!(
            "dry run: {} mail(s) to {} + {} Cc; full log {}\nto really send: cargo harness mail -v {} --send --smtp-server HOST [--smtp-port P]",
            files.len(),
            r.to.len(),
            r.cc.len(),
            log.display(),
            o.version
        );
    }
    Ok(())
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
            "Base: developed and tested on Debian's {}, i.e. {} plus the \
             7.3.y stable updates and Debian's patches, not on an upstream commit.{}",
            self.debian.trim(),
            self.tag,
            match &self.commit {
                Some(id) => format!(" The base-commit below is upstream {} ({id}).", self.tag),
                None => String::new(),
            }
        )];
        if self.commit.is_none() {
            lines.push(format!(
                "[[TODO: upstream {} commit id unknown offline: run `cargo harness mail \
                 --record-upstream <torvalds/linux clone>` to record it and the blob ids.]]",
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
fn debian_blobs(tree: &Path) -> Result<Vec<(String, Option<String>)>> {
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

fn print_base(b: &BaseReport) {
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
fn record_upstream(layout: &Layout, tree: &Path, upstream: &Path) -> Result<()> {
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

fn unix_now() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("unix time {s}")
}

// ---------------------------------------------------------------------------
// Loopback round trip

/// An SMTP sink on 127.0.0.1 (Debian's aiosmtpd, Maildir handler), killed
/// when dropped.
struct Sink {
    child: Child,
}

impl Sink {
    fn start(port: u16, maildir: &Path, log: &Path) -> Result<Sink> {
        let f = fs::File::create(log)?;
        let child = Command::new(SYSTEM_PYTHON)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .context("cannot start the SMTP sink (apt-get install python3-aiosmtpd)")?;
        let mut sink = Sink { child };
        let start = Instant::now();
        loop {
            if let Some(st) = sink.child.try_wait()? {
                bail!("the SMTP sink exited ({st}):\n{}", cmd::tail(log, 20));
            }
            if std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
            {
                return Ok(sink);
            }
            if start.elapsed() > Duration::from_secs(15) {
                bail!(
                    "the SMTP sink did not listen on 127.0.0.1:{port} within 15 s:\n{}",
                    cmd::tail(log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Identity for the loopback's git commands, which run without the user's
/// git config.
const LOOPBACK_IDENT: &[(&str, &str)] = &[
    ("GIT_AUTHOR_NAME", "khugepaged-rs loopback"),
    ("GIT_AUTHOR_EMAIL", "sender@loopback.invalid"),
    ("GIT_COMMITTER_NAME", "khugepaged-rs loopback"),
    ("GIT_COMMITTER_EMAIL", "sender@loopback.invalid"),
];

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The messages of a Maildir, as (number m of `[.. m/n]`, total n, path),
/// sorted by m.
pub fn maildir_messages(maildir: &Path) -> Result<Vec<(u32, u32, PathBuf)>> {
    let mut v = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(rd) = fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for e in rd {
            let p = e?.path();
            let text = fs::read_to_string(&p)?;
            let h = headers(&text);
            let subject = header(&h, "Subject").with_context(|| format!("{} has no Subject", p.display()))?;
            let (m, n) =
                patch_number(subject).with_context(|| format!("{}: no [m/n] in \"{subject}\"", p.display()))?;
            v.push((m, n, p));
        }
    }
    v.sort();
    Ok(v)
}

/// Send the mailed series through `git send-email` to an SMTP sink on
/// 127.0.0.1 only, `git am` what arrives onto a fresh clone of the base,
/// and check that the tree (and every commit message) equals the mail
/// tree's. The sink is killed afterwards, whatever happens.
pub fn loopback_round_trip(layout: &Layout) -> Result<()> {
    let (tree, commits) = prepare_tree(layout)?;
    let scratch = layout.cache.join("mail/loopback");
    let _ = fs::remove_dir_all(&scratch);
    let out = scratch.join("patches");
    let base = base_report(layout, &tree)?;
    let files = format_series(layout, &tree, 1, &out, &base)?;
    if files.len() != commits.len() + 1 {
        bail!("format-patch wrote {} files for {} commits", files.len(), commits.len());
    }
    let maildir = scratch.join("maildir");
    let port = free_port()?;
    let sink = Sink::start(port, &maildir, &scratch.join("smtp-sink.log"))?;
    eprintln!("  loopback: SMTP sink on 127.0.0.1:{port} (pid {})", sink.child.id());
    // Hermetic: no global or system git config (no sendemail.* from the
    // user), an explicit loopback server, no auth, no TLS, only a local
    // recipient, no Cc of anyone.
    let mut send = Command::new("git");
    send.current_dir(&tree)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .envs(LOOPBACK_IDENT.iter().copied())
        .args([
            "send-email",
            "--smtp-server=127.0.0.1",
            &format!("--smtp-server-port={port}"),
        ])
        .args([
            "--no-smtp-auth",
            "--smtp-encryption=none",
            "--confirm=never",
            "--suppress-cc=all",
            "--no-annotate",
        ])
        .args([
            "--no-format-patch",
            "--8bit-encoding=UTF-8",
            "--from=khugepaged-rs loopback <sender@loopback.invalid>",
        ])
        .args(["--to=khugepaged-rs loopback <mailbox@loopback.invalid>"])
        .args(&files)
        .stdin(Stdio::null());
    let res = send.output().context("cannot run git send-email")?;
    let sent = format!(
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    fs::write(scratch.join("send-email.log"), &sent)?;
    if !res.status.success() {
        bail!(
            "git send-email to the loopback SMTP sink failed ({}):\n{sent}",
            res.status
        );
    }
    let start = Instant::now();
    let msgs = loop {
        let m = maildir_messages(&maildir)?;
        if m.len() >= files.len() || start.elapsed() > Duration::from_secs(10) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(sink);
    let n = commits.len() as u32;
    let numbers: Vec<u32> = msgs.iter().map(|(m, _, _)| *m).collect();
    if numbers != (0..=n).collect::<Vec<_>>() || msgs.iter().any(|(_, t, _)| *t != n) {
        bail!(
            "the sink received {} message(s) numbered {numbers:?}; expected 0..={n}\nsend-email said:\n{sent}",
            msgs.len()
        );
    }
    // The cover letter arrived with the subject from cover-letter.txt.
    let cover_text = fs::read_to_string(&msgs[0].2)?;
    let want = fs::read_to_string(cover_letter_file(layout))?;
    let want = want.lines().next().unwrap_or("").trim();
    let got = header(&headers(&cover_text), "Subject").unwrap_or("").to_string();
    if strip_tags(&got) != want {
        bail!("the cover letter arrived with subject \"{got}\", expected \"{want}\"");
    }
    // Apply onto a fresh clone at the base tag.
    let clone = scratch.join("linux");
    let pb = cmd::stage_bar("loopback");
    pb.set_message("fresh clone of the base");
    base::clone_to(layout, &clone, "loopback")?;
    pb.finish_and_clear();
    for (m, _, p) in &msgs[1..] {
        let r = cmd::output(
            cmd::git(&clone, ["am", "-q"])
                .envs(LOOPBACK_IDENT.iter().copied())
                .arg(p),
        );
        if let Err(e) = r {
            bail!(
                "received patch {m}/{n} ({}) does not apply with git am:\n{e:#}",
                p.display()
            );
        }
    }
    let tree_id =
        |dir: &Path| cmd::output(&mut cmd::git(dir, ["rev-parse", "HEAD^{tree}"])).map(|s| s.trim().to_string());
    let (want_tree, got_tree) = (tree_id(&tree)?, tree_id(&clone)?);
    if want_tree != got_tree {
        let diff = cmd::output(&mut cmd::git(&clone, ["diff", "--stat", &want_tree, &got_tree])).unwrap_or_default();
        bail!("round trip changed the tree: mail tree {want_tree}, received {got_tree}\n{diff}");
    }
    let log = |dir: &Path| {
        cmd::output(&mut cmd::git(
            dir,
            [
                "log",
                "--reverse",
                "--format=%an <%ae>%n%B%x00",
                &format!("{BASE_TAG}..HEAD"),
            ],
        ))
    };
    if log(&tree)? != log(&clone)? {
        bail!("round trip changed an author or a commit message (tree {got_tree} is identical)");
    }
    let _ = fs::remove_dir_all(&clone);
    eprintln!(
        "  loopback: {} mail(s) through 127.0.0.1:{port}, {n} patch(es) applied on {BASE_TAG}: tree {got_tree} identical, messages identical",
        msgs.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GM_SELFTEST: &str = include_str!("../tests/fixtures/get_maintainer-0001-selftest.txt");
    const GM_SERIES: &str = include_str!("../tests/fixtures/get_maintainer-series-files.txt");

    #[test]
    fn get_maintainer_output_becomes_to_and_cc() {
        let e = parse_get_maintainer(GM_SELFTEST);
        assert_eq!(e.len(), 21);
        assert_eq!(e[0].addr, "Andrew Morton <akpm@linux-foundation.org>");
        assert_eq!(e[0].role, "maintainer:MEMORY MANAGEMENT - THP (TRANSPARENT HUGE PAGE)");
        assert_eq!(e[4].addr, "\"Liam R. Howlett\" <liam@infradead.org>");
        let lkml = e.iter().find(|x| x.addr == "linux-kernel@vger.kernel.org").unwrap();
        assert_eq!(lkml.role, "open list");
        let r = recipients(&e, EXTRA_CC);
        assert_eq!(
            r.to,
            vec![
                TO_LIST.to_string(),
                "Andrew Morton <akpm@linux-foundation.org>".to_string()
            ]
        );
        assert!(r.cc.contains(&"Shuah Khan <shuah@kernel.org>".to_string()));
        assert!(r.cc.contains(&"linux-kselftest@vger.kernel.org".to_string()));
        assert!(r.cc.contains(&"Jann Horn <jannh@google.com>".to_string()));
        assert!(!r
            .cc
            .iter()
            .any(|a| email_of(a) == "linux-mm@kvack.org" || email_of(a) == "akpm@linux-foundation.org"));
        // 21 entries - 2 in To + 4 extra.
        assert_eq!(r.cc.len(), 19 + EXTRA_CC.len());

        // The series' files: mm-Rust, Rust, userfaultfd-free, docs; the
        // rust-for-linux list; no address twice (Lorenzo is in two sections,
        // Peter Xu both in get_maintainer's output and in EXTRA_CC).
        let e = parse_get_maintainer(GM_SERIES);
        let r = recipients(&e, &["Peter Xu <peterx@redhat.com>", "Jann Horn <jannh@google.com>"]);
        for want in [
            "Alice Ryhl <aliceryhl@google.com>",
            "Miguel Ojeda <ojeda@kernel.org>",
            "rust-for-linux@vger.kernel.org",
            "\"Onur Özkan\" <work@onurozkan.dev>",
            "Lorenzo Stoakes <ljs@kernel.org>",
        ] {
            assert!(r.cc.iter().any(|a| a == want), "{want} missing from {:?}", r.cc);
        }
        let emails: Vec<String> = r.to.iter().chain(&r.cc).map(|a| email_of(a)).collect();
        let unique: BTreeSet<&String> = emails.iter().collect();
        assert_eq!(unique.len(), emails.len(), "{emails:?}");
        assert!(e.iter().any(|x| x.role == "maintainer:MEMORY MANAGEMENT - RUST"));
        // Without roles, the same addresses.
        let bare: String = GM_SELFTEST
            .lines()
            .map(|l| format!("{}\n", parse_get_maintainer(l)[0].addr))
            .collect();
        assert_eq!(
            parse_get_maintainer(&bare).iter().map(|x| &x.addr).collect::<Vec<_>>(),
            parse_get_maintainer(GM_SELFTEST)
                .iter()
                .map(|x| &x.addr)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn subject_style() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = |s: &str, files: &[&str]| check_subject(s, &f(files)).unwrap_or_else(|e| panic!("{s}: {e}"));
        let bad = |s: &str, files: &[&str], why: &str| {
            let e = check_subject(s, &f(files)).expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
        };
        ok(
            "[RFC PATCH v1 1/9] selftests/mm: khugepaged: keep khugepaged off the VMA between steps",
            &["tools/testing/selftests/mm/khugepaged.c"],
        );
        ok(
            "mm/khugepaged: collapse PTE-mapped THPs in Rust",
            &["mm/khugepaged.c", "mm/khugepaged_rs.rs"],
        );
        ok(
            "rust: mm: add page table entry accessors",
            &["rust/kernel/mm/pgtable.rs"],
        );
        ok(
            "rust: helpers: add pte and pmd helpers",
            &["rust/helpers/mm.c", "rust/helpers/helpers.c"],
        );
        ok("mm: Kconfig: add KHUGEPAGED_RUST", &["mm/Kconfig"]);
        ok(
            "Documentation/mm: describe the Rust collapse path",
            &["Documentation/mm/transhuge.rst"],
        );
        ok("MAINTAINERS: add the Rust khugepaged files", &["MAINTAINERS"]);
        ok(
            "selftests/mm: add UFFDIO_COPY vs MADV_COLLAPSE race test",
            &["tools/testing/selftests/mm/Makefile"],
        );
        bad("LOCAL: debugfs switch", &["mm/khugepaged.c"], "local-only");
        bad("add a Rust khugepaged", &["mm/khugepaged.c"], "no subsystem prefix");
        bad("mm/khugepaged: fix the thing.", &["mm/khugepaged.c"], "period");
        bad("mm/khugepaged: Fix the thing", &["mm/khugepaged.c"], "capital");
        bad(
            "mm/khugepaged: fix selftest",
            &["tools/testing/selftests/mm/khugepaged.c", "mm/memory.c"],
            "does not match",
        );
        bad("rust: mm: add things", &["mm/khugepaged.c"], "does not match");
        bad("khugepaged: add things", &["mm/khugepaged.c"], "is not one of");
        bad(&format!("mm: {}", "x".repeat(80)), &["mm/memory.c"], "75");
    }

    #[test]
    fn mail_checks_on_the_first_real_patch() {
        let text = include_str!("../tests/fixtures/mail-patch-0001-selftest.patch");
        check_mail_patch(text).unwrap();
        let h = headers(text);
        assert_eq!(
            header(&h, "From").unwrap(),
            "Seed ad2b398b maintainers <maintainers@users.noreply.r-seed-ad2b398b.example>"
        );
        assert_eq!(touched_files(text), vec!["tools/testing/selftests/mm/khugepaged.c"]);
        let unsigned = text.replace("Signed-off-by:", "Signed-off-byx:");
        assert!(check_mail_patch(&unsigned).unwrap_err().contains("Signed-off-by"));
        let other = text.replace(
            "Signed-off-by: Seed ad2b398b maintainers <maintainers@",
            "Signed-off-by: Someone Else <someone@",
        );
        assert!(check_mail_patch(&other).unwrap_err().contains("from the author"));
    }

    #[test]
    fn small_parsers() {
        assert_eq!(patch_number("[RFC PATCH v2 03/12] mm: x"), Some((3, 12)));
        assert_eq!(patch_number("[RFC PATCH v1 0/1] cover"), Some((0, 1)));
        assert_eq!(patch_number("mm: x"), None);
        assert_eq!(strip_tags("[RFC PATCH v2 3/9] mm: x"), "mm: x");
        assert_eq!(
            checkpatch_totals("foo\ntotal: 0 errors, 2 warnings, 1 checks, 22 lines checked\n"),
            Some((0, 2, 1))
        );
        assert_eq!(checkpatch_totals("nothing"), None);
        let w = normalize_kdoc("mm/x.c:12: warning: Function parameter 'a' not described\n");
        assert!(w.contains("warning: Function parameter 'a' not described"));
    }

    fn report(commit: Option<&str>) -> BaseReport {
        let up = UpstreamBase {
            tag: "v7.3".into(),
            commit: commit.map(String::from),
            blobs: [("a.c", "1111"), ("b.c", "2222"), ("new.rs", "absent")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            provenance: vec![],
        };
        let debian = vec![
            ("a.c".to_string(), Some("1111".to_string())),
            ("b.c".to_string(), Some("9999".to_string())),
            ("new.rs".to_string(), None),
            ("c.c".to_string(), Some("3333".to_string())),
        ];
        let files = compare(&up, &debian);
        assert_eq!(
            files.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
            vec![Compare::Same, Compare::Differs, Compare::New, Compare::Unknown]
        );
        BaseReport {
            tag: "v7.3".into(),
            commit: commit.map(String::from),
            debian: "linux-source-7.3 7.3.4-1~bpo13+1".into(),
            files,
        }
    }

    #[test]
    fn cover_letter_is_filled_and_gets_the_base_commit() {
        let generated = "From 0 Mon Sep 17 00:00:00 2001\nSubject: [RFC PATCH v1 0/1] *** SUBJECT HERE ***\n\n\
                         *** BLURB HERE ***\n\nA (1):\n  mm: x\n\n mm/x.c | 1 +\n\n-- \n2.47.3\n\n";
        let template = "mm/khugepaged: the subject\n\nWhy.\n\n{{base}}\n\nThanks.\n";
        let id = "0123456789abcdef0123456789abcdef01234567";
        let text = fill_cover(generated, template, &report(Some(id))).unwrap();
        assert!(text.contains("Subject: [RFC PATCH v1 0/1] mm/khugepaged: the subject\n"));
        assert!(text.contains("\n\nWhy.\n\nBase: developed and tested on Debian's"));
        assert!(
            text.contains("DIFFERENT between v7.3 and Debian 7.3.4 (tested on Debian's version\nonly): b.c."),
            "{text}"
        );
        assert!(text.contains("Identical in v7.3 and Debian 7.3.4: a.c."));
        assert!(
            text.contains(&format!(" mm/x.c | 1 +\n\nbase-commit: {id}\n-- \n2.47.3")),
            "{text}"
        );
        assert_eq!(placeholders(&text).len(), 1, "c.c is not compared yet");
        // Unknown commit: no trailer, a marked place instead.
        let text = fill_cover(generated, template, &report(None)).unwrap();
        assert!(!text.contains("base-commit:"));
        assert!(placeholders(&text).iter().any(|l| l.contains("commit id unknown")));
        assert!(fill_cover("no markers", template, &report(None)).is_err());
    }

    #[test]
    fn the_repository_cover_letter_and_base_data_parse() {
        let layout = Layout::discover();
        let up = load_upstream(&layout).unwrap();
        assert_eq!(up.tag, "v7.3");
        if let Some(c) = &up.commit {
            assert!(c.len() == 40 && c.chars().all(|ch| ch.is_ascii_hexdigit()), "{c}");
        }
        let cover = fs::read_to_string(cover_letter_file(&layout)).unwrap();
        let subject = cover.lines().next().unwrap();
        assert!(subject.starts_with("mm/khugepaged: "), "{subject}");
        assert!(cover.lines().nth(1).unwrap().is_empty());
        assert!(cover.contains(BASE_TOKEN));
        for link in [
            "https://lore.kernel.org/r/CAG48ez0FxiRC4d3VTu_a9h=rg5FW-kYD5Rg5xo_RDBM0LTTqZQ@mail.gmail.com",
            "https://lore.kernel.org/r/f2dc6d6b-c516-932-1598-a58e2afffe9a@google.com",
            "zap_empty_pte_table()",
            "zap_pte_table_if_empty()",
        ] {
            assert!(cover.contains(link), "{link}");
        }
    }
}
