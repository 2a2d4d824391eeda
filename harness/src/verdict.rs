//! The verdict of one guest run: per-test results from the tests' KTAP
//! output, KUnit results and kernel splats from the console, and the checks
//! that make a run count (every case finished, enough CPUs, no timeout).

use crate::ab;
use crate::ktap::{self, Status, TestLine};

#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub name: String,
    pub exit_code: Option<i32>,
    /// How long it ran, by the guest's clock (`KHRS-END ... seconds=S`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    pub plan: Option<u32>,
    pub tests: Vec<TestLine>,
    /// Why this case fails as a whole (no end marker, bad exit, short plan).
    pub problems: Vec<String>,
    /// Raw output, kept only for counter reads (`@stats` cases).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
    /// The last lines the case printed: the verdict shows them under a failed
    /// case, so that a CI log says why a program stopped, not only that it did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<String>,
}

/// How many of a case's last output lines the verdict keeps ([`CaseResult::tail`]).
pub const TAIL_LINES: usize = 12;

#[derive(Debug, Clone, serde::Serialize)]
pub struct SuiteResult {
    pub name: String,
    pub status: Status,
    pub pass: u32,
    pub fail: u32,
    pub skip: u32,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Splat {
    pub line: usize,
    pub text: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub cpus: Option<u32>,
    pub cases: Vec<CaseResult>,
    pub kunit: Vec<SuiteResult>,
    pub splats: Vec<Splat>,
    pub problems: Vec<String>,
    /// Counters of the C/Rust switch after each block, when it was used.
    pub counters: Vec<(String, ab::Counters)>,
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.skipped == 0 && self.splats.is_empty() && self.problems.is_empty()
    }
}

/// Kernel log lines that mean something went wrong in the kernel.
const SPLAT_STARTS: &[&str] = &[
    "BUG:",
    "WARNING:",
    "INFO: ",
    "Oops",
    "kernel BUG at",
    "Kernel panic",
    "general protection fault",
    "UBSAN:",
    "------------[ cut here ]------------",
    "Unable to handle kernel",
    // arm64's die(): "Internal error: Oops: 0000000096000004 [#1] SMP".
    "Internal error:",
    "SError Interrupt",
];
const SPLAT_CONTAINS: &[&str] = &[
    "Bad rss-counter",
    "Bad page state",
    "Bad page map",
    "DEBUG_LOCKS_WARN_ON",
    "KASAN:",
    "rcu: INFO:",
    "page_table_check: ",
    "circular locking dependency",
    "possible recursive locking",
    "inconsistent lock state",
    "suspicious RCU usage",
    "lockdep is turned off",
];

/// Strip the printk timestamp `[    1.234567] `; `None` for lines without
/// one (userspace writes to the console, continuation fragments).
pub fn kernel_text(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let (ts, text) = rest.split_once("] ")?;
    ts.trim().parse::<f64>().ok()?;
    Some(text)
}

pub fn splats(console: &str) -> Vec<Splat> {
    console
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let t = kernel_text(l)?.trim_start();
            let hit = SPLAT_STARTS.iter().any(|s| t.starts_with(s)) || SPLAT_CONTAINS.iter().any(|s| t.contains(s));
            hit.then(|| Splat {
                line: i + 1,
                text: t.to_string(),
            })
        })
        .collect()
}

/// KUnit suites from the JSON of the tree's own parser (`tools/testing/kunit/kunit.py parse
/// --json`, which reads the KTAP in the kernel log, nested as KUnit nests it): one result per
/// top-level suite, with the test cases of it and of its sub-groups counted. A case is PASS,
/// SKIP, or else (FAIL, ERROR: crashed) a failure.
pub fn kunit_suites(json: &serde_json::Value) -> Vec<SuiteResult> {
    fn count(g: &serde_json::Value, r: &mut SuiteResult) {
        for c in g["test_cases"].as_array().into_iter().flatten() {
            match c["status"].as_str() {
                Some("PASS") => r.pass += 1,
                Some("SKIP") => r.skip += 1,
                _ => r.fail += 1,
            }
        }
        for sub in g["sub_groups"].as_array().into_iter().flatten() {
            count(sub, r);
        }
        let misc = |k: &str| g["misc"][k].as_u64().unwrap_or(0);
        if misc("crashed") + misc("errors") > 0 && r.fail == 0 {
            r.status = Status::Fail;
        }
    }
    json["sub_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let mut r = SuiteResult {
                name: g["name"].as_str().unwrap_or("?").to_string(),
                status: Status::Pass,
                pass: 0,
                fail: 0,
                skip: 0,
            };
            count(g, &mut r);
            if r.fail > 0 {
                r.status = Status::Fail;
            } else if r.pass == 0 && r.skip > 0 {
                r.status = Status::Skip;
            }
            r
        })
        .collect()
}

