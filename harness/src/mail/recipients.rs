//! Recipients: get_maintainer.pl output, To and Cc.

use std::collections::BTreeSet;

/// Everyone else get_maintainer names is Cc.
pub const TO_LIST: &str = "linux-mm@kvack.org";
pub const TO_AKPM: &str = "Andrew Morton <akpm@linux-foundation.org>";

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
    /// Named by get_maintainer only for a `K:` keyword match (a word such as "llvm" or
    /// "riscv" anywhere in a commit message or a changed line), not for a file the series
    /// touches: left out, and printed as such.
    pub keyword_only: Vec<Entry>,
}

/// Whether get_maintainer names the entry only through `K:` keyword matches: every one of
/// its comma-separated roles is a `...:Keyword:...` one.
pub fn keyword_only(e: &Entry) -> bool {
    !e.role.is_empty() && e.role.split(',').all(|r| r.contains(":Keyword:"))
}

/// To: linux-mm and Andrew Morton; Cc: everyone else get_maintainer names for the files
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
    let (by_keyword, by_file): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|e| keyword_only(e));
    for a in by_file.iter().map(|e| e.addr.as_str()).chain(extra.iter().copied()) {
        if seen.insert(email_of(a)) {
            r.cc.push(a.to_string());
        }
    }
    r.keyword_only = by_keyword
        .into_iter()
        .filter(|e| !seen.contains(&email_of(&e.addr)))
        .cloned()
        .collect();
    r
}

pub fn print_recipients(r: &Recipients, entries: &[Entry]) {
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
    if !r.keyword_only.is_empty() {
        println!(
            "Not Cc'd ({}): get_maintainer names them only for a keyword in the text, not for a file:",
            r.keyword_only.len()
        );
        for e in &r.keyword_only {
            println!("  {}  [{}]", e.addr, e.role);
        }
    }
}

/// The address inside `Name <addr>` (or the whole thing).
pub fn email_of(addr: &str) -> String {
    match (addr.rfind('<'), addr.rfind('>')) {
        (Some(a), Some(b)) if a < b => addr[a + 1..b].trim().to_ascii_lowercase(),
        _ => addr.trim().to_ascii_lowercase(),
    }
}

/// The Linux kernel security team (Documentation/process/security-bugs.rst):
/// Cc'd on a report that has two or fewer recipients.
pub const SECURITY_TEAM: &str = "Linux kernel security team <security@kernel.org>";

/// Why `addr` is a mailing list, if it is: one that get_maintainer lists
/// (`lists`: the addresses of its list entries), or an address on a list
/// host (vger.kernel.org, kvack.org, lists.*, lore).
pub fn list_reason(addr: &str, lists: &BTreeSet<String>) -> Option<String> {
    let email = email_of(addr);
    if lists.contains(&email) {
        return Some("get_maintainer.pl lists it as a mailing list".into());
    }
    let domain = email.rsplit_once('@').map_or("", |(_, d)| d).trim_end_matches('.');
    let on = |host: &str| domain == host || domain.ends_with(&format!(".{host}"));
    if on("vger.kernel.org") {
        return Some("@vger.kernel.org hosts the kernel's mailing lists".into());
    }
    if on("kvack.org") {
        return Some("@kvack.org hosts linux-mm".into());
    }
    if domain.starts_with("lists.") || domain.contains(".lists.") {
        return Some(format!("{domain} is a list server (lists.*)"));
    }
    if domain.split('.').any(|label| label == "lore") || email.contains("lore.kernel.org") {
        return Some("lore is the public archive".into());
    }
    None
}

/// The addresses get_maintainer marks as lists (`--rolestats` output:
/// "open list", "moderated list", ...).
pub fn list_entries(entries: &[Entry]) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| e.role.split(':').next().unwrap_or_default().contains("list"))
        .map(|e| email_of(&e.addr))
        .collect()
}

/// Refuse any recipient that is a mailing list, naming it: a report and its
/// reproducer go to the maintainers only (security-bugs.rst).
pub fn refuse_lists<'a>(
    addrs: impl IntoIterator<Item = &'a String>,
    lists: &BTreeSet<String>,
) -> std::result::Result<(), String> {
    for a in addrs {
        if let Some(why) = list_reason(a, lists) {
            return Err(format!(
                "refusing to address the report to {a}: it is a mailing list ({why});                  a report and its reproducer go to the maintainers only (security-bugs.rst)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    const GM_SELFTEST: &str = include_str!("../../tests/fixtures/get_maintainer-0001-selftest.txt");
    const GM_SERIES: &str = include_str!("../../tests/fixtures/get_maintainer-series-files.txt");

    #[test]
    fn mailing_lists_are_refused_by_name() {
        let lists = list_entries(&parse_get_maintainer(GM_SELFTEST));
        assert!(lists.contains("linux-mm@kvack.org"), "{lists:?}");
        assert!(lists.contains("linux-kselftest@vger.kernel.org"), "{lists:?}");
        assert!(!lists.contains("akpm@linux-foundation.org"));
        let none = BTreeSet::new();
        for (addr, why) in [
            ("linux-mm@kvack.org", "kvack.org"),
            ("linux-kernel@vger.kernel.org", "vger.kernel.org"),
            ("Some List <linux-arm-kernel@lists.infradead.org>", "lists.*"),
            ("x@lists.linux.dev", "lists.*"),
            ("archive@lore.kernel.org", "lore"),
        ] {
            let e = refuse_lists(&[addr.to_string()], &none).expect_err(addr);
            assert!(e.contains(addr) && e.contains(why), "{addr}: {e}");
        }
        // A list only get_maintainer knows as one.
        let e = refuse_lists(
            &["odd-list@example-host.org".to_string()],
            &["odd-list@example-host.org".to_string()].into(),
        )
        .unwrap_err();
        assert!(e.contains("get_maintainer.pl lists it"), "{e}");
        let people: Vec<String> = [
            "Andrew Morton <akpm@linux-foundation.org>",
            "David Hildenbrand <david@kernel.org>",
            SECURITY_TEAM,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        refuse_lists(&people, &lists).unwrap();
        // The first list among persons is the one named.
        let mut mixed = people.clone();
        mixed.push("linux-mm@kvack.org".into());
        assert!(refuse_lists(&mixed, &lists).unwrap_err().contains("linux-mm@kvack.org"));
    }

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
        // Keyword-only entries (CLANG/LLVM for the word "llvm" in a message) are left out;
        // one that a file names too stays.
        let kw = |addr: &str, role: &str| Entry {
            addr: addr.into(),
            role: role.into(),
        };
        let mut with_kw = e.clone();
        with_kw.push(kw(
            "Nathan Chancellor <nathan@kernel.org>",
            "maintainer:CLANG/LLVM BUILD SUPPORT:Keyword:\\b(?i:clang|llvm)\\b",
        ));
        with_kw.push(kw(
            "llvm@lists.linux.dev",
            "open list:CLANG/LLVM BUILD SUPPORT:Keyword:x",
        ));
        with_kw.push(kw(
            "Miguel Ojeda <ojeda@kernel.org>",
            "maintainer:RUST,maintainer:RUST:Keyword:\\b(?i:rust)\\b",
        ));
        let k = recipients(&with_kw, &[]);
        assert!(
            !k.cc.iter().any(|a| a.contains("nathan@") || a.contains("llvm@")),
            "{:?}",
            k.cc
        );
        assert_eq!(k.keyword_only.len(), 2, "{:?}", k.keyword_only);
        assert!(k.cc.iter().any(|a| a.contains("ojeda@")));
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
}
