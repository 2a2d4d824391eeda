//! The checks a mailed patch must pass: subject style, trailers, checkpatch,
//! kernel-doc, and a build of every patch in turn.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::identity::Identity;
use super::recipients::email_of;
use super::SYSTEM_PYTHON;
use crate::build;
use crate::cmd;
use crate::config;
use crate::layout::Layout;
use crate::series;

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
pub const PREFIXES: &[(&str, &[&str])] = &[
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

/// The commit message of a patch mail or format-patch file: the body up to
/// the `---` line, without an in-body `From:` line.
pub fn commit_message(text: &str) -> std::result::Result<&str, String> {
    let body_start = text.find("\n\n").ok_or("no body")? + 2;
    let body = &text[body_start..];
    let msg = body.split("\n---\n").next().unwrap_or(body);
    Ok(match msg.strip_prefix("From: ") {
        Some(rest) => rest.split_once("\n\n").map_or("", |(_, m)| m),
        None => msg,
    })
}

/// The last paragraph of a commit message if it is a trailer block
/// (`Key: value` lines), else empty.
pub fn trailer_block(msg: &str) -> Vec<&str> {
    let msg = msg.trim_end();
    let last = msg.rsplit("\n\n").next().unwrap_or(msg);
    let lines: Vec<&str> = last.lines().collect();
    let is_trailer = |l: &str| {
        l.split_once(": ")
            .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    if !lines.is_empty() && lines.iter().all(|l| is_trailer(l)) {
        lines
    } else {
        Vec::new()
    }
}

fn signed_off_lines(msg: &str) -> Vec<&str> {
    msg.lines()
        .filter(|l| l.trim_start().to_ascii_lowercase().starts_with("signed-off-by:"))
        .collect()
}

/// A stored patch (patches/**/*.patch) carries no Signed-off-by: an AI
/// agent must not add one (coding-assistants.rst), and the human submitter
/// adds theirs when mailing, with `--signoff`.
pub fn check_stored_patch(text: &str) -> std::result::Result<(), String> {
    let msg = commit_message(text)?;
    let sobs = signed_off_lines(msg);
    if !sobs.is_empty() {
        return Err(format!(
            "the stored patch carries \"{}\": stored patches must have no Signed-off-by (only the human \
             submitter signs off, with `cargo harness mail --signoff`; Documentation/process/coding-assistants.rst). \
             Drop it in work/linux (git commit --amend) and `cargo harness export`",
            sobs[0].trim()
        ));
    }
    Ok(())
}

/// What the trailers of a generated mail must be.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// `--signoff`: the last trailer is this sender's Signed-off-by.
    pub signoff: Option<Identity>,
    /// The trailer right before it (or the last one without --signoff).
    pub assisted_by: Option<String>,
}

/// One mailed patch: a subject in the subsystem's style, a commit message,
/// and the trailers `expect` asks for: with --signoff the last trailer block
/// ends with `Signed-off-by: <sender>` (after `Assisted-by:` if any), and the
/// header From: is the sender; without, no Signed-off-by at all.
pub fn check_mail_patch(text: &str, expect: &Expect) -> std::result::Result<(), String> {
    let h = headers(text);
    let subject = header(&h, "Subject").ok_or("no Subject header")?;
    let from = header(&h, "From").ok_or("no From header")?;
    let files = touched_files(text);
    if files.is_empty() {
        return Err("the patch changes no file".into());
    }
    check_subject(subject, &files)?;
    let msg = commit_message(text)?;
    if msg.lines().filter(|l| !l.trim().is_empty() && !l.contains(':')).count() == 0 {
        return Err("no commit message besides the trailers".into());
    }
    let trailers = trailer_block(msg);
    let sobs = signed_off_lines(msg);
    let mut want: Vec<String> = Vec::new();
    if let Some(a) = &expect.assisted_by {
        want.push(format!("Assisted-by: {a}"));
    }
    match &expect.signoff {
        Some(sender) => {
            if email_of(from) != sender.email.to_ascii_lowercase() {
                return Err(format!("From: is {from}, not the sender {sender}"));
            }
            want.push(format!("Signed-off-by: {sender}"));
            if sobs.len() != 1 {
                return Err(format!(
                    "{} Signed-off-by line(s); expected only the sender's ({})",
                    sobs.len(),
                    sobs.join(" | ")
                ));
            }
        }
        None => {
            if let Some(l) = sobs.first() {
                return Err(format!(
                    "\"{}\" without --signoff: nobody but the sender signs off, and only with --signoff",
                    l.trim()
                ));
            }
        }
    }
    if !want.is_empty() {
        let tail: Vec<&str> = trailers.iter().rev().take(want.len()).rev().copied().collect();
        if tail != want.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(format!(
                "the last trailer block ends with [{}], expected [{}]",
                tail.join(" | "),
                want.join(" | ")
            ));
        }
    }
    Ok(())
}

