//! `cargo harness mail`: the two mailed series for linux-mm, and the
//! maintainers-only report.
//!
//! Two series, mailed in this order ([`Mailing`]):
//! - `--series fixes`: `patches/fixes/`, the C fixes and their selftests,
//!   `[PATCH 0/4]`, a series for stable of its own, on the base tag;
//! - `--series rfc` (the default): `patches/`, `[RFC PATCH v1 0/6]`, on top
//!   of the fixes.
//!
//! `patches/local/` is never mailed to a list ([`checks::Forbidden`]), and
//! nothing under `patches/private/` ever goes into a mail.
//!
//! A series' mail tree is a clone of the base (`work/mail-tree`, not the
//! developer's work tree) with the stacks below it and then its own stack
//! applied with `git am`. `git format-patch --cover-letter --base=<base tag>`
//! renders only this stack's range into `work/mail/<series>/vN/`, so that
//! the cover letter of the RFC ends with `base-commit:` and one
//! `prerequisite-patch-id:` per patch of the fixes (how b4 and maintainers
//! see the dependency). The cover letter is filled in from the series'
//! `cover-letter.txt`, and everything is then checked the way reviewers and
//! bots will: checkpatch (strict, codespell), trailers and subject style,
//! kernel-doc, a build of every patch in turn (bisectability; for the RFC
//! with Rust on, clippy on the last one, rustfmtcheck, rustdoc), and
//! get_maintainer for the recipients. `git send-email` runs as `--dry-run`
//! unless `--send` and an explicit `--smtp-server` are given.
//!
//! Sign-off ([`identity`]): the stored patches carry no Signed-off-by (an AI
//! agent must not add one: Documentation/process/coding-assistants.rst).
//! With `--signoff`, the sender's statement that they reviewed every patch,
//! the mails get the sender (`git config user.name`/`user.email`, or
//! `--from`) as `From:` and as the last trailer `Signed-off-by:`, after an
//! optional `Assisted-by:`. A real send needs `--signoff`.
//!
//! The base is Debian's 7.3.4, which is not an upstream commit: the
//! `base-commit:` trailer names upstream v7.3 from `patches/upstream-base.json`
//! once it is recorded, and the cover letter says which touched files differ
//! between the two ([`base`]).
//!
//! [`report::run`] (`--report`) prepares the plain-text reports of
//! `patches/fixes/report-*.txt` with their reproducer inline, to the
//! maintainers only. [`loopback_round_trip`] sends both series to an SMTP
//! sink on 127.0.0.1, applies what arrives onto a fresh clone of the base and
//! checks that the resulting trees are the mail trees'.

mod base;
mod checks;
mod identity;
mod loopback;
mod rebase;
mod recipients;
mod report;

pub use loopback::loopback_round_trip;
pub use rebase::self_test as rebase_self_test;

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::layout::{Layout, BASE_TAG};
use crate::series;

use base::{base_report, print_base, record_upstream, BaseReport};
use checks::{
    build_check, check_cover, check_mail_patch, check_stored_patch, checkpatch, codespell_dictionary, kernel_doc,
    Expect, Forbidden,
};
use identity::Identity;
use recipients::{parse_get_maintainer, print_recipients, recipients, Recipients, EXTRA_CC};

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// Which series: the fixes (`[PATCH 0/4]`, patches/fixes/, mailed first)
    /// or the RFC (`[RFC PATCH vN 0/6]`, patches/, on top of the fixes).
    #[arg(long, value_enum, default_value = "rfc")]
    pub series: SeriesName,
    /// Version of the series: `[RFC PATCH vN m/n]` (the fixes: `[PATCH vN m/n]`
    /// from v2 on), output in work/mail/<series>/vN.
    #[arg(short = 'v', long = "reroll-count", default_value_t = 1, value_name = "N")]
    pub version: u32,
    /// Your statement that you reviewed every patch: the mails get you as
    /// From: and your Signed-off-by as the last trailer. A real send needs it.
    #[arg(long)]
    pub signoff: bool,
    /// The sender, `Name <address>` (default: git config user.name and
    /// user.email of this repository).
    #[arg(long, value_name = "IDENTITY")]
    pub from: Option<String>,
    /// `Assisted-by: LLM [TOOL1] [TOOL2]` value for every patch, before the
    /// Signed-off-by (default: the line in patches/assisted-by, if any).
    #[arg(long, value_name = "LLM [TOOL...]")]
    pub assisted_by: Option<String>,
    /// Really send the mails (the default is `git send-email --dry-run`).
    /// Needs --smtp-server, and for a series --signoff.
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
    /// Only the loopback round trip (as in `cargo harness test`): both series
    /// to an SMTP sink on 127.0.0.1, `git am` what arrives, compare the trees.
    #[arg(long, conflicts_with_all = ["send", "check_only", "signoff", "from", "assisted_by", "report"])]
    pub loopback: bool,
    /// The maintainers-only reports instead of a series: one mail per
    /// patches/fixes/report-*.txt with its reproducer inline, in
    /// work/mail/report/, to the maintainers of the fixed files, never a list.
    #[arg(long, conflicts_with_all = ["record_upstream", "no_build_check", "signoff", "assisted_by"])]
    pub report: bool,
    /// Apply the series (with the stacks below it) onto this git tree instead (a user's own
    /// mm-new or v7.3 checkout; it is cloned, not touched) with `git am -3`, report each
    /// patch (applied, 3-way merged, already there, conflict), and re-run checkpatch and
    /// the per-patch build on the result.
    #[arg(long, value_name = "GIT_TREE", conflicts_with_all = ["send", "loopback", "report", "record_upstream"])]
    pub rebase_onto: Option<PathBuf>,
    /// The check of `--rebase-onto` that `cargo harness test` runs: the RFC onto the base
    /// with the fixes merged (all must apply) and onto the base with a line of a fix
    /// changed (that fix must be reported as a conflict).
    #[arg(long, conflicts_with_all = ["send", "loopback", "report", "rebase_onto"])]
    pub rebase_self_test: bool,
}

