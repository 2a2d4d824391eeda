//! `cargo harness mail --report`: the maintainers-only reports.
//!
//! Documentation/process/security-bugs.rst, for a bug found with AI
//! assistance: the fix goes to the maintainers and the list (it is a patch
//! of the fixes series), the report and the reproducer to the maintainers
//! only, in plain text. Each `patches/fixes/report-*.txt` (first line
//! `Subject: ...`, then the plain-text report with a
//! `Reproducer: patches/local/<file>` line) becomes one mail in
//! `work/mail/report/`: the report, then the reproducer inline after a
//! scissors line (text, not a MIME attachment; `git am --scissors` takes it
//! from the mail), To: the persons `get_maintainer.pl --nol --norolestats`
//! names for the files of the fix the report names. Any recipient that is a
//! mailing list is refused, by name.

use anyhow::{anyhow, bail, Context, Result};
use fs_err as fs;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::checks::{check_stored_patch, touched_files};
use super::forbidden::Forbidden;
use super::recipients::{list_entries, parse_get_maintainer, refuse_lists, SECURITY_TEAM};
use super::{
    file_name, placeholders, prepare_tree, send_email_command, Mailing, Opts, SeriesName, Signing, PLACEHOLDER,
};
use crate::cmd;
use crate::layout::Layout;
use crate::series;

/// The start of the section that security-bugs.rst has the report begin
/// with (recipients, mail client reminder) and the reporter remove.
pub const TEMPORARY_SECTION: &str = "---- temporary section";
/// The items security-bugs.rst calls absolutely necessary in any report.
pub const REQUIRED: &[&str] = &["Affected versions:", "Description:", "Reproducer:", "Conditions:"];
/// The scissors line before the reproducer.
pub const SCISSORS: &str = "------------------------ >8 ------------------------";

/// A parsed report file.
#[derive(Debug, Clone)]
pub struct Report {
    pub subject: String,
    pub body: String,
    /// `patches/local/<file>` as the `Reproducer:` line names it.
    pub reproducer: String,
}

/// Parse a report: `Subject: ...` on the first line, a blank line, the body
/// with the four required items and a `Reproducer: patches/local/<file>`
/// line; plain text (no Markdown headings, emphasis or fences).
pub fn parse_report(text: &str) -> std::result::Result<Report, String> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let subject = first
        .strip_prefix("Subject:")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or("the first line must be `Subject: <summary>`")?
        .to_string();
    let body = rest.trim_matches('\n').to_string();
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|item| !body.lines().any(|l| l.trim_start().starts_with(item)))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing {} (security-bugs.rst: affected versions, description, reproducer and conditions \
             are absolutely necessary in any report)",
            missing.join(", ")
        ));
    }
    for (i, l) in body.lines().enumerate() {
        let t = l.trim_start();
        if t.starts_with("```") || t.starts_with("# ") || t.starts_with("## ") || t.contains("**") {
            return Err(format!(
                "line {}: Markdown (\"{}\"): security-bugs.rst asks for plain text without formatting decorations",
                i + 2,
                l.trim()
            ));
        }
    }
    let line = body
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("Reproducer:"))
        .map(str::trim)
        .unwrap_or_default();
    let reproducer = line.split_whitespace().next().unwrap_or_default().to_string();
    if !reproducer.starts_with("patches/local/") || reproducer.contains("..") || !reproducer.ends_with(".patch") {
        return Err(format!(
            "the Reproducer: line names \"{reproducer}\"; it must name the reproducer patch as \
             `Reproducer: patches/local/<file>.patch`"
        ));
    }
    Ok(Report {
        subject,
        body,
        reproducer,
    })
}