/// Where the disclosure of tool assistance goes in a cover letter
/// (Documentation/process/generated-content.rst): a `[[disclosure: ...]]`
/// place to fill in, or the written paragraph, starting `Disclosure:`.
pub const DISCLOSURE_PLACEHOLDER: &str = "[[disclosure:";

/// The cover letter: a disclosure paragraph (or its place), and for a
/// series on top of another, the statement that it applies on top of that
/// series (its subject, "on top of") and one `prerequisite-patch-id:` per
/// patch below, after a `base-commit:`.
pub fn check_cover(text: &str, prereq: Option<&super::Prerequisite>) -> Vec<String> {
    let mut problems = Vec::new();
    let disclosure = text.contains(DISCLOSURE_PLACEHOLDER)
        || text.lines().any(|l| {
            let l = l.trim_start().to_ascii_lowercase();
            l.starts_with("disclosure:") || l == "disclosure"
        });
    if !disclosure {
        problems.push(format!(
            "the cover letter has no disclosure of tool assistance: keep a `{DISCLOSURE_PLACEHOLDER} ...]]` \
             place, or write the paragraph starting with `Disclosure:` (generated-content.rst)"
        ));
    }
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let flat_text = flat(text);
    if !flat_text.contains("base-commit: ") {
        problems.push("no base-commit: line (format-patch --base)".into());
    }
    let ids = text
        .lines()
        .filter(|l| l.starts_with("prerequisite-patch-id: "))
        .count();
    match prereq {
        Some(p) => {
            if !flat_text.contains(&flat(&p.subject)) || !flat_text.contains("on top of") {
                problems.push(format!(
                    "the cover letter does not say that the series applies on top of \"{}\": \
                     name that subject and say \"on top of\"",
                    p.subject
                ));
            }
            if ids != p.patches {
                problems.push(format!(
                    "{ids} prerequisite-patch-id line(s), expected one per patch below ({})",
                    p.patches
                ));
            }
        }
        None if ids > 0 => problems.push(format!("{ids} prerequisite-patch-id line(s), but nothing is below")),
        None => {}
    }
    problems
}

// ---------------------------------------------------------------------------
// Never to a public list: patches/local/ and patches/private/

/// One file that must not go into a mail.
#[derive(Debug, Clone)]
pub struct ForbiddenFile {
    pub path: PathBuf,
    /// patches/local/ (never to a list; the report may carry its reproducer)
    /// or patches/private/ (never in any mail).
    pub local: bool,
    /// Its lines that identify it: the added lines of a patch, every line of
    /// another file; only those long enough not to occur by chance.
    pub lines: Vec<String>,
}

/// What the mail command refuses to put into a mail: every file of
/// patches/local/ (the LOCAL: stack: debugfs switch, instrumentation, the
/// reproducer) and everything under patches/private/.
#[derive(Debug, Clone, Default)]
pub struct Forbidden {
    pub dirs: Vec<(PathBuf, bool)>,
    pub files: Vec<ForbiddenFile>,
}

/// Lines shorter than this (trimmed) occur anywhere and identify nothing.
const SIGNIFICANT: usize = 16;

fn significant(line: &str) -> Option<String> {
    let t = line.trim();
    (t.len() >= SIGNIFICANT && t.chars().any(|c| c.is_alphanumeric())).then(|| t.to_string())
}

impl ForbiddenFile {
    pub fn new(path: PathBuf, local: bool, text: &str) -> ForbiddenFile {
        let is_patch = text.contains("\ndiff --git a/");
        let lines = if is_patch {
            text.lines()
                .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
                .filter_map(|l| significant(&l[1..]))
                .collect()
        } else {
            text.lines().filter_map(significant).collect()
        };
        ForbiddenFile { path, local, lines }
    }
}

