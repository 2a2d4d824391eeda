//! The checks a mailed patch must pass: subject style, trailers, checkpatch,
//! kernel-doc, and a build of every patch in turn.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::recipients::email_of;
use super::SYSTEM_PYTHON;
use crate::build;
use crate::cmd;
use crate::config;
use crate::layout::{Layout, BASE_TAG};
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

pub fn checkpatch(tree: &Path, patch: &Path, dict: &Path) -> Result<()> {
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
/// the warnings that the base version of the file did not have.
pub fn kernel_doc(tree: &Path) -> Result<Vec<String>> {
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

pub fn build_check(layout: &Layout, tree: &Path, commits: &[String]) -> Result<()> {
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

    #[test]
    fn mail_checks_on_the_first_real_patch() {
        let text = include_str!("../../tests/fixtures/mail-patch-0001-selftest.patch");
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
}
