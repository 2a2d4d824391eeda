//! The mail tree of a series and `git format-patch`: a clone of the base with
//! the stacks below and then the series applied, signed off on request, and
//! rendered with its filled-in cover letter.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::cmd;
use crate::layout::{Layout, BASE_TAG};
use crate::series;

#[derive(Debug, Clone)]
pub struct Prerequisite {
    /// The cover-letter subject of the series below.
    pub subject: String,
    /// The number of its patches (one `prerequisite-patch-id:` each).
    pub patches: usize,
}

pub fn prerequisite(m: &Mailing) -> Result<Option<Prerequisite>> {
    let Some(b) = m.below.last() else {
        return Ok(None);
    };
    Ok(Some(Prerequisite {
        subject: b.cover_subject()?,
        patches: m.stacks_below().iter().map(|s| s.patches.len()).sum(),
    }))
}

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

/// The cover letter's subject and body from the template (first line, blank line, body):
/// `{{base}}` becomes the base statement (with the prerequisite), or it is appended.
pub fn cover_blurb(template: &str, base: &BaseReport, prereq: Option<&Prerequisite>) -> Result<(String, String)> {
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
    Ok((subject.to_string(), body))
}

/// Fill format-patch's cover letter: subject and blurb from the template
/// (first line, blank line, body; `{{base}}` becomes the base statement,
/// or it is appended), and the upstream commit, once known, in the
/// `base-commit:` trailer that `--base` wrote (inserted before the
/// signature if there is none).
pub fn fill_cover(generated: &str, template: &str, base: &BaseReport, prereq: Option<&Prerequisite>) -> Result<String> {
    let (subject, body) = cover_blurb(template, base, prereq)?;
    for marker in ["*** SUBJECT HERE ***", "*** BLURB HERE ***"] {
        if !generated.contains(marker) {
            bail!("format-patch's cover letter has no `{marker}`");
        }
    }
    let mut text = generated
        .replacen("*** SUBJECT HERE ***", &subject, 1)
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

#[cfg(test)]
mod tests {
    use super::super::base::*;
    use super::*;
    use crate::mail::checks::Expect;

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
