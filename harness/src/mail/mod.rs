//! `cargo harness mail`: the two mailed series for linux-mm, and the
//! maintainers-only report.
//!
//! Two series, mailed in this order ([`Mailing`]):
//! - `--series fixes`: `patches/fixes/`, the C fixes and their selftests,
//!   `[PATCH 0/4]`, a series for stable of its own, on the base tag;
//! - `--series rfc` (the default): `patches/`, `[RFC PATCH v1 0/6]`, on top
//!   of the fixes.
//!
//! `patches/local/` is never mailed to a list ([`forbidden::Forbidden`]), and
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

mod b4;
mod base;
mod checkpatch;
mod checks;
mod forbidden;
mod identity;
mod loopback;
mod patch_build;
mod prepare;
mod rebase;
mod recipients;
mod report;
mod send;

pub use loopback::loopback_round_trip;
pub use rebase::self_test as rebase_self_test;

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::path::PathBuf;
use std::process::Command;

use crate::cmd;
use crate::layout::{Layout, BASE_TAG};
use crate::series;

use base::{base_report, print_base, record_upstream, BaseReport};
use checkpatch::{checkpatch, codespell_dictionary, kernel_doc};
use checks::{check_cover, check_mail_patch, check_stored_patch};
use forbidden::Forbidden;
use identity::Identity;
pub use identity::Signing;
use patch_build::build_check;
use prepare::prerequisite;
pub use prepare::{file_name, format_series, placeholders, prepare_tree, Prepared, Prerequisite};
use recipients::{parse_get_maintainer, print_recipients, recipients, Recipients, EXTRA_CC};
pub(crate) use send::send_email_command;
use send::{send_email, sent_logs};

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
    /// Send with b4 instead of git send-email (`b4 prep` enrolls a branch of the mail
    /// tree with the generated cover letter, then `b4 send`): without --send the
    /// messages go into work/mail/<series>/vN/b4/ (`b4 send -o`), nothing is sent.
    #[arg(long, conflicts_with = "check_only")]
    pub b4: bool,
    /// With --b4: `b4 send --reflect`, the mails with their full To/Cc headers
    /// delivered to you only, through --smtp-server.
    #[arg(long, requires_all = ["b4", "smtp_server"], conflicts_with = "send")]
    pub reflect: bool,
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
    let history = checkpatch::has_history(&prep.tree);
    let mut unverified = Vec::new();
    for p in patches {
        if let Err(e) = checkpatch(&prep.tree, p, &dict, signing.signoff, history) {
            problems.push(format!("{}: {e:#}", file_name(p)));
        }
        let text = fs::read_to_string(p)?;
        if let Ok(msg) = checks::commit_message(&text) {
            unverified.extend(
                checkpatch::commit_references(msg)
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

    // One patch as it goes out: the one with the most trailers.
    let sample = patches
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok().map(|t| (p, t)))
        .max_by_key(|(_, t)| {
            checks::commit_message(t)
                .map(|m| checks::trailer_block(m).len())
                .unwrap_or(0)
        });
    if let Some((p, t)) = sample {
        eprintln!("one mail as it goes out ({}):", file_name(p));
        for l in checks::mail_summary(&t) {
            eprintln!("  {l}");
        }
    }
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
    if o.b4 {
        return b4::send(&m, &prep, &base, &recips, &signing, o, files.len());
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // A dry run without --signoff refuses it too: its mails would be From it ...
        let e = Signing::from_opts(&layout, &opts(&["--from", "Test Submitter <submitter@example.com>"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("refusing to prepare mails") && e.contains("RFC 2606"), "{e}");
        // ... checks alone take it, with a warning.
        let o = opts(&["--check-only", "--from", "Test Submitter <submitter@example.com>"]);
        let s = Signing::from_opts(&layout, &o).unwrap();
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
}