/// One command's output in the tests log, between the guest's
/// `KHRS-BEGIN n name` and `KHRS-END n rc=N seconds=S` markers.
#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub exit_code: Option<i32>,
    pub seconds: Option<f64>,
    pub lines: Vec<String>,
}

/// The guest's tests log: CPU count, whether the list finished
/// (`KHRS-DONE`), and one section per command.
pub fn split_sections(tests_log: &str) -> (Option<u32>, bool, Vec<Section>) {
    let mut cpus = None;
    let mut done = false;
    let mut out: Vec<Section> = Vec::new();
    let mut open = false;
    for line in tests_log.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(n) = line.strip_prefix("KHRS-CPUS ") {
            cpus = n.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("KHRS-BEGIN ") {
            let name = rest.split_once(' ').map(|(_, n)| n).unwrap_or("").to_string();
            out.push(Section {
                name,
                exit_code: None,
                seconds: None,
                lines: Vec::new(),
            });
            open = true;
        } else if let Some(rest) = line.strip_prefix("KHRS-END ") {
            if let Some(c) = out.last_mut() {
                let field = |k: &str| rest.split_whitespace().find_map(|w| w.strip_prefix(k));
                c.exit_code = field("rc=").and_then(|rc| rc.parse().ok());
                c.seconds = field("seconds=").and_then(|t| t.parse().ok());
            }
            open = false;
        } else if line == "KHRS-DONE" {
            done = true;
        } else if open {
            out.last_mut().expect("open section").lines.push(line.to_string());
        }
    }
    (cpus, done, out)
}

/// Parse one section: its KTAP results, plan and kselftest totals
/// (counter reads keep their raw lines instead).
fn parse_section(sec: Section) -> CaseResult {
    let mut c = CaseResult {
        name: sec.name,
        exit_code: sec.exit_code,
        seconds: sec.seconds,
        plan: None,
        tests: Vec::new(),
        problems: Vec::new(),
        output: Vec::new(),
        tail: sec.lines[sec.lines.len().saturating_sub(TAIL_LINES)..].to_vec(),
    };
    if c.name.starts_with(ab::STATS_PREFIX) {
        c.output = sec.lines;
        return c;
    }
    for line in &sec.lines {
        // Only top-level results: nested (indented) subtests belong to
        // their parent's line.
        if let Some(r) = ktap::parse_result(line) {
            c.tests.push(r);
        } else if let Some(p) = ktap::parse_plan(line) {
            c.plan.get_or_insert(p);
        } else if let Some(totals) = line.strip_prefix("# Totals: ").and_then(|_| ktap::parse_totals(line)) {
            // kselftest's own count must agree with the lines we parsed.
            let get = |k: &str| totals.iter().find(|(kk, _)| kk == k).map(|(_, v)| *v).unwrap_or(0);
            let count = |st| c.tests.iter().filter(|t| t.status == st).count() as u32;
            let (p, f, s) = (get("pass"), get("fail") + get("error") + get("xpass"), get("skip"));
            if (p, f, s) != (count(Status::Pass), count(Status::Fail), count(Status::Skip)) {
                c.problems.push(format!(
                    "kselftest totals pass:{p} fail:{f} skip:{s} disagree with the result lines"
                ));
            }
        }
    }
    c
}

