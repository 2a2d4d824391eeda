//! The checks of a patch mail and a cover letter: subject style and
//! trailers (no Signed-off-by in a stored patch; with `--signoff` the
//! sender's as the last trailer), and what a cover letter must say.

use std::collections::BTreeSet;

use super::identity::Identity;
use super::recipients::email_of;
use crate::series;

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

/// What a reviewer checks first in a mail: its `From:`, the in-body `From:` (the author,
/// when not the sender), the subject and the trailer block, one line each.
pub fn mail_summary(text: &str) -> Vec<String> {
    let h = headers(text);
    let mut v = vec![
        format!("From: {}", header(&h, "From").unwrap_or("(none)")),
        format!("Subject: {}", header(&h, "Subject").unwrap_or("(none)")),
    ];
    let body = text.find("\n\n").map_or("", |i| &text[i + 2..]);
    v.push(match body.lines().next().and_then(|l| l.strip_prefix("From: ")) {
        Some(author) => format!("in-body From: {author}"),
        None => "in-body From: none (the sender is the author)".to_string(),
    });
    let trailers = commit_message(text).map(trailer_block).unwrap_or_default();
    if trailers.is_empty() {
        v.push("trailers: none".into());
    }
    v.extend(trailers.iter().map(|t| format!("  {t}")));
    v
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
    fn small_parsers() {
        assert_eq!(patch_number("[RFC PATCH v2 03/12] mm: x"), Some((3, 12)));
        assert_eq!(patch_number("[RFC PATCH v1 0/1] cover"), Some((0, 1)));
        assert_eq!(patch_number("mm: x"), None);
        assert_eq!(strip_tags("[RFC PATCH v2 3/9] mm: x"), "mm: x");
    }

    #[test]
    fn a_mail_summary_names_sender_author_and_trailers() {
        let m = "From: Jane Developer <jane@kernel-dev.org>\nSubject: [RFC PATCH v1 4/6] mm: x\n\n\
                 From: Someone Else <else@kernel-dev.org>\n\nWhy.\n\n\
                 Suggested-by: Jann Horn <jannh@google.com>\n\
                 Signed-off-by: Jane Developer <jane@kernel-dev.org>\n---\n a | 1 +\n";
        assert_eq!(
            mail_summary(m),
            [
                "From: Jane Developer <jane@kernel-dev.org>",
                "Subject: [RFC PATCH v1 4/6] mm: x",
                "in-body From: Someone Else <else@kernel-dev.org>",
                "  Suggested-by: Jann Horn <jannh@google.com>",
                "  Signed-off-by: Jane Developer <jane@kernel-dev.org>",
            ]
        );
        let bare = "From: A <a@kernel-dev.org>\nSubject: s\n\nWhy.\n---\n";
        assert_eq!(mail_summary(bare)[2], "in-body From: none (the sender is the author)");
        assert_eq!(mail_summary(bare)[3], "trailers: none");
    }
}