/// The two mailed series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeriesName {
    /// patches/fixes/: the C fixes and their selftests, for stable; first.
    Fixes,
    /// patches/: the Rust RFC, on top of the fixes.
    Rfc,
}

impl SeriesName {
    pub fn name(self) -> &'static str {
        match self {
            SeriesName::Fixes => "fixes",
            SeriesName::Rfc => "rfc",
        }
    }
}

/// Everything that differs between the two series when they are mailed.
#[derive(Debug, Clone)]
pub struct Mailing {
    pub series: SeriesName,
    /// The stack this mailing sends.
    pub stack: series::Stack,
    /// The mailings whose stacks are applied below this one, in order
    /// (for the RFC: the fixes). Their patches are prerequisites, not mailed.
    pub below: Vec<Mailing>,
    /// `PATCH` or `RFC PATCH`.
    pub subject_prefix: &'static str,
    /// `v1` in the subjects of the first version too (`[RFC PATCH v1 0/6]`;
    /// the fixes are `[PATCH 0/4]` until a v2).
    pub version_always: bool,
    pub cover_letter: PathBuf,
    pub version: u32,
    /// work/mail/<series>/vN
    pub out_dir: PathBuf,
    /// work/mail-tree/build-mail-<series>: the per-patch build check's own build directory.
    pub build_dir: PathBuf,
}

impl Mailing {
    pub fn new(layout: &Layout, series: SeriesName, version: u32) -> Result<Mailing> {
        let out_dir = layout
            .repo
            .join("work/mail")
            .join(series.name())
            .join(format!("v{version}"));
        let build_dir = Layout::build_dir(&mail_tree(layout), &format!("mail-{}", series.name()));
        Ok(match series {
            SeriesName::Fixes => {
                let stack = series::fixes(layout)?;
                Mailing {
                    series,
                    cover_letter: stack.dir.join("cover-letter.txt"),
                    stack,
                    below: Vec::new(),
                    subject_prefix: "PATCH",
                    version_always: false,
                    version,
                    out_dir,
                    build_dir,
                }
            }
            SeriesName::Rfc => Mailing {
                series,
                stack: series::mailed(layout)?,
                below: vec![Mailing::new(layout, SeriesName::Fixes, 1)?],
                subject_prefix: "RFC PATCH",
                version_always: true,
                cover_letter: layout.patches().join("cover-letter.txt"),
                version,
                out_dir,
                build_dir,
            },
        })
    }
    pub fn name(&self) -> &'static str {
        self.series.name()
    }
    /// The Rust parts of the checks (the series' kconfig options, CLIPPY=1,
    /// rustfmtcheck, rustdoc): the fixes are C and selftests only.
    pub fn rust(&self) -> bool {
        self.series == SeriesName::Rfc
    }
    /// The stacks applied before this one, in order.
    pub fn stacks_below(&self) -> Vec<&series::Stack> {
        let mut v = Vec::new();
        for b in &self.below {
            v.extend(b.stacks_below());
            v.push(&b.stack);
        }
        v
    }
    /// The subject of the cover letter (the template's first line).
    pub fn cover_subject(&self) -> Result<String> {
        let t = fs::read_to_string(&self.cover_letter)
            .with_context(|| format!("cannot read {}", self.cover_letter.display()))?;
        Ok(t.lines().next().unwrap_or("").trim().to_string())
    }
}

/// Who sends and signs, and with which trailers.
#[derive(Debug, Clone)]
pub struct Signing {
    pub sender: Identity,
    /// Where the sender came from (`--from`, git config).
    pub source: String,
    /// Why the sender cannot sign off or send, if it cannot.
    pub problem: Option<String>,
    pub signoff: bool,
    pub assisted_by: Option<String>,
}

impl Signing {
    pub fn from_opts(layout: &Layout, o: &Opts) -> Result<Signing> {
        let (sender, source) = identity::sender(layout, o.from.as_deref())?;
        let problem = sender.check().err();
        let assisted_by = identity::assisted_by(o.assisted_by.as_deref(), &layout.patches().join("assisted-by"))?;
        let s = Signing {
            sender,
            source,
            problem,
            signoff: o.signoff,
            assisted_by,
        };
        if let Some(p) = &s.problem {
            if s.signoff || o.send {
                bail!(
                    "refusing to {}: the sender (from {}) is not a usable identity: {p}.\n\
                     Pass --from \"Your Name <you@your.domain>\" or set git config user.name/user.email to yourself",
                    if s.signoff { "sign off" } else { "send" },
                    s.source
                );
            }
            eprintln!(
                "warning: the sender (from {}) is not a usable identity: {p}; fine for a dry run, \
                 but --signoff and --send will refuse it (use --from)",
                s.source
            );
        }
        Ok(s)
    }
    /// What the generated mails must carry.
    pub fn expect(&self) -> Expect {
        Expect {
            signoff: self.signoff.then(|| self.sender.clone()),
            assisted_by: self.assisted_by.clone(),
        }
    }
}