/// Split the tests log into cases by the guest's markers and parse each.
pub fn cases(tests_log: &str, expected: &[String]) -> (Option<u32>, Vec<CaseResult>, Vec<String>) {
    let (cpus, done, sections) = split_sections(tests_log);
    let mut cases: Vec<CaseResult> = sections.into_iter().map(parse_section).collect();
    let mut problems = Vec::new();
    if !done {
        problems.push("the guest did not finish its test list (no KHRS-DONE): hang, crash or timeout".into());
    }
    for c in &mut cases {
        match c.exit_code {
            None => c.problems.push("did not finish".into()),
            // kselftest exit codes: 0 pass, 4 skip (reported per test).
            Some(0) | Some(4) => {}
            Some(rc) => c.problems.push(format!("exit code {rc}")),
        }
        if let Some(p) = c.plan {
            if c.tests.len() as u32 != p {
                c.problems
                    .push(format!("planned {p} tests, reported {}", c.tests.len()));
            }
        }
    }
    for e in expected {
        if !cases.iter().any(|c| &c.name == e) {
            problems.push(format!("case `{e}` never started"));
        }
    }
    (cpus, cases, problems)
}

pub fn judge(
    tests_log: &str,
    console: &str,
    kunit: Vec<SuiteResult>,
    expected: &[String],
    min_cpus: u32,
    timed_out: bool,
    impls: &[ab::Impl],
) -> Verdict {
    let (cpus, all, mut problems) = cases(tests_log, expected);
    let (stats, cases): (Vec<CaseResult>, Vec<CaseResult>) =
        all.into_iter().partition(|c| c.name.starts_with(ab::STATS_PREFIX));
    let counters: Vec<(String, ab::Counters)> = stats
        .iter()
        .map(|c| (c.name[ab::STATS_PREFIX.len()..].to_string(), ab::parse_stats(&c.output)))
        .collect();
    if !impls.is_empty() {
        problems.extend(ab::check(&counters, impls));
    }
    if timed_out {
        problems.insert(0, "the guest was killed at the timeout".into());
    }
    match cpus {
        Some(n) if n < min_cpus => problems.push(format!("the guest ran on {n} CPU(s), {min_cpus} required")),
        None => problems.push("the guest never reported its CPU count".into()),
        _ => {}
    }
    let splats = splats(console);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for c in &cases {
        if c.tests.is_empty() {
            // Plain commands count by exit code.
            match c.exit_code {
                Some(0) => passed += 1,
                Some(4) => skipped += 1,
                _ => failed += 1,
            }
            continue;
        }
        for t in &c.tests {
            match t.status {
                Status::Pass => passed += 1,
                Status::Fail => failed += 1,
                Status::Skip => skipped += 1,
            }
        }
        if !c.problems.is_empty() {
            failed += 1;
        }
    }
    for s in &kunit {
        passed += s.pass;
        failed += s.fail;
        skipped += s.skip;
        if s.status == Status::Fail && s.fail == 0 {
            failed += 1;
        }
    }
    Verdict {
        cpus,
        cases,
        kunit,
        splats,
        problems,
        counters,
        passed,
        failed,
        skipped,
    }
}

/// One verdict of the guests of a run split over several (`--guests`): each guest's cases,
/// KUnit suites, counters, splats and problems under its label, the counts summed, the
/// fewest CPUs any guest had. It passes only if every guest's verdict did.
pub fn merge(parts: Vec<(String, Verdict)>) -> Verdict {
    let mut m = Verdict {
        cpus: None,
        cases: Vec::new(),
        kunit: Vec::new(),
        splats: Vec::new(),
        problems: Vec::new(),
        counters: Vec::new(),
        passed: 0,
        failed: 0,
        skipped: 0,
    };
    for (label, v) in parts {
        m.cpus = match (m.cpus, v.cpus) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        m.cases.extend(v.cases.into_iter().map(|mut c| {
            c.name = format!("{label} {}", c.name);
            c
        }));
        m.kunit.extend(v.kunit.into_iter().map(|mut k| {
            k.name = format!("{label} {}", k.name);
            k
        }));
        m.splats.extend(v.splats.into_iter().map(|mut sp| {
            sp.text = format!("{label}: {}", sp.text);
            sp
        }));
        m.problems
            .extend(v.problems.into_iter().map(|p| format!("{label}: {p}")));
        m.counters
            .extend(v.counters.into_iter().map(|(l, c)| (format!("{label} {l}"), c)));
        m.passed += v.passed;
        m.failed += v.failed;
        m.skipped += v.skipped;
    }
    m
}