impl Forbidden {
    pub fn load(layout: &Layout) -> Result<Forbidden> {
        Forbidden::from_dirs(&layout.patches().join("local"), &layout.patches().join("private"))
    }

    /// Every file under `local` (refused for lists) and `private` (refused
    /// for any mail); a directory that does not exist holds nothing.
    pub fn from_dirs(local: &Path, private: &Path) -> Result<Forbidden> {
        let mut f = Forbidden::default();
        for (dir, local) in [(local.to_path_buf(), true), (private.to_path_buf(), false)] {
            f.dirs.push((dir.clone(), local));
            let mut stack = vec![dir];
            while let Some(d) = stack.pop() {
                let Ok(rd) = fs::read_dir(&d) else { continue };
                for e in rd {
                    let p = e?.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Ok(text) = fs::read_to_string(&p) {
                        f.files.push(ForbiddenFile::new(p, local, &text));
                    } else {
                        // Not text: it can only be recognised by its path.
                        f.files.push(ForbiddenFile {
                            path: p,
                            local,
                            lines: Vec::new(),
                        });
                    }
                }
            }
        }
        Ok(f)
    }

    /// A patch file about to be applied for a mail must not come from
    /// patches/local/ or patches/private/ (a `../local/x.patch` in a series).
    pub fn check_path(&self, p: &Path) -> std::result::Result<(), String> {
        let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let cp = canon(p);
        for (dir, local) in &self.dirs {
            if cp.starts_with(canon(dir)) {
                return Err(format!(
                    "refusing to mail {}: it is under {} ({})",
                    p.display(),
                    dir.display(),
                    if *local {
                        "local-only patches never go to a list"
                    } else {
                        "private files never go into a mail"
                    }
                ));
            }
        }
        Ok(())
    }