/// Marks a place in the cover letter that a person must fill in (measured
/// numbers, test results, the disclosure): a real send refuses while any is left.
pub const PLACEHOLDER: &str = "[[";
/// Where the generated statement about the base goes in cover-letter.txt.
pub const BASE_TOKEN: &str = "{{base}}";
/// Debian's python (pyenv's python3, first on PATH, has neither aiosmtpd
/// nor codespell_lib).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

pub fn mail_tree(layout: &Layout) -> PathBuf {
    layout.repo.join("work/mail-tree")
}

pub fn run(layout: &Layout, o: &Opts) -> Result<()> {
    if o.send && o.smtp_server.as_deref().unwrap_or("").is_empty() {
        bail!("--send needs an explicit --smtp-server");
    }
    if o.loopback {
        return loopback_round_trip(layout);
    }
    if o.rebase_self_test {
        return rebase::self_test(layout);
    }
    let signing = Signing::from_opts(layout, o)?;
    if o.report {
        return report::run(layout, o, &signing);
    }
    let mut m = Mailing::new(layout, o.series, o.version)?;
    if let Some(target) = &o.rebase_onto {
        return rebase::run(layout, &mut m, target, !o.no_build_check);
    }
    if o.send {
        refuse_send_early(layout, &m, &signing, o)?;
    }
    let forbidden = Forbidden::load(layout)?;
    // The stored patches: never a local or private file, never a Signed-off-by.
    let mut problems = Vec::new();
    for stack in m.stacks_below().into_iter().chain([&m.stack]) {
        for p in stack.paths() {
            forbidden.check_path(&p).map_err(|e| anyhow::anyhow!("{e}"))?;
            let text = fs::read_to_string(&p).with_context(|| p.display().to_string())?;
            if let Err(e) = check_stored_patch(&text) {
                problems.push(format!("{}: {e}", p.display()));
            }
        }
    }
    let prep = prepare_tree(layout, &m, &signing)?;
    eprintln!(
        "mail tree {}: {} patch(es) of the {} series on {BASE_TAG}{}",
        prep.tree.display(),
        prep.commits.len(),
        m.name(),
        if m.below.is_empty() {
            String::new()
        } else {
            format!(" + {} patch(es) below it", prep.below_count)
        }
    );
    if let Some(up) = &o.record_upstream {
        record_upstream(layout, &prep.tree, up)?;
    }
    let base = base_report(layout, &prep.tree)?;
    print_base(&base);
    let files = format_series(&m, &prep, &signing, &base, &m.out_dir)?;
    let (cover, patches) = files.split_first().expect("format-patch wrote a cover letter");
    eprintln!("format-patch: {} files in {}", files.len(), m.out_dir.display());

    // The cheap checks first, all of them, so that one run lists every problem.
    let expect = signing.expect();
    for f in &files {
        let text = fs::read_to_string(f)?;
        if let Err(e) = forbidden.check_mail(&text, true) {
            bail!("refusing to mail {}: {e}", f.display());
        }
    }
    for p in patches {
        let text = fs::read_to_string(p)?;
        if let Err(e) = check_mail_patch(&text, &expect) {
            problems.push(format!("{}: {e}", file_name(p)));
        }
    }
    let cover_text = fs::read_to_string(cover)?;
    let prereq = prerequisite(&m)?;
    problems.extend(
        check_cover(&cover_text, prereq.as_ref())
            .into_iter()
            .map(|e| format!("{}: {e}", file_name(cover))),
    );
    let dict = codespell_dictionary()?;
    let history = checks::has_history(&prep.tree);
    let mut unverified = Vec::new();
    for p in patches {
        if let Err(e) = checkpatch(&prep.tree, p, &dict, signing.signoff, history) {
            problems.push(format!("{}: {e:#}", file_name(p)));
        }
        let text = fs::read_to_string(p)?;
        if let Ok(msg) = checks::commit_message(&text) {
            unverified.extend(
                checks::commit_references(msg)
                    .into_iter()
                    .map(|r| format!("{}: {r}", file_name(p))),
            );
        }
    }
    if !history && !unverified.is_empty() {
        eprintln!(
            "warning: checkpatch's UNKNOWN_COMMIT_ID ignored: the mail tree's {BASE_TAG} has no upstream history, \
             so these {} commit reference(s) are NOT verified (check id and subject in torvalds/linux before sending):\n  {}",
            unverified.len(),
            unverified.join("\n  ")
        );
    }
    match kernel_doc(&prep.tree, &prep.below) {
        Ok(w) if w.is_empty() => eprintln!("  kernel-doc: clean on the touched C files"),
        Ok(w) => problems.push(format!(
            "kernel-doc warnings that the series adds:\n    {}",
            w.join("\n    ")
        )),
        Err(e) => problems.push(format!("kernel-doc: {e:#}")),
    }
    if !problems.is_empty() {
        bail!(
            "the {} series is not ready to mail ({} problem(s)):\n  {}",
            m.name(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    eprintln!(
        "  checkpatch --strict --codespell{}: 0 errors, 0 warnings, 0 checks on all {} patch(es)",
        if signing.signoff {
            ""
        } else {
            " --no-signoff (no --signoff: the sign-off is not checked)"
        },
        patches.len()
    );
    if signing.signoff {
        eprintln!(
            "  trailers: every patch ends with {}Signed-off-by: {}",
            signing
                .assisted_by
                .as_ref()
                .map(|a| format!("Assisted-by: {a}, "))
                .unwrap_or_default(),
            signing.sender
        );
    } else {
        eprintln!(
            "  trailers: no Signed-off-by (no --signoff){}",
            signing
                .assisted_by
                .as_ref()
                .map(|a| format!("; Assisted-by: {a}"))
                .unwrap_or_default()
        );
    }

    if o.no_build_check {
        eprintln!("  build check: SKIPPED (--no-build-check); do not send without it");
    } else {
        build_check(layout, &m, &prep.tree, &prep.commits)?;
    }

    let gm = cmd::output(
        Command::new("perl")
            .current_dir(&prep.tree)
            .arg("scripts/get_maintainer.pl")
            .args(["--no-git", "--no-git-fallback", "--rolestats"])
            .args(patches),
    )?;
    fs::write(m.out_dir.join("get_maintainer.txt"), &gm)?;
    let entries = parse_get_maintainer(&gm);
    let recips = recipients(&entries, EXTRA_CC);
    print_recipients(&recips, &entries);

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
            "--check-only: not running git send-email; the {} series is in {}",
            m.name(),
            m.out_dir.display()
        );
        return Ok(());
    }
    if o.send {
        if !left.is_empty() {
            bail!(
                "refusing to send: fill in the {} marked place(s) in {} first",
                left.len(),
                m.cover_letter.display()
            );
        }
        if base.commit.is_none() {
            bail!("refusing to send: the upstream base commit is unknown (see patches/upstream-base.json)");
        }
    }
    send_email(&prep.tree, &m.out_dir, &files, &recips, &signing, o, m.series)
}

/// The refusals of `--send` that do not need the mails: no sign-off, an
/// unusable sender, no build check, the RFC before the fixes.
fn refuse_send_early(layout: &Layout, m: &Mailing, s: &Signing, o: &Opts) -> Result<()> {
    if !s.signoff {
        bail!(
            "refusing to send without --signoff: the stored patches carry no Signed-off-by \
             (Documentation/process/coding-assistants.rst: only the human submitter certifies the DCO). \
             Review every patch, then pass --signoff (and --from \"Name <address>\" unless git config \
             user.name/user.email is you): your Signed-off-by becomes the last trailer and you the From:"
        );
    }
    if let Some(p) = &s.problem {
        bail!("refusing to send: the sender (from {}) is not usable: {p}", s.source);
    }
    if o.no_build_check {
        bail!("refusing to send without the build check (drop --no-build-check)");
    }
    for b in &m.below {
        if sent_logs(layout, b.series).is_empty() {
            bail!(
                "refusing to send the {} series before the {} series it applies on: no {}/v*/send-email.log \
                 (send `--series {}` first)",
                m.name(),
                b.name(),
                layout.repo.join("work/mail").join(b.name()).display(),
                b.name()
            );
        }
    }
    Ok(())
}

/// The logs of real sends of a series.
fn sent_logs(layout: &Layout, s: SeriesName) -> Vec<PathBuf> {
    let dir = layout.repo.join("work/mail").join(s.name());
    let Ok(rd) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .map(|e| e.path().join("send-email.log"))
        .filter(|p| p.is_file())
        .collect()
}

/// What the cover letter of a series on top of another must say.
#[derive(Debug, Clone)]
pub struct Prerequisite {
    /// The cover-letter subject of the series below.
    pub subject: String,
    /// The number of its patches (one `prerequisite-patch-id:` each).
    pub patches: usize,
}

fn prerequisite(m: &Mailing) -> Result<Option<Prerequisite>> {
    let Some(b) = m.below.last() else {
        return Ok(None);
    };
    Ok(Some(Prerequisite {
        subject: b.cover_subject()?,
        patches: m.stacks_below().iter().map(|s| s.patches.len()).sum(),
    }))
}

// ---------------------------------------------------------------------------
// The mail tree and format-patch

/// The mail tree of one series.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub tree: PathBuf,
    /// The commit the series applies to: the base tag's, or the last one of
    /// the stacks below.
    pub below: String,
    /// How many commits of the stacks below there are.
    pub below_count: usize,
    /// The commits of the series, oldest first.
    pub commits: Vec<String>,
}