/// Human summary; the last line is `N passed, N failed, N skipped`.
pub fn render(v: &Verdict) -> String {
    let mut s = String::new();
    for c in &v.cases {
        let count = |st| c.tests.iter().filter(|t| t.status == st).count();
        let mark = if c.problems.is_empty() && count(Status::Fail) == 0 && count(Status::Skip) == 0 {
            "PASS"
        } else {
            "FAIL"
        };
        s.push_str(&format!(
            "{mark} {:<40} {} passed, {} failed, {} skipped{}{}\n",
            c.name,
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Skip),
            c.seconds.map(|t| format!(", {t:.1} s")).unwrap_or_default(),
            if c.problems.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.problems.join("; "))
            }
        ));
        for t in c.tests.iter().filter(|t| t.status != Status::Pass) {
            s.push_str(&format!(
                "     {:?}: {} {}\n",
                t.status,
                t.name,
                t.reason.clone().unwrap_or_default()
            ));
        }
        if mark == "FAIL" && !c.tail.is_empty() {
            s.push_str(&format!("     its last {} lines of output:\n", c.tail.len()));
            for l in &c.tail {
                s.push_str(&format!("     | {l}\n"));
            }
        }
    }
    for k in &v.kunit {
        s.push_str(&format!(
            "{} kunit {:<34} {} passed, {} failed, {} skipped\n",
            if k.status == Status::Fail { "FAIL" } else { "PASS" },
            k.name,
            k.pass,
            k.fail,
            k.skip
        ));
    }
    for (label, c) in &v.counters {
        let show: Vec<String> = c.iter().map(|(k, n)| format!("{k}={n}")).collect();
        s.push_str(&format!("counters after {label}: {}\n", show.join(" ")));
    }
    if let Some(n) = v.cpus {
        s.push_str(&format!("guest CPUs: {n}\n"));
    }
    for sp in v.splats.iter().take(20) {
        s.push_str(&format!("SPLAT console line {}: {}\n", sp.line, sp.text));
    }
    for p in &v.problems {
        s.push_str(&format!("PROBLEM: {p}\n"));
    }
    s.push_str(&format!("{} splats\n", v.splats.len()));
    s.push_str(&format!(
        "{} passed, {} failed, {} skipped\n",
        v.passed, v.failed, v.skipped
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const TESTS: &str = include_str!("../tests/fixtures/tests-base-default.log");
    const CONSOLE: &str = include_str!("../tests/fixtures/console-base-default.log");

    fn six() -> Vec<String> {
        crate::guest::khugepaged_cases(include_str!("../tests/fixtures/run_vmtests-7.3.4.sh"))
            .into_iter()
            .map(|c| c.name)
            .collect()
    }

    /// A real run of the unpatched base (7.3.4, TCG, 2 vCPUs) in which
    /// `khugepaged -s 2` bailed out after its first test.
    #[test]
    fn real_run_with_a_bail_out() {
        let v = judge(TESTS, CONSOLE, kunit_of_console(), &six(), 2, false, &[]);
        assert_eq!(v.cpus, Some(2));
        assert_eq!(v.cases.len(), 6);
        let s2 = &v.cases[1];
        assert_eq!(s2.name, "khugepaged -s 2");
        assert_eq!(s2.exit_code, Some(1));
        assert_eq!(s2.plan, Some(26));
        assert_eq!(s2.tests.len(), 1);
        assert!(
            s2.problems.iter().any(|p| p.contains("planned 26")),
            "{:?}",
            s2.problems
        );
        assert_eq!(v.cases[0].tests.len(), 26);
        assert!(v.cases[0].problems.is_empty());
        assert_eq!(v.cases[5].name, "khugepaged all:file /mnt/file");
        assert_eq!(v.cases[5].tests.len(), 31);
        assert!(v.splats.is_empty(), "{:?}", v.splats);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert!(!v.ok());
        assert!(
            render(&v).ends_with("442 passed, 1 failed, 0 skipped\n"),
            "{}",
            render(&v)
        );
    }

    /// What kunit.py parse --json made of CONSOLE.
    fn kunit_of_console() -> Vec<SuiteResult> {
        let json = include_str!("../tests/fixtures/kunit-console-base-default.json");
        kunit_suites(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn kunit_suites_from_kunit_py() {
        let k = kunit_of_console();
        let names: Vec<&str> = k.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["rust_kernel_fmt", "rust_spinlock_irq_condvar", "rust_doctests_kernel"]
        );
        assert_eq!((k[0].pass, k[2].pass, k[2].fail), (1, 360, 0));
        let failing = serde_json::json!({"sub_groups": [
            {"name": "a", "test_cases": [{"status": "PASS"}, {"status": "ERROR"}], "sub_groups": [
                {"name": "a.p", "test_cases": [{"status": "FAIL"}, {"status": "SKIP"}], "sub_groups": []}]},
            {"name": "b", "test_cases": [{"status": "SKIP"}], "sub_groups": []},
            {"name": "c", "test_cases": [], "sub_groups": [], "misc": {"crashed": 1}}]});
        let k = kunit_suites(&failing);
        assert_eq!((k[0].status, k[0].pass, k[0].fail, k[0].skip), (Status::Fail, 1, 2, 1));
        assert_eq!(k[1].status, Status::Skip);
        assert_eq!(k[2].status, Status::Fail);
        let v = judge(TESTS, CONSOLE, k, &six(), 2, false, &[]);
        assert!(!v.ok());
    }

    #[test]
    fn a_short_run_is_not_a_pass() {
        // Cut the real log after the third case started: timeout/hang.
        let cut = &TESTS[..TESTS.find("KHRS-BEGIN 3").unwrap() + 40];
        let v = judge(cut, CONSOLE, kunit_of_console(), &six(), 2, true, &[]);
        assert!(!v.ok());
        assert!(v.problems.iter().any(|p| p.contains("timeout")));
        assert!(v.problems.iter().any(|p| p.contains("no KHRS-DONE")));
        assert!(v
            .problems
            .iter()
            .any(|p| p.contains("`khugepaged all:file /mnt/file` never started")));
        assert!(v.cases[2].problems.contains(&"did not finish".to_string()));
        // One CPU is not enough for a race run.
        let one = TESTS.replace("KHRS-CPUS 2", "KHRS-CPUS 1");
        assert!(judge(&one, CONSOLE, kunit_of_console(), &six(), 2, false, &[])
            .problems
            .iter()
            .any(|p| p.contains("1 CPU")));
    }

    #[test]
    fn a_program_that_stops_early_shows_its_last_lines() {
        let log = "KHRS-CPUS 2\nKHRS-BEGIN 1 khugepaged all:file /mnt/file\n\
                   TAP version 13\n1..31\n# Run test: collapse_full (khugepaged:file)\n\
                   # Page 7 is corrupted: 0x0\n\
                   Bail out! Page 7 is corrupted: 0x0\n\
                   KHRS-END 1 rc=1\nKHRS-DONE\n";
        let expected = vec!["khugepaged all:file /mnt/file".to_string()];
        let v = judge(log, CONSOLE, kunit_of_console(), &expected, 2, false, &[]);
        assert!(!v.ok());
        let text = render(&v);
        assert!(text.contains("FAIL khugepaged all:file /mnt/file"), "{text}");
        assert!(text.contains("     | Bail out! Page 7 is corrupted: 0x0\n"), "{text}");
        // A passing case prints no output.
        let pass = "KHRS-CPUS 2\nKHRS-BEGIN 1 khugepaged all:file /mnt/file\nTAP version 13\n1..1\n\
                    ok 1 collapse_full\n# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0\n\
                    KHRS-END 1 rc=0\nKHRS-DONE\n";
        let text = render(&judge(pass, CONSOLE, kunit_of_console(), &expected, 2, false, &[]));
        assert!(
            text.contains("PASS khugepaged all:file") && !text.contains("     | "),
            "{text}"
        );
    }

    /// The guest's end marker carries the exit code and how long the case ran.
    #[test]
    fn a_case_shows_how_long_it_ran() {
        let log = "KHRS-CPUS 2\nKHRS-BEGIN 1 khugepaged\nTAP version 13\n1..1\nok 1 collapse_full\n\
                   # Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0\n\
                   KHRS-END 1 rc=0 seconds=12.5\nKHRS-DONE\n";
        let v = judge(
            log,
            CONSOLE,
            kunit_of_console(),
            &["khugepaged".to_string()],
            2,
            false,
            &[],
        );
        assert_eq!(v.cases[0].exit_code, Some(0));
        assert_eq!(v.cases[0].seconds, Some(12.5));
        assert!(
            render(&v).contains("1 passed, 0 failed, 0 skipped, 12.5 s\n"),
            "{}",
            render(&v)
        );
        let old = log.replace(" seconds=12.5", "");
        let v = judge(
            &old,
            CONSOLE,
            kunit_of_console(),
            &["khugepaged".to_string()],
            2,
            false,
            &[],
        );
        assert_eq!((v.cases[0].exit_code, v.cases[0].seconds), (Some(0), None));
    }

    #[test]
    fn splats_in_kernel_lines_only() {
        let log = "[    1.000000] Kernel command line: console=ttyS0 page_table_check=on\n\
                   [    1.100000] Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar\n\
                   BUG: userspace text is not a kernel splat\n\
                   [   12.345678] BUG: Bad rss-counter state mm:00000000c0ffee type:MM_ANONPAGES val:1\n\
                   [   13.000000] WARNING: possible circular locking dependency detected\n\
                   [   14.000000] kernel BUG at mm/page_table_check.c:136!\n";
        let s = splats(log);
        assert_eq!(s.iter().map(|s| s.line).collect::<Vec<_>>(), [4, 5, 6]);
        assert!(splats(CONSOLE).is_empty());
    }

    /// A real run of the series with the switch: Rust, Rust forced to
    /// relock, and C blocks, each followed by a counter read.
    #[test]
    fn real_run_with_three_implementations() {
        let log = include_str!("../tests/fixtures/tests-series-ab-default.log");
        let impls = [ab::Impl::Rust, ab::Impl::RustRelock, ab::Impl::C];
        let v = judge(log, CONSOLE, kunit_of_console(), &[], 2, false, &impls);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.counters.len(), 4);
        assert_eq!(v.counters[0].0, "boot");
        assert!(v.counters[2].1["rust_relocks"] > 0);
        assert!(v.counters[3].1["c_collapsed"] > 0);
        assert!(v.cases.iter().all(|c| !c.name.starts_with(ab::STATS_PREFIX)));
        assert_eq!(v.cases.len(), 6 + 7 + 7);
        assert!(v.cases.iter().all(|c| c.problems.is_empty()));
        // The same log judged as if the C block had been Rust: caught.
        let wrong = [ab::Impl::Rust, ab::Impl::RustRelock, ab::Impl::Rust];
        assert!(!judge(log, CONSOLE, kunit_of_console(), &[], 2, false, &wrong)
            .problems
            .is_empty());
    }

    #[test]
    fn merged_guests_pass_only_together() {
        let one = |passed, problems: Vec<String>, cpus| Verdict {
            cpus,
            cases: Vec::new(),
            kunit: vec![SuiteResult {
                name: "rust_mm_pgtable".into(),
                status: Status::Pass,
                pass: 6,
                fail: 0,
                skip: 0,
            }],
            splats: Vec::new(),
            problems,
            counters: vec![("rust".into(), Default::default())],
            passed,
            failed: 0,
            skipped: 0,
        };
        let m = merge(vec![
            ("guest1".into(), one(10, vec![], Some(2))),
            ("guest2".into(), one(5, vec![], Some(2))),
        ]);
        assert!(m.ok());
        assert_eq!((m.passed, m.cpus), (15, Some(2)));
        let names: Vec<&str> = m.kunit.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["guest1 rust_mm_pgtable", "guest2 rust_mm_pgtable"]);
        assert_eq!(m.counters[1].0, "guest2 rust");
        let m = merge(vec![
            ("guest1".into(), one(10, vec![], Some(2))),
            (
                "guest2".into(),
                one(5, vec!["the guest was killed at the timeout".into()], None),
            ),
        ]);
        assert!(!m.ok());
        assert_eq!(m.problems, ["guest2: the guest was killed at the timeout"]);
        assert_eq!(m.cpus, Some(2));
    }
}