/// Whitespace-normalised text, to find a subject wrapped over lines.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The patches of the fixes stack whose subject the report names (the fix
/// of the bug it reports), as (subject, files).
fn named_fixes(report: &Report, fixes: &series::Stack) -> Result<Vec<(String, Vec<String>)>> {
    let body = flat(&report.body);
    let mut found = Vec::new();
    for p in fixes.paths() {
        let text = fs::read_to_string(&p).with_context(|| p.display().to_string())?;
        if let Some(subject) = series::patch_subject(&text) {
            if body.contains(&flat(&subject)) {
                found.push((subject, touched_files(&text)));
            }
        }
    }
    Ok(found)
}

/// The mail: headers, the report, the reproducer after a scissors line
/// with only its Subject: kept (git am takes the author from the mail).
pub fn compose(report: &Report, sender: &str, reproducer: &str) -> std::result::Result<String, String> {
    let subject = series::patch_subject(reproducer).ok_or("the reproducer has no Subject:")?;
    let start = reproducer.find("\n\n").ok_or("the reproducer has no body")? + 2;
    let mut mail = String::new();
    mail.push_str(&format!("From: {sender}\n"));
    mail.push_str(&format!("Subject: {}\n", report.subject));
    mail.push_str("MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\n");
    mail.push_str(report.body.trim_end());
    mail.push_str(&format!(
        "\n\nThe reproducer patch follows after the scissors line; `git am --scissors`\n\
         applies it on top of the fixes series.\n\n{SCISSORS}\n"
    ));
    mail.push_str(&format!("Subject: {subject}\n\n"));
    mail.push_str(reproducer[start..].trim_end());
    mail.push('\n');
    Ok(mail)
}

fn reports(layout: &Layout) -> Result<Vec<PathBuf>> {
    let dir = layout.patches().join("fixes");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = file_name(p);
            n.starts_with("report-") && n.ends_with(".txt")
        })
        .collect();
    v.sort();
    Ok(v)
}