/// A clone of the base with the stacks below `m` and then `m`'s stack
/// applied; with `--signoff` (or an Assisted-by) the series' commits get the
/// trailers, and a commit whose author is not a usable identity is
/// re-authored to the sender.
pub fn prepare_tree(layout: &Layout, m: &Mailing, s: &Signing) -> Result<Prepared> {
    if m.stack.patches.is_empty() {
        bail!("{}/series lists no patches: nothing to mail", m.stack.dir.display());
    }
    let tree = mail_tree(layout);
    if !tree.join(".git").exists() {
        let pb = cmd::stage_bar("mail tree");
        pb.set_message(format!("cloning {} (first time only)", layout.base_repo().display()));
        crate::base::clone_to(layout, &tree, "mail")?;
        pb.finish_and_clear();
    } else {
        cmd::output(&mut cmd::git(&tree, ["fetch", "-q", "--tags", "origin"]))?;
        crate::base::exclude_build_dirs(&tree)?;
    }
    if cmd::output(&mut cmd::git(&tree, ["config", "user.email"])).is_err() {
        cmd::output(&mut cmd::git(&tree, ["config", "user.name", "khugepaged-rs harness"]))?;
        cmd::output(&mut cmd::git(&tree, ["config", "user.email", "harness@localhost"]))?;
    }
    cmd::output(&mut cmd::git(&tree, ["am", "--abort"])).ok();
    cmd::output(&mut cmd::git(&tree, ["checkout", "-q", "-f", "-B", "mail", BASE_TAG]))?;
    crate::base::clean(&tree)?;
    let am = |p: &Path| -> Result<()> {
        if let Err(e) = cmd::output(cmd::git(&tree, ["am", "-q"]).arg(p)) {
            cmd::output(&mut cmd::git(&tree, ["am", "--abort"])).ok();
            bail!("patch {} does not apply:\n{e:#}", p.display());
        }
        Ok(())
    };
    let mut below_count = 0;
    for st in m.stacks_below() {
        for p in st.paths() {
            am(&p)?;
            below_count += 1;
        }
    }
    let below = cmd::output(&mut cmd::git(&tree, ["rev-parse", "HEAD"]))?
        .trim()
        .to_string();
    let mut reauthored = 0;
    for p in m.stack.paths() {
        am(&p)?;
        if sign_commit(&tree, s)? {
            reauthored += 1;
        }
    }
    if reauthored > 0 {
        eprintln!(
            "  {reauthored} commit(s) re-authored to the sender {}: their author is not a usable identity",
            s.sender
        );
    }
    let log = cmd::output(&mut cmd::git(
        &tree,
        ["log", "--reverse", "--format=%H %s", &format!("{below}..HEAD")],
    ))?;
    let mut commits = Vec::new();
    for line in log.lines() {
        let (id, subject) = line.split_once(' ').unwrap_or((line, ""));
        if subject.starts_with(series::LOCAL_PREFIX) {
            bail!(
                "{}/series holds a local-only patch \"{subject}\": move it to patches/local/",
                m.stack.dir.display()
            );
        }
        commits.push(id.to_string());
    }
    Ok(Prepared {
        tree,
        below,
        below_count,
        commits,
    })
}

