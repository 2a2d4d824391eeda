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

mod base;
mod checks;
mod loopback;
mod recipients;

pub use loopback::loopback_round_trip;

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::layout::{Layout, BASE_TAG};
use crate::series;

use base::{base_report, print_base, record_upstream, BaseReport};
use checks::{build_check, check_mail_patch, checkpatch, codespell_dictionary, kernel_doc};
use recipients::{parse_get_maintainer, print_recipients, recipients, Recipients, EXTRA_CC};

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

pub const SUBJECT_PREFIX: &str = "RFC PATCH";
/// Marks a place in the cover letter that a person must fill in (measured
/// numbers, test results): a real send refuses while any is left.
pub const PLACEHOLDER: &str = "[[";
/// Where the generated statement about the base goes in cover-letter.txt.
pub const BASE_TOKEN: &str = "{{base}}";
/// Debian's python (pyenv's python3, first on PATH, has neither aiosmtpd
/// nor codespell_lib).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

pub fn mail_tree(layout: &Layout) -> PathBuf {
    layout.repo.join("work/mail-tree")
}
pub fn out_dir(layout: &Layout, version: u32) -> PathBuf {
    layout.repo.join("work/mail").join(format!("v{version}"))
}
pub fn cover_letter_file(layout: &Layout) -> PathBuf {
    layout.patches().join("cover-letter.txt")
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
        crate::base::clone_to(layout, &tree, "mail")?;
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

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `git format-patch --cover-letter -v N` into `out` (old files removed),
/// with the cover letter filled in. Returns the files, cover letter first.
pub fn format_series(
    layout: &Layout,
    tree: &Path,
    version: u32,
    out: &Path,
    base: &BaseReport,
) -> Result<Vec<PathBuf>> {
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
// Sending

/// The developer's identity for `From:` (the repository's git config).
pub fn sender(layout: &Layout) -> Result<String> {
    let ident = cmd::output(&mut cmd::git(&layout.repo, ["var", "GIT_AUTHOR_IDENT"]))?;
    let ident = ident.trim();
    // "Name <email> 1700000000 +0000": drop the date.
    let end = ident.rfind('>').context("git var GIT_AUTHOR_IDENT has no email")?;
    Ok(ident[..=end].to_string())
}

pub fn send_email(layout: &Layout, files: &[PathBuf], r: &Recipients, o: &Opts) -> Result<()> {
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