pub fn run(layout: &Layout, o: &Opts, s: &Signing) -> Result<()> {
    let files = reports(layout)?;
    if files.is_empty() {
        bail!(
            "no report: {}/report-*.txt does not exist. Write one (plain text: first line `Subject: ...`, \
             then the affected versions, description, conditions and a `Reproducer: patches/local/<file>` \
             line, security-bugs.rst) and run --report again",
            layout.patches().join("fixes").display()
        );
    }
    let out = layout.repo.join("work/mail/report");
    fs::create_dir_all(&out)?;
    for e in fs::read_dir(&out)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "mail") {
            fs::remove_file(p)?;
        }
    }
    // The tree the fixes apply to: the MAINTAINERS file get_maintainer reads.
    let fixes = Mailing::new(layout, SeriesName::Fixes, 1)?;
    let unsigned = Signing {
        signoff: false,
        assisted_by: None,
        ..s.clone()
    };
    let prep = prepare_tree(layout, &fixes, &unsigned)?;
    let forbidden = Forbidden::load(layout)?;
    let mut mails = Vec::new();
    for f in &files {
        let name = file_name(f);
        let text = fs::read_to_string(f)?;
        let report = parse_report(&text).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        let repro_path = layout.repo.join(&report.reproducer);
        let repro = fs::read_to_string(&repro_path)
            .with_context(|| format!("{name}: cannot read the reproducer {}", repro_path.display()))?;
        let local_dir = fs::canonicalize(layout.patches().join("local"))?;
        if !fs::canonicalize(&repro_path)?.starts_with(&local_dir) {
            bail!(
                "{name}: the reproducer {} is not in {}",
                repro_path.display(),
                local_dir.display()
            );
        }
        check_stored_patch(&repro).map_err(|e| anyhow!("{}: {e}", report.reproducer))?;
        let fixed = named_fixes(&report, &fixes.stack)?;
        if fixed.is_empty() {
            bail!(
                "{name} names no patch of {} by its subject: say which fix it is (e.g. `Proposed fix: \
                 patch N of the fixes series, \"<subject>\"`), so that the maintainers of its files get the report",
                fixes.stack.dir.display()
            );
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for (_, files) in &fixed {
            touched.extend(files.iter().filter(|f| !f.starts_with(series::SELFTESTS)).cloned());
        }
        if touched.is_empty() {
            bail!("{name}: the fix it names touches only selftests; whose maintainers get the report?");
        }
        let gm = |args: &[&str]| -> Result<String> {
            cmd::output(
                Command::new("perl")
                    .current_dir(&prep.tree)
                    .arg("scripts/get_maintainer.pl")
                    .args(["--no-git", "--no-git-fallback"])
                    .args(args)
                    .arg("-f")
                    .args(&touched),
            )
        };
        // Persons only; the full output tells which addresses are lists.
        let persons = gm(&["--nol", "--norolestats"])?;
        let full = gm(&["--rolestats"])?;
        let lists = list_entries(&parse_get_maintainer(&full));
        let to: Vec<String> = parse_get_maintainer(&persons).into_iter().map(|e| e.addr).collect();
        if to.is_empty() {
            bail!(
                "{name}: get_maintainer.pl names nobody for {}",
                touched.iter().cloned().collect::<Vec<_>>().join(" ")
            );
        }
        // security-bugs.rst: two or fewer recipients, Cc the security team.
        let cc: Vec<String> = if to.len() <= 2 {
            vec![SECURITY_TEAM.to_string()]
        } else {
            Vec::new()
        };
        refuse_lists(to.iter().chain(&cc), &lists).map_err(|e| anyhow!("{name}: {e}"))?;
        let mail = compose(&report, &s.sender.to_string(), &repro).map_err(|e| anyhow!("{name}: {e}"))?;
        forbidden
            .check_mail(&mail, false)
            .map_err(|e| anyhow!("refusing to write the report {name}: {e}"))?;
        let path = out.join(name.replace(".txt", ".mail"));
        fs::write(&path, &mail)?;
        fs::write(
            out.join(name.replace(".txt", ".recipients.txt")),
            format!(
                "To:\n  {}\nCc:\n  {}\n",
                to.join("\n  "),
                if cc.is_empty() {
                    "(none)".into()
                } else {
                    cc.join("\n  ")
                }
            ),
        )?;
        println!("report {name} -> {}", path.display());
        println!("  Subject: {}", report.subject);
        println!(
            "  fix: {}; files: {}",
            fixed
                .iter()
                .map(|(s, _)| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", "),
            touched.iter().cloned().collect::<Vec<_>>().join(" ")
        );
        println!("  reproducer inline: {}", report.reproducer);
        println!(
            "To ({}), get_maintainer.pl --nol --norolestats, persons only:",
            to.len()
        );
        for a in &to {
            println!("  {a}");
        }
        println!("Cc ({}){}", cc.len(), if cc.is_empty() { "" } else { ":" });
        for a in &cc {
            println!("  {a}");
        }
        let mut refusals = Vec::new();
        if mail.contains(TEMPORARY_SECTION) {
            refusals.push(format!(
                "the temporary section (\"{TEMPORARY_SECTION} ...\") is still in {name}: remove it once you \
                 have checked the recipients and your mail client"
            ));
        }
        let left = placeholders(&mail);
        if !left.is_empty() {
            refusals.push(format!(
                "{} place(s) to fill in ({PLACEHOLDER}...]]) in {name}:\n    {}",
                left.len(),
                left.join("\n    ")
            ));
        }
        for r in &refusals {
            eprintln!("warning: {r}");
        }
        mails.push((name, path, to, cc, refusals));
    }
    if o.check_only {
        eprintln!(
            "--check-only: not running git send-email; the report(s) are in {}",
            out.display()
        );
        return Ok(());
    }
    if o.send {
        let all: Vec<String> = mails.iter().flat_map(|m| m.4.clone()).collect();
        if !all.is_empty() {
            bail!("refusing to send the report(s):\n  {}", all.join("\n  "));
        }
    }
    for (name, path, to, cc, _) in &mails {
        send_report(&prep.tree, &out, name, path, to, cc, s, o)?;
    }
    Ok(())
}