/// Add the trailers to HEAD: `Assisted-by:` if any, then with `--signoff`
/// the sender's `Signed-off-by:` last; with `--signoff`, re-author a commit
/// whose author is neither the sender nor a usable identity. Returns whether
/// it re-authored.
fn sign_commit(tree: &Path, s: &Signing) -> Result<bool> {
    if !s.signoff && s.assisted_by.is_none() {
        return Ok(false);
    }
    let author = cmd::output(&mut cmd::git(tree, ["log", "-1", "--format=%an <%ae>"]))?;
    let author = author.trim();
    let usable = Identity::parse(author).is_ok_and(|a| a.same_address(&s.sender) || a.check().is_ok());
    let reset = s.signoff && !usable;
    let mut c = cmd::git(
        tree,
        [
            "-c",
            "trailer.where=end",
            "-c",
            "trailer.ifexists=addIfDifferentNeighbor",
            "-c",
            "trailer.ifmissing=add",
            "commit",
            "-q",
            "--amend",
            "--no-edit",
            "--no-verify",
            "--cleanup=whitespace",
        ],
    );
    c.env("GIT_COMMITTER_NAME", &s.sender.name)
        .env("GIT_COMMITTER_EMAIL", &s.sender.email);
    if reset {
        c.arg("--reset-author")
            .env("GIT_AUTHOR_NAME", &s.sender.name)
            .env("GIT_AUTHOR_EMAIL", &s.sender.email);
    }
    if let Some(a) = &s.assisted_by {
        c.arg("--trailer").arg(format!("Assisted-by: {a}"));
    }
    if s.signoff {
        c.arg("--trailer").arg(format!("Signed-off-by: {}", s.sender));
    }
    cmd::output(&mut c)?;
    Ok(reset)
}

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `git format-patch --cover-letter --base=<base tag>` of the series' range
/// into `out` (old files removed), with the cover letter filled in. Returns
/// the files, cover letter first.
pub fn format_series(m: &Mailing, prep: &Prepared, s: &Signing, base: &BaseReport, out: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(out)?;
    for e in fs::read_dir(out)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "patch") {
            fs::remove_file(p)?;
        }
    }
    let mut c = cmd::git(&prep.tree, ["-c", "core.abbrev=12", "format-patch", "--cover-letter"]);
    // The cover letter's From: is the committer identity, not --from's.
    if !s.sender.name.is_empty() && !s.sender.email.is_empty() {
        c.env("GIT_COMMITTER_NAME", &s.sender.name)
            .env("GIT_COMMITTER_EMAIL", &s.sender.email);
    }
    c.arg(format!("--base={BASE_TAG}"))
        .arg(format!("--subject-prefix={}", m.subject_prefix));
    if m.version_always || m.version > 1 {
        c.arg(format!("--reroll-count={}", m.version));
    }
    if s.signoff {
        // The sender in From:; an author who is someone else moves to an
        // in-body From: line.
        c.arg(format!("--from={}", s.sender));
    }
    let listed = cmd::output(
        c.arg("--output-directory")
            .arg(out)
            .arg(format!("{}..HEAD", prep.below)),
    )?;
    let files: Vec<PathBuf> = listed.lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect();
    let cover = files.first().context("format-patch wrote nothing")?;
    let template =
        fs::read_to_string(&m.cover_letter).with_context(|| format!("cannot read {}", m.cover_letter.display()))?;
    let generated = fs::read_to_string(cover)?;
    fs::write(
        cover,
        fill_cover(&generated, &template, base, prerequisite(m)?.as_ref())?,
    )?;
    Ok(files)
}

