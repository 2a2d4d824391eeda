//! KTAP / kselftest TAP result lines, as printed by tools/testing/selftests
//! (`ok 3 name # SKIP why`) and by KUnit in the kernel log.

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestLine {
    pub number: u32,
    pub name: String,
    pub status: Status,
    /// Text after `# SKIP`/`# XFAIL`/`# TODO`, if any.
    pub reason: Option<String>,
}

/// Parse one result line (`[not ]ok N [- ]name [# DIRECTIVE reason]`),
/// after indentation. Returns `None` for anything else.
pub fn parse_result(line: &str) -> Option<TestLine> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = line.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number: u32 = num.parse().ok()?;
    let (name, directive) = match rest.find(" # ").or_else(|| rest.strip_prefix("# ").map(|_| 0)) {
        Some(i) => (
            &rest[..i],
            Some(rest[i..].trim_start_matches(' ').trim_start_matches("# ").trim()),
        ),
        None => (rest, None),
    };
    let name = name.trim().trim_start_matches("- ").trim().to_string();
    let upper = directive.map(|d| d.to_ascii_uppercase());
    let (status, reason) = match (ok, upper.as_deref()) {
        (true, Some(d)) if d.starts_with("SKIP") => (Status::Skip, directive.map(|d| d[4..].trim().to_string())),
        // An expected failure or a TODO is not a pass we can count on.
        (_, Some(d)) if d.starts_with("XFAIL") || d.starts_with("TODO") => (Status::Fail, directive.map(String::from)),
        (true, _) => (Status::Pass, None),
        (false, _) => (Status::Fail, directive.map(String::from)),
    };
    Some(TestLine {
        number,
        name,
        status,
        reason,
    })
}

/// The plan line `1..N`.
pub fn parse_plan(line: &str) -> Option<u32> {
    line.strip_prefix("1..")?.trim().parse().ok()
}

/// `# Totals: pass:P fail:F xfail:X xpass:Y skip:S error:E` (kselftest) or
/// `# suite: pass:P fail:F skip:S total:T` (KUnit): the counts by key.
pub fn parse_totals(line: &str) -> Option<Vec<(String, u32)>> {
    let body = line.strip_prefix("# ")?;
    let (_, counts) = body.split_once(": ")?;
    let v: Vec<(String, u32)> = counts
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    (v.iter().any(|(k, _)| k == "pass")).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines() {
        let t = parse_result("ok 3 collapse_full").unwrap();
        assert_eq!(
            (t.number, t.name.as_str(), t.status),
            (3, "collapse_full", Status::Pass)
        );
        let t = parse_result("not ok 12 collapse_swapin_single_pte").unwrap();
        assert_eq!(t.status, Status::Fail);
        let t = parse_result("ok 4 collapse_max_ptes_swap # SKIP swap not enabled").unwrap();
        assert_eq!(t.status, Status::Skip);
        assert_eq!(t.reason.as_deref(), Some("swap not enabled"));
        assert_eq!(parse_result("ok 1 - foo # skip").unwrap().status, Status::Skip);
        assert_eq!(parse_result("ok 2 bar # XFAIL known").unwrap().status, Status::Fail);
        assert!(parse_result("okay 1 x").is_none());
        assert!(parse_result("# ok 1 x").is_none());
        assert!(parse_result("ok x y").is_none());
    }

    #[test]
    fn plans_and_totals() {
        assert_eq!(parse_plan("1..33"), Some(33));
        assert_eq!(parse_plan("1..x"), None);
        let t = parse_totals("# Totals: pass:30 fail:0 xfail:0 xpass:0 skip:3 error:0").unwrap();
        assert!(t.contains(&("skip".to_string(), 3)));
        let k = parse_totals("# rust_doctests_kernel: pass:355 fail:0 skip:0 total:355").unwrap();
        assert!(k.contains(&("pass".to_string(), 355)));
        assert!(parse_totals("# Subtest: foo").is_none());
    }
}