/// `git send-email` of one report: nobody but `to` and `cc` (no Cc taken
/// from the body: the reproducer's trailers must not add anyone), a dry run
/// unless --send. The addresses send-email says it would use are checked
/// for lists again.
#[allow(clippy::too_many_arguments)]
fn send_report(
    tree: &Path,
    out: &Path,
    name: &str,
    path: &Path,
    to: &[String],
    cc: &[String],
    s: &Signing,
    o: &Opts,
) -> Result<()> {
    let mut c = send_email_command(tree, &s.sender, to, cc, o)?;
    c.args(["--suppress-cc=all", "--no-signed-off-by-cc", "--no-thread"]);
    c.arg(path);
    let text = cmd::output(&mut c)?;
    let log = out.join(format!(
        "{}.{}",
        name.trim_end_matches(".txt"),
        if o.send {
            "send-email.log"
        } else {
            "send-email-dry-run.log"
        }
    ));
    fs::write(&log, &text)?;
    // What send-email would really use: To:, Cc: and RCPT TO lines.
    let mut used: Vec<String> = Vec::new();
    for l in text.lines() {
        for k in ["To: ", "Cc: ", "RCPT TO:"] {
            if let Some(v) = l.strip_prefix(k) {
                used.extend(v.split(',').map(|a| a.trim().to_string()).filter(|a| a.contains('@')));
            }
        }
    }
    refuse_lists(&used, &BTreeSet::new()).map_err(|e| anyhow!("{name}: git send-email would use it: {e}"))?;
    for l in text
        .lines()
        .filter(|l| l.starts_with("Subject: ") || l.starts_with("Dry-OK") || l.starts_with("OK."))
    {
        println!("  {l}");
    }
    if o.send {
        println!("sent the report {name}; log {}", log.display());
    } else {
        println!(
            "dry run: the report {name} to {} + {} Cc, no list; full log {}\nto really send (after removing the \
             temporary section and filling in every [[...]]): cargo harness mail --report --send --smtp-server HOST",
            to.len(),
            cc.len(),
            log.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::checks::headers;

    const REPRO: &str = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n\
        From: Seed ad2b398b maintainers\n <maintainers@users.noreply.r-seed-ad2b398b.example>\n\
        Date: Tue, 1 Dec 2026 21:34:14 +0000\n\
        Subject: [PATCH] LOCAL: selftests/mm: collapse_retract_race: race\n MADV_DONTNEED of the whole PMD range\n\n\
        Not for a public list.\n---\n x.c | 1 +\n\n\
        diff --git a/tools/testing/selftests/mm/x.c b/tools/testing/selftests/mm/x.c\n\
        --- a/tools/testing/selftests/mm/x.c\n+++ b/tools/testing/selftests/mm/x.c\n\
        @@ -1 +1,2 @@\n a\n+\t\tif (!madvise(r->area, r->pmd_size, MADV_DONTNEED))\n";

    fn report_text() -> String {
        "Subject: mm/khugepaged: a table freed twice (reproducer)\n\n\
         ---- temporary section: remove before sending ----\nRecipients: the maintainers.\n\
         ---- end of the temporary section ----\n\n\
         Affected versions: 7.3.4.\n\nConditions: ptl == pml.\n\nDescription: step 4.\n\n\
         Reproducer: patches/local/0003-LOCAL-selftests-mm-x.patch\n(a variant)\n\n\
         Proposed fix: patch 3 of the fixes series, \"mm/khugepaged: recheck the\npmd after relocking\"\n"
            .to_string()
    }

    #[test]
    fn a_report_parses_and_becomes_a_plain_text_mail_with_the_reproducer_inline() {
        let r = parse_report(&report_text()).unwrap();
        assert_eq!(r.subject, "mm/khugepaged: a table freed twice (reproducer)");
        assert_eq!(r.reproducer, "patches/local/0003-LOCAL-selftests-mm-x.patch");
        assert!(flat(&r.body).contains("\"mm/khugepaged: recheck the pmd after relocking\""));
        let mail = compose(&r, "Jane Developer <jane@kernel-dev.org>", REPRO).unwrap();
        let h = headers(&mail);
        assert_eq!(
            super::super::checks::header(&h, "Subject"),
            Some("mm/khugepaged: a table freed twice (reproducer)")
        );
        assert_eq!(
            super::super::checks::header(&h, "From"),
            Some("Jane Developer <jane@kernel-dev.org>")
        );
        assert!(!mail.contains("Content-Disposition") && !mail.contains("multipart"));
        let (report, repro) = mail.split_once(&format!("\n{SCISSORS}\n")).unwrap();
        assert!(report.contains("Affected versions: 7.3.4."));
        assert!(repro.starts_with(
            "Subject: LOCAL: selftests/mm: collapse_retract_race: race MADV_DONTNEED of the whole PMD range\n\n"
        ));
        assert!(repro.contains("+\t\tif (!madvise(r->area, r->pmd_size, MADV_DONTNEED))\n"));
        // No mbox separator, no placeholder author in the mail.
        assert!(!mail.contains("\nFrom 0000000000000000000000000000000000000000"));
        assert!(!mail.contains("users.noreply"));
    }

    #[test]
    fn a_report_without_the_required_items_or_in_markdown_is_refused() {
        let t = report_text();
        assert!(parse_report(&t.replace("Conditions:", "When:"))
            .unwrap_err()
            .contains("missing Conditions:"));
        assert!(parse_report(&t.replacen("Subject: ", "", 1))
            .unwrap_err()
            .contains("first line"));
        assert!(
            parse_report(&t.replace("Description: step 4.", "Description: step 4.\n\n## Notes"))
                .unwrap_err()
                .contains("Markdown")
        );
        assert!(
            parse_report(&t.replace("Description: step 4.", "Description: **step 4**."))
                .unwrap_err()
                .contains("Markdown")
        );
        for bad in [
            "patches/private/exploit.patch",
            "patches/local/../private/x.patch",
            "/tmp/x.patch",
            "patches/local/notes.txt",
        ] {
            let e = parse_report(&t.replace("patches/local/0003-LOCAL-selftests-mm-x.patch", bad)).unwrap_err();
            assert!(e.contains("patches/local/<file>.patch"), "{bad}: {e}");
        }
    }

    #[test]
    fn no_report_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("patches/fixes")).unwrap();
        let layout = Layout::new(dir.path().to_path_buf(), dir.path().join("cache"));
        let o = <Opts as clap::FromArgMatches>::from_arg_matches(
            &<Opts as clap::Args>::augment_args(clap::Command::new("mail")).get_matches_from(["mail", "--report"]),
        )
        .unwrap();
        let s = Signing {
            sender: super::super::identity::Identity::parse("Jane Developer <jane@kernel-dev.org>").unwrap(),
            source: "test".into(),
            problem: None,
            signoff: false,
            assisted_by: None,
        };
        let e = run(&layout, &o, &s).unwrap_err().to_string();
        assert!(e.starts_with("no report:") && e.contains("report-*.txt"), "{e}");
        assert!(!dir.path().join("work").exists(), "nothing prepared");
    }

    #[test]
    fn the_repository_reports_parse() {
        let layout = Layout::discover();
        for f in reports(&layout).unwrap() {
            let r = parse_report(&fs::read_to_string(&f).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(
                layout.repo.join(&r.reproducer).is_file(),
                "{}: {} does not exist",
                f.display(),
                r.reproducer
            );
            let fixes = series::fixes(&layout).unwrap();
            assert!(!named_fixes(&r, &fixes).unwrap().is_empty(), "{}", f.display());
        }
    }
}