/// Fill format-patch's cover letter: subject and blurb from the template
/// (first line, blank line, body; `{{base}}` becomes the base statement,
/// or it is appended), and the upstream commit, once known, in the
/// `base-commit:` trailer that `--base` wrote (inserted before the
/// signature if there is none).
pub fn fill_cover(generated: &str, template: &str, base: &BaseReport, prereq: Option<&Prerequisite>) -> Result<String> {
    let (subject, body) = template.split_once('\n').unwrap_or((template, ""));
    let subject = subject.trim();
    if subject.is_empty() {
        bail!("cover-letter.txt: the first line (the subject) is empty");
    }
    let body = body.trim_matches('\n');
    let mut statement = base.statement();
    if let Some(p) = prereq {
        statement.push_str("\n\n");
        statement.push_str(&base::wrap(
            &format!(
                "Prerequisite: the {} patch(es) of \"{}\", applied in that order; \
                 the prerequisite-patch-id lines at the end identify them.",
                p.patches, p.subject
            ),
            72,
        ));
    }
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
        let line = format!("base-commit: {id}");
        if let Some(start) = text.find("\nbase-commit: ") {
            let end = text[start + 1..].find('\n').map_or(text.len(), |e| start + 1 + e);
            text.replace_range(start + 1..end, &line);
        } else {
            match text.rfind("\n-- \n") {
                Some(i) => text.insert_str(i + 1, &format!("{line}\n")),
                None => text.push_str(&format!("\n{line}\n")),
            }
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
// Sending

/// `git send-email` of a series' files to its recipients: a dry run unless
/// --send. The log goes to `out`.
fn send_email(
    tree: &Path,
    out: &Path,
    files: &[PathBuf],
    r: &Recipients,
    s: &Signing,
    o: &Opts,
    series: SeriesName,
) -> Result<()> {
    let mut c = send_email_command(tree, &s.sender, &r.to, &r.cc, o)?;
    c.arg("--suppress-cc=self");
    c.args(files);
    let text = cmd::output(&mut c)?;
    let log = out.join(if o.send {
        "send-email.log"
    } else {
        "send-email-dry-run.log"
    });
    fs::write(&log, &text)?;
    for l in text
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
            "dry run: {} mail(s) to {} + {} Cc; full log {}\nto really send: cargo harness mail --series {} -v {} --signoff --send --smtp-server HOST [--smtp-port P]",
            files.len(),
            r.to.len(),
            r.cc.len(),
            log.display(),
            series.name(),
            o.version
        );
    }
    Ok(())
}