    /// A generated mail must not be a `LOCAL:` patch nor carry the content
    /// of a forbidden file. `public`: a mail for a list (the local stack is
    /// refused too); otherwise only patches/private/ is.
    pub fn check_mail(&self, text: &str, public: bool) -> std::result::Result<(), String> {
        if public {
            for (i, l) in text.lines().enumerate() {
                if let Some(s) = l.strip_prefix("Subject:") {
                    if strip_tags(s).starts_with(series::LOCAL_PREFIX) {
                        return Err(format!(
                            "line {}: a {} patch (\"{}\"): local-only patches never go to a list",
                            i + 1,
                            series::LOCAL_PREFIX,
                            s.trim()
                        ));
                    }
                }
            }
        }
        let mut have: BTreeSet<&str> = BTreeSet::new();
        for l in text.lines() {
            have.insert(l.trim());
            if let Some(rest) = l.strip_prefix(['+', '-', ' ', '>']) {
                have.insert(rest.trim());
            }
        }
        for f in &self.files {
            if (f.local && !public) || f.lines.is_empty() {
                continue;
            }
            if f.lines.iter().all(|l| have.contains(l.as_str())) {
                return Err(format!(
                    "it carries the content of {} ({} identifying line(s), e.g. \"{}\"): {}",
                    f.path.display(),
                    f.lines.len(),
                    f.lines[0],
                    if f.local {
                        "local-only patches never go to a list"
                    } else {
                        "private files never go into a mail"
                    }
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// checkpatch and kernel-doc

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

// ---------------------------------------------------------------------------
// Build every patch in turn

/// Build every patch of the series `m` in turn, with the stacks below it
/// applied (`commits` are the series' commits in the mail tree `tree`), in
/// the series' own build directory (`work/mail-tree/build-mail-<series>`): vmlinux with Rust
/// on and without a warning; for the RFC the series' options must be on at
/// the last patch, which is built with CLIPPY=1, then rustfmtcheck and
/// rustdoc.
/// The machine the per-patch builds are for: the x86-64 test kernel's configuration.
const MACHINE: &crate::arch::Machine = &crate::arch::X86_64_PC;

fn mail_make(layout: &Layout, tree: &Path, bdir: &Path) -> std::process::Command {
    let mut c = build::make(layout, tree, bdir);
    c.args(MACHINE.make_vars());
    c
}

pub fn build_check(layout: &Layout, m: &super::Mailing, tree: &Path, commits: &[String]) -> Result<()> {
    let bdir = m.build_dir.clone();
    fs::create_dir_all(&bdir)?;
    let mine = bdir.join(".config");
    // The configuration of the whole series, copied back before every patch's olddefconfig:
    // olddefconfig drops the symbols a patch does not know yet, and they must come back on
    // with the patch that adds them.
    let full = bdir.join("series.config.full");
    let series_frag = fs::read_to_string(layout.configs().join("series.config"))?;
    let n = commits.len();
    let res = (|| -> Result<()> {
        cmd::output(&mut cmd::git(tree, ["checkout", "-q", "--detach", &commits[n - 1]]))?;
        config::configure(layout, tree, &bdir, MACHINE, config::Variant::Default, m.rust())?;
        fs::copy(&mine, &full)?;
        for (i, c) in commits.iter().enumerate() {
            cmd::output(&mut cmd::git(tree, ["checkout", "-q", "--detach", c]))?;
            let subject = cmd::output(&mut cmd::git(tree, ["log", "-1", "--format=%s", c]))?
                .trim()
                .to_string();
            if fs::read(&full)? != fs::read(&mine).unwrap_or_default() {
                fs::copy(&full, &mine)?;
            }
            cmd::output(mail_make(layout, tree, &bdir).arg("olddefconfig"))?;
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
            if i + 1 == n && m.rust() {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    const FIXTURE: &str = include_str!("../../tests/fixtures/mail-patch-0001-selftest.patch");
    const SEED_SOB: &str =
        "\nSigned-off-by: Seed ad2b398b maintainers <maintainers@users.noreply.r-seed-ad2b398b.example>\n";

    #[test]
    fn a_stored_patch_has_no_signed_off_by() {
        // The fixture is a patch as stored before the rule: with a Signed-off-by.
        let e = check_stored_patch(FIXTURE).unwrap_err();
        assert!(
            e.contains("Signed-off-by: Seed ad2b398b") && e.contains("no Signed-off-by"),
            "{e}"
        );
        assert!(FIXTURE.contains(SEED_SOB));
        let stored = FIXTURE.replace(SEED_SOB, "\n");
        check_stored_patch(&stored).unwrap();
        // Lower case is a Signed-off-by all the same.
        assert!(
            check_stored_patch(&stored.replace("\n\ndiff --git", "\n\nsigned-off-by: X <x@y.org>\n\ndiff --git"))
                .is_err()
        );
        let h = headers(&stored);
        assert_eq!(
            header(&h, "From").unwrap(),
            "Seed ad2b398b maintainers <maintainers@users.noreply.r-seed-ad2b398b.example>"
        );
        assert_eq!(touched_files(&stored), vec!["tools/testing/selftests/mm/khugepaged.c"]);
        // Without --signoff a mail of it is fine as it is, and a mail with a
        // Signed-off-by is not.
        check_mail_patch(&stored, &Expect::default()).unwrap();
        assert!(check_mail_patch(FIXTURE, &Expect::default())
            .unwrap_err()
            .contains("without --signoff"));
    }

    /// The fixture as format-patch writes it with --signoff --from Jane.
    fn signed(trailers: &str, from: &str) -> String {
        FIXTURE
            .replace(
                SEED_SOB,
                &format!("\n{trailers}---\n tools/testing/selftests/mm/khugepaged.c | 8 ++++++++\n"),
            )
            .replace(
                "From: Seed ad2b398b maintainers\n <maintainers@users.noreply.r-seed-ad2b398b.example>",
                &format!("From: {from}"),
            )
    }

    #[test]
    fn with_signoff_the_mail_ends_with_the_senders_signed_off_by() {
        let jane = Identity::parse("Jane Developer <jane@kernel-dev.org>").unwrap();
        let expect = Expect {
            signoff: Some(jane.clone()),
            assisted_by: Some("LLM sparse".into()),
        };
        let good = signed(
            "Assisted-by: LLM sparse\nSigned-off-by: Jane Developer <jane@kernel-dev.org>\n",
            "Jane Developer <jane@kernel-dev.org>",
        );
        check_mail_patch(&good, &expect).unwrap();
        assert_eq!(
            trailer_block(commit_message(&good).unwrap()),
            vec![
                "Assisted-by: LLM sparse",
                "Signed-off-by: Jane Developer <jane@kernel-dev.org>"
            ]
        );
        let bad = |text: String, why: &str| {
            let e = check_mail_patch(&text, &expect).unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        // Order: Assisted-by first, Signed-off-by last.
        bad(
            signed(
                "Signed-off-by: Jane Developer <jane@kernel-dev.org>\nAssisted-by: LLM sparse\n",
                "Jane Developer <jane@kernel-dev.org>",
            ),
            "ends with",
        );
        bad(
            signed("Assisted-by: LLM sparse\n", "Jane Developer <jane@kernel-dev.org>"),
            "0 Signed-off-by",
        );
        bad(
            signed(
                "Assisted-by: LLM sparse\nSigned-off-by: Jane Developer <jane@kernel-dev.org>\n",
                "Seed ad2b398b maintainers <maintainers@users.noreply.r-seed-ad2b398b.example>",
            ),
            "not the sender",
        );
        bad(
            signed(
                "Assisted-by: LLM sparse\nSigned-off-by: Someone Else <someone@kernel-dev.org>\n",
                "Jane Developer <jane@kernel-dev.org>",
            ),
            "ends with",
        );
        bad(
            signed(
                "Signed-off-by: Someone Else <someone@kernel-dev.org>\nAssisted-by: LLM sparse\nSigned-off-by: Jane Developer <jane@kernel-dev.org>\n",
                "Jane Developer <jane@kernel-dev.org>",
            ),
            "2 Signed-off-by",
        );
        // Without an Assisted-by, the Signed-off-by alone.
        let plain = Expect {
            signoff: Some(jane),
            assisted_by: None,
        };
        check_mail_patch(
            &signed(
                "Signed-off-by: Jane Developer <jane@kernel-dev.org>\n",
                "Jane Developer <jane@kernel-dev.org>",
            ),
            &plain,
        )
        .unwrap();
    }

    fn forbidden_in(dir: &Path) -> Forbidden {
        let (local, private) = (dir.join("patches/local"), dir.join("patches/private"));
        fs::create_dir_all(&local).unwrap();
        fs::create_dir_all(private.join("notes")).unwrap();
        fs::write(
            local.join("0001-LOCAL-reproducer.patch"),
            "From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] LOCAL: selftests/mm: race MADV_DONTNEED\n\nNot for a list.\n---\n\
             diff --git a/t.c b/t.c\n--- a/t.c\n+++ b/t.c\n@@ -1 +1,4 @@\n a\n+\tcase RACE_DONTNEED_PMD:\n\
             +\t\tif (!madvise(r->area, r->pmd_size, MADV_DONTNEED))\n+\t\t\tgoto installed;\n+}\n",
        )
        .unwrap();
        fs::write(
            private.join("notes/exploit.txt"),
            "the window is 40 instructions wide\nloop MADV_DONTNEED on CPU 1 forever\n",
        )
        .unwrap();
        fs::create_dir_all(dir.join("patches/fixes")).unwrap();
        fs::write(dir.join("patches/fixes/0001-mm-fix.patch"), "x").unwrap();
        Forbidden::from_dirs(&local, &private).unwrap()
    }

    #[test]
    fn local_and_private_files_never_go_into_a_mail() {
        let dir = tempfile::tempdir().unwrap();
        let f = forbidden_in(dir.path());
        assert_eq!(f.files.len(), 2);
        // Paths: a series that reaches into local/ or private/ is refused.
        let p = dir.path().join("patches");
        f.check_path(&p.join("fixes/0001-mm-fix.patch")).unwrap();
        let e = f
            .check_path(&p.join("fixes/../local/0001-LOCAL-reproducer.patch"))
            .unwrap_err();
        assert!(e.contains("local-only patches never go to a list"), "{e}");
        let e = f.check_path(&p.join("private/notes/exploit.txt")).unwrap_err();
        assert!(e.contains("private files never go into a mail"), "{e}");
        // A LOCAL: subject, in the header or in the body.
        let mail = "From: x\nSubject: [PATCH 3/4] LOCAL: mm/khugepaged: debugfs switch\n\nbody\n";
        assert!(f.check_mail(mail, true).unwrap_err().contains("local-only"));
        let mail = "Subject: [PATCH 0/4] mm: x\n\nSee:\nSubject: [PATCH] LOCAL: x\n";
        assert!(f.check_mail(mail, true).is_err());
        // The local patch's content, re-rendered (other headers, context).
        let mail = "Subject: [PATCH 2/4] selftests/mm: more races\n\nWhy.\n---\n\
                    diff --git a/t.c b/t.c\n--- a/t.c\n+++ b/t.c\n@@ -10 +10,4 @@\n b\n+\tcase RACE_DONTNEED_PMD:\n\
                    +\t\tif (!madvise(r->area, r->pmd_size, MADV_DONTNEED))\n+\t\t\tgoto installed;\n";
        let e = f.check_mail(mail, true).unwrap_err();
        assert!(e.contains("0001-LOCAL-reproducer.patch"), "{e}");
        // ... which a maintainers-only report may carry,
        f.check_mail(mail, false).unwrap();
        // but part of it is not the patch.
        f.check_mail(
            &mail.replace("+\t\tif (!madvise(r->area, r->pmd_size, MADV_DONTNEED))\n", ""),
            true,
        )
        .unwrap();
        // A private file, pasted as text or quoted, in any mail.
        let mail = "Subject: [PATCH 0/4] mm: x\n\nNotes:\n  the window is 40 instructions wide\n> loop MADV_DONTNEED on CPU 1 forever\n";
        for public in [true, false] {
            let e = f.check_mail(mail, public).unwrap_err();
            assert!(e.contains("exploit.txt") && e.contains("private files"), "{e}");
        }
        f.check_mail(
            "Subject: [PATCH 0/4] mm: x\n\nthe window is 40 instructions wide\n",
            true,
        )
        .unwrap();
        // Nothing there, nothing refused.
        let none = Forbidden::from_dirs(&dir.path().join("nope"), &dir.path().join("nope2")).unwrap();
        none.check_mail(mail, true).unwrap();
    }

    #[test]
    fn the_repository_series_are_not_refused_and_the_reproducer_is() {
        let layout = Layout::discover();
        let f = Forbidden::load(&layout).unwrap();
        for stack in [series::fixes(&layout).unwrap(), series::mailed(&layout).unwrap()] {
            for p in stack.paths() {
                f.check_path(&p).unwrap();
                f.check_mail(&fs::read_to_string(&p).unwrap(), true)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
        }
        for p in series::local(&layout).unwrap().paths() {
            assert!(f.check_path(&p).is_err());
            let text = fs::read_to_string(&p).unwrap();
            assert!(f.check_mail(&text, true).is_err(), "{}", p.display());
            f.check_mail(&text, false).unwrap();
        }
    }

    #[test]
    fn the_cover_letter_discloses_and_names_what_it_applies_on() {
        let prereq = super::super::Prerequisite {
            subject: "mm/khugepaged: three windows in try_collapse_pte_mapped_thp()".into(),
            patches: 2,
        };
        let ok = "Subject: [RFC PATCH v1 0/6] mm: x\n\nIt applies on top of \"mm/khugepaged: three windows in\n\
                  try_collapse_pte_mapped_thp()\" [3].\n\n[[disclosure: to write]]\n\n\
                  base-commit: 0123\nprerequisite-patch-id: aa\nprerequisite-patch-id: bb\n-- \n2.47.3\n";
        assert_eq!(check_cover(ok, Some(&prereq)), Vec::<String>::new());
        let written = ok.replace(
            "[[disclosure: to write]]",
            "Disclosure: the Rust code was written with an LLM.",
        );
        assert_eq!(check_cover(&written, Some(&prereq)), Vec::<String>::new());
        let p = check_cover(&ok.replace("[[disclosure: to write]]", "Thanks."), Some(&prereq));
        assert!(p.len() == 1 && p[0].contains("disclosure"), "{p:?}");
        let p = check_cover(&ok.replace("on top of", "after"), Some(&prereq));
        assert!(p.len() == 1 && p[0].contains("on top of"), "{p:?}");
        let p = check_cover(&ok.replace("prerequisite-patch-id: bb\n", ""), Some(&prereq));
        assert!(p.len() == 1 && p[0].contains("1 prerequisite-patch-id"), "{p:?}");
        let p = check_cover(ok, None);
        assert!(p.len() == 1 && p[0].contains("nothing is below"), "{p:?}");
        let p = check_cover(&ok.replace("base-commit: 0123\n", ""), Some(&prereq));
        assert!(p.len() == 1 && p[0].contains("base-commit"), "{p:?}");
    }

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
}
