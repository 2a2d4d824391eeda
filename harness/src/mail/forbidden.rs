//! What never goes to a public list: the files of `patches/local/` (the
//! maintainers-only report may carry their reproducer) and `patches/private/`
//! (never in any mail), recognised in a mail by their significant lines.

use anyhow::Result;
use fs_err as fs;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::checks::strip_tags;
use crate::layout::Layout;
use crate::series;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