/// `git send-email` in `tree` from `sender` to `to`/`cc`: a real send to `--smtp-server` with
/// `--send`, else `--dry-run`. Callers add their own `--suppress-cc` and the files.
pub(crate) fn send_email_command(
    tree: &Path,
    sender: &impl std::fmt::Display,
    to: &[String],
    cc: &[String],
    o: &Opts,
) -> Result<Command> {
    let mut c = Command::new("git");
    c.current_dir(tree)
        .args([
            "send-email",
            "--confirm=never",
            "--no-annotate",
            "--no-format-patch",
            "--8bit-encoding=UTF-8",
        ])
        .arg(format!("--from={sender}"));
    for a in to {
        c.arg(format!("--to={a}"));
    }
    for a in cc {
        c.arg(format!("--cc={a}"));
    }
    if o.send {
        let server = o.smtp_server.as_deref().context("--send needs --smtp-server")?;
        c.arg(format!("--smtp-server={server}"));
        if let Some(p) = o.smtp_port {
            c.arg(format!("--smtp-server-port={p}"));
        }
    } else {
        c.arg("--dry-run");
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::base::*;
    use super::*;

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
        let text = fill_cover(generated, template, &report(Some(id)), None).unwrap();
        assert!(text.contains("Subject: [RFC PATCH v1 0/1] mm/khugepaged: the subject\n"));
        assert!(text.contains("\n\nWhy.\n\nBase: developed and tested on Debian's"));
        assert!(
            text.replace('\n', " ").contains(&format!(
                "(linux-source-7.3.tar.xz sha256 {})",
                crate::base::TARBALL_SHA256
            )),
            "{text}"
        );
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
        let text = fill_cover(generated, template, &report(None), None).unwrap();
        assert!(!text.contains("base-commit:"));
        assert!(placeholders(&text).iter().any(|l| l.contains("commit id unknown")));
        assert!(fill_cover("no markers", template, &report(None), None).is_err());
        // format-patch --base wrote Debian's base commit and the fixes' patch
        // ids: the upstream id replaces the former, the latter stay, and the
        // statement names the series below.
        let with_base = generated.replace(
            "\n-- \n",
            "\nbase-commit: 1111111111111111111111111111111111111111\nprerequisite-patch-id: aaaa\n-- \n",
        );
        let prereq = Prerequisite {
            subject: "mm/khugepaged: three windows".into(),
            patches: 1,
        };
        let text = fill_cover(&with_base, template, &report(Some(id)), Some(&prereq)).unwrap();
        assert!(
            text.contains(&format!("\nbase-commit: {id}\nprerequisite-patch-id: aaaa\n-- \n")),
            "{text}"
        );
        assert!(!text.contains("1111111111"));
        assert!(text.contains("Prerequisite: the 1 patch(es) of \"mm/khugepaged: three windows\""));
        let text = fill_cover(&with_base, template, &report(None), Some(&prereq)).unwrap();
        assert!(text.contains("base-commit: 1111111111111111111111111111111111111111\n"));
    }

    #[test]
    fn the_repository_cover_letter_and_base_data_parse() {
        let layout = Layout::discover();
        let up = load_upstream(&layout).unwrap();
        assert_eq!(up.tag, "v7.3");
        if let Some(c) = &up.commit {
            assert!(c.len() == 40 && c.chars().all(|ch| ch.is_ascii_hexdigit()), "{c}");
        }
        let cover = fs::read_to_string(layout.patches().join("cover-letter.txt")).unwrap();
        let subject = cover.lines().next().unwrap();
        assert!(subject.starts_with("mm/khugepaged: "), "{subject}");
        assert!(cover.lines().nth(1).unwrap().is_empty());
        assert!(cover.contains(BASE_TOKEN));
        // The RFC says it applies on top of the fixes series, by its subject.
        let fixes = Mailing::new(&layout, SeriesName::Fixes, 1).unwrap();
        let rfc = Mailing::new(&layout, SeriesName::Rfc, 1).unwrap();
        let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat(&cover).contains(&flat(&fixes.cover_subject().unwrap())));
        assert!(flat(&cover).contains("on top of"));
        assert_eq!(rfc.below.len(), 1);
        assert_eq!(rfc.stacks_below().len(), 1);
        assert!(fixes.below.is_empty());
        assert_eq!(
            (
                rfc.subject_prefix,
                fixes.subject_prefix,
                rfc.version_always,
                fixes.version_always
            ),
            ("RFC PATCH", "PATCH", true, false)
        );
        assert!(rfc.out_dir.ends_with("work/mail/rfc/v1"));
        assert!(fixes.build_dir.ends_with("work/mail-tree/build-mail-fixes"));
        assert!(rfc.build_dir.ends_with("work/mail-tree/build-mail-rfc"));
        for m in [&fixes, &rfc] {
            let t = fs::read_to_string(&m.cover_letter).unwrap();
            assert!(
                t.contains(checks::DISCLOSURE_PLACEHOLDER) || t.contains("Disclosure:"),
                "{}",
                m.name()
            );
        }
        for link in [
            "https://lore.kernel.org/r/CAG48ez0FxiRC4d3VTu_a9h=rg5FW-kYD5Rg5xo_RDBM0LTTqZQ@mail.gmail.com",
            "https://lore.kernel.org/r/f2dc6d6b-c516-932-1598-a58e2afffe9a@google.com",
            "zap_empty_pte_table()",
            "zap_pte_table_if_empty()",
        ] {
            assert!(cover.contains(link), "{link}");
        }
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Seed ad2b398b maintainers")
            .env("GIT_AUTHOR_EMAIL", "maintainers@users.noreply.r-seed-ad2b398b.example")
            .env("GIT_COMMITTER_NAME", "Seed ad2b398b maintainers")
            .env(
                "GIT_COMMITTER_EMAIL",
                "maintainers@users.noreply.r-seed-ad2b398b.example",
            )
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        o: Opts,
    }

    fn opts(args: &[&str]) -> Opts {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("mail").chain(args.iter().copied()))
            .unwrap()
            .o
    }

    #[test]
    fn signoff_refuses_a_placeholder_sender_and_send_needs_signoff() {
        let layout = Layout::discover();
        for from in [
            "Test Submitter <submitter@example.com>",
            "Seed ad2b398b maintainers <maintainers@users.noreply.r-seed-ad2b398b.example>",
            "harness <harness@localhost>",
        ] {
            let e = Signing::from_opts(&layout, &opts(&["--signoff", "--from", from]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("refusing to sign off") && e.contains(from), "{e}");
        }
        // A dry run without --signoff takes it (with a warning) ...
        let s = Signing::from_opts(&layout, &opts(&["--from", "Test Submitter <submitter@example.com>"])).unwrap();
        assert!(s.problem.as_deref().unwrap().contains("RFC 2606"));
        // ... a real send does not, and needs --signoff.
        let send = ["--send", "--smtp-server", "smtp.kernel-dev.org"];
        let o = opts(&[&send[..], &["--from", "Test Submitter <submitter@example.com>"]].concat());
        assert!(Signing::from_opts(&layout, &o)
            .unwrap_err()
            .to_string()
            .contains("refusing to send"));
        let o = opts(&[&send[..], &["--from", "Jane Developer <jane@kernel-dev.org>"]].concat());
        let s = Signing::from_opts(&layout, &o).unwrap();
        let m = Mailing::new(&layout, SeriesName::Fixes, 1).unwrap();
        let e = refuse_send_early(&layout, &m, &s, &o).unwrap_err().to_string();
        assert!(
            e.contains("without --signoff") && e.contains("coding-assistants.rst"),
            "{e}"
        );
        let o = opts(
            &[
                &send[..],
                &[
                    "--signoff",
                    "--no-build-check",
                    "--from",
                    "Jane Developer <jane@kernel-dev.org>",
                ],
            ]
            .concat(),
        );
        let s = Signing::from_opts(&layout, &o).unwrap();
        let e = refuse_send_early(&layout, &m, &s, &o).unwrap_err().to_string();
        assert!(e.contains("build check"), "{e}");
        assert!(Signing::from_opts(&layout, &opts(&["--assisted-by", "Jane <jane@kernel-dev.org>"])).is_err());
        // --series is a ValueEnum, the RFC by default.
        assert_eq!(opts(&[]).series, SeriesName::Rfc);
        assert_eq!(opts(&["--series", "fixes"]).series, SeriesName::Fixes);
    }

    #[test]
    fn a_mail_generated_with_signoff_ends_with_the_senders_signed_off_by() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("mm")).unwrap();
        git(&tree, &["init", "-q", "-b", "main"]);
        fs::write(tree.join("mm/khugepaged.c"), "int a;\n").unwrap();
        git(&tree, &["add", "."]);
        git(&tree, &["commit", "-q", "-m", "base"]);
        git(&tree, &["tag", BASE_TAG]);
        let below = git(&tree, &["rev-parse", "HEAD"]).trim().to_string();
        // As the stored patches are: the placeholder author, no Signed-off-by.
        fs::write(tree.join("mm/khugepaged.c"), "int a;\nint b;\n").unwrap();
        git(
            &tree,
            &[
                "commit",
                "-q",
                "-a",
                "-m",
                "mm/khugepaged: add b\n\nBecause b is needed.\n\nFixes: 0123456789ab (\"mm: a\")\nCc: stable@vger.kernel.org",
            ],
        );
        let jane = Identity::parse("Jane Developer <jane@kernel-dev.org>").unwrap();
        let s = Signing {
            sender: jane.clone(),
            source: "test".into(),
            problem: None,
            signoff: true,
            assisted_by: Some("LLM sparse".into()),
        };
        assert!(sign_commit(&tree, &s).unwrap(), "the placeholder author is re-authored");
        // A usable author who is not the sender is kept.
        fs::write(tree.join("mm/khugepaged.c"), "int a;\nint b;\nint c;\n").unwrap();
        git(
            &tree,
            &[
                "-c",
                "user.name=x",
                "commit",
                "-q",
                "-a",
                "--author=Ada Kernel <ada@kernel-dev.org>",
                "-m",
                "mm/khugepaged: add c\n\nBecause c is needed too.",
            ],
        );
        assert!(!sign_commit(&tree, &s).unwrap());
        let stack_dir = dir.path().join("patches");
        fs::create_dir_all(&stack_dir).unwrap();
        fs::write(
            stack_dir.join("cover-letter.txt"),
            "mm/khugepaged: b and c\n\nWhy.\n\n[[disclosure: tools]]\n\n{{base}}\n",
        )
        .unwrap();
        let m = Mailing {
            series: SeriesName::Fixes,
            stack: series::Stack {
                dir: stack_dir.clone(),
                patches: vec![],
            },
            below: vec![],
            subject_prefix: "PATCH",
            version_always: false,
            cover_letter: stack_dir.join("cover-letter.txt"),
            version: 1,
            out_dir: dir.path().join("out"),
            build_dir: dir.path().join("build"),
        };
        let prep = Prepared {
            tree: tree.clone(),
            below,
            below_count: 0,
            commits: vec![],
        };
        let files = format_series(&m, &prep, &s, &report(None), &m.out_dir).unwrap();
        assert_eq!(files.len(), 3);
        let cover = fs::read_to_string(&files[0]).unwrap();
        assert!(
            cover.contains("Subject: [PATCH 0/2] mm/khugepaged: b and c\n"),
            "{cover}"
        );
        assert!(
            cover.contains("From: Jane Developer <jane@kernel-dev.org>\n"),
            "{cover}"
        );
        assert_eq!(check_cover(&cover, None), Vec::<String>::new());
        let expect = s.expect();
        let one = fs::read_to_string(&files[1]).unwrap();
        check_mail_patch(&one, &expect).unwrap_or_else(|e| panic!("{e}\n{one}"));
        assert!(one.contains("Subject: [PATCH 1/2] mm/khugepaged: add b\n"));
        assert!(one.contains("From: Jane Developer <jane@kernel-dev.org>\n"));
        assert!(one.contains(
            "\n\nFixes: 0123456789ab (\"mm: a\")\nCc: stable@vger.kernel.org\nAssisted-by: LLM sparse\n\
             Signed-off-by: Jane Developer <jane@kernel-dev.org>\n---\n"
        ));
        assert!(!one.contains("Seed ad2b398b"));
        let two = fs::read_to_string(&files[2]).unwrap();
        check_mail_patch(&two, &expect).unwrap_or_else(|e| panic!("{e}\n{two}"));
        // Ada stays the author: format-patch put her in an in-body From:.
        assert!(two.contains("From: Jane Developer <jane@kernel-dev.org>\n"));
        assert!(
            two.contains(
                "\n\nFrom: Ada Kernel <ada@kernel-dev.org>\n\nBecause c is needed too.\n\n\
             Assisted-by: LLM sparse\nSigned-off-by: Jane Developer <jane@kernel-dev.org>\n---\n"
            ),
            "{two}"
        );
        // The same mails without --signoff would not pass as signed.
        let unsigned = Expect {
            signoff: None,
            assisted_by: None,
        };
        assert!(check_mail_patch(&one, &unsigned)
            .unwrap_err()
            .contains("without --signoff"));
    }
}
