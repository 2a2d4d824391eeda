//! Who sends and signs: the sender identity (`git config user.name` /
//! `user.email`, or `--from`), the checks that it is a real, reachable
//! identity, and the `Assisted-by:` value.
//!
//! Documentation/process/submitting-patches.rst: the Signed-off-by certifies
//! the DCO "using a known identity (sorry, no anonymous contributions.)", and
//! the last one must be the submitter's. coding-assistants.rst: an AI agent
//! must not add a Signed-off-by; only the human submitter adds theirs, after
//! reviewing, and tool help is recorded as `Assisted-by: LLM [TOOL1] [TOOL2]`.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::fmt;
use std::path::Path;

use crate::cmd;
use crate::layout::Layout;

use super::checks::Expect;
use super::Opts;

/// A person as `Name <addr>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} <{}>", self.name, self.email)
    }
}

/// Domains that are reserved (RFC 2606, RFC 6761), local, or forwarders
/// nobody can write to: a Signed-off-by or From: with one of them is not a
/// known identity. Matched against the domain and each of its parent domains.
const UNUSABLE_DOMAINS: &[(&str, &str)] = &[
    ("example", "reserved for documentation (RFC 2606)"),
    ("invalid", "reserved as never valid (RFC 2606)"),
    ("test", "reserved for testing (RFC 2606)"),
    ("localhost", "the local machine, not a mail domain (RFC 6761)"),
    ("local", "link-local (mDNS), not a mail domain"),
    ("example.com", "reserved for documentation (RFC 2606)"),
    ("example.org", "reserved for documentation (RFC 2606)"),
    ("example.net", "reserved for documentation (RFC 2606)"),
];

impl Identity {
    /// Parse `Name <addr>`. Only the syntax; see [`Identity::check`].
    pub fn parse(s: &str) -> std::result::Result<Identity, String> {
        let s = s.trim();
        let (Some(lt), true) = (s.find('<'), s.ends_with('>')) else {
            return Err(format!("\"{s}\" is not of the form `Name <address>`"));
        };
        let name = s[..lt].trim().trim_matches('"').trim().to_string();
        let email = s[lt + 1..s.len() - 1].trim().to_string();
        Ok(Identity { name, email })
    }

    /// Why this identity cannot sign off or send, if it cannot: empty, no
    /// '@', a reserved, local or no-reply domain, or the placeholder of the
    /// stored patches ("Seed ...").
    pub fn check(&self) -> std::result::Result<(), String> {
        let who = self.to_string();
        if self.name.trim().is_empty() {
            return Err(format!("\"{who}\": the name is empty"));
        }
        if self.email.trim().is_empty() {
            return Err(format!("\"{who}\": the e-mail address is empty"));
        }
        if self.name.contains("Seed ") {
            return Err(format!(
                "\"{who}\": \"Seed ...\" is the placeholder author of the stored patches, not a person"
            ));
        }
        if self.name.contains(['<', '>', '@']) {
            return Err(format!("\"{who}\": the name contains '<', '>' or '@'"));
        }
        if self
            .email
            .contains(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == ',')
        {
            return Err(format!("\"{who}\": the address contains a space, '<', '>' or ','"));
        }
        let Some((local, domain)) = self.email.rsplit_once('@') else {
            return Err(format!("\"{who}\": the address has no '@'"));
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if local.is_empty() || domain.is_empty() {
            return Err(format!("\"{who}\": the address has an empty part before or after '@'"));
        }
        if domain == "localhost" {
            return Err(format!("\"{who}\": localhost is the local machine, not a mail domain"));
        }
        if !domain.contains('.') {
            return Err(format!(
                "\"{who}\": the domain \"{domain}\" has no dot: not a mail domain"
            ));
        }
        for (bad, why) in UNUSABLE_DOMAINS {
            if domain == *bad || domain.ends_with(&format!(".{bad}")) {
                return Err(format!("\"{who}\": the domain \"{domain}\" is {why}"));
            }
        }
        if domain.starts_with("users.noreply.") || domain.contains(".users.noreply.") {
            return Err(format!(
                "\"{who}\": \"{domain}\" is a no-reply forwarding domain (users.noreply.*): nobody reads it"
            ));
        }
        Ok(())
    }

    /// The two identities are the same person for a Signed-off-by chain
    /// (same address, case-insensitively).
    pub fn same_address(&self, other: &Identity) -> bool {
        self.email.eq_ignore_ascii_case(&other.email)
    }
}

/// The sender: `--from` if given, else `git config user.name` and
/// `user.email` of the project repository (the user's own configuration).
/// Not checked here: see [`Identity::check`].
pub fn sender(layout: &Layout, from: Option<&str>) -> Result<(Identity, String)> {
    if let Some(f) = from {
        let id = Identity::parse(f).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
        return Ok((id, "--from".into()));
    }
    let get = |key: &str| -> Result<String> {
        // Exit status 1 when unset: an empty value, which check() refuses.
        Ok(cmd::output(&mut cmd::git(&layout.repo, ["config", key]))
            .map(|s| s.trim().to_string())
            .unwrap_or_default())
    };
    let id = Identity {
        name: get("user.name")?,
        email: get("user.email")?,
    };
    Ok((
        id,
        format!("git config user.name/user.email in {}", layout.repo.display()),
    ))
}

/// Validate an `Assisted-by:` value: `LLM [TOOL1] [TOOL2]`, i.e. a first
/// non-empty word and optional tool names; no address, no angle brackets.
pub fn check_assisted_by(value: &str) -> std::result::Result<String, String> {
    let v = value.trim();
    let v = v
        .strip_prefix("Assisted-by:")
        .map(str::trim)
        .unwrap_or(v)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if v.is_empty() {
        return Err("the Assisted-by value is empty; the format is `LLM [TOOL1] [TOOL2]`".into());
    }
    if v.contains(['<', '>', '@']) {
        return Err(format!(
            "Assisted-by \"{v}\" has '<', '>' or '@': it names the tools (`LLM [TOOL1] [TOOL2]`), not a person"
        ));
    }
    let first = v.split(' ').next().unwrap_or_default();
    if !first.chars().next().is_some_and(|c| c.is_alphanumeric()) {
        return Err(format!(
            "Assisted-by \"{v}\" must start with a word (the LLM), format `LLM [TOOL1] [TOOL2]`"
        ));
    }
    if v.contains(['[', ']']) {
        return Err(format!(
            "Assisted-by \"{v}\": the brackets of `LLM [TOOL1] [TOOL2]` mark optional parts; write the names without them"
        ));
    }
    Ok(v)
}

/// The Assisted-by value: `--assisted-by`, else the file (one line; `#`
/// comment lines and blank lines ignored), else none.
pub fn assisted_by(flag: Option<&str>, file: &Path) -> Result<Option<String>> {
    let raw = match flag {
        Some(v) => v.to_string(),
        None => match fs::read_to_string(file) {
            Ok(t) => {
                let lines: Vec<&str> = t
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .collect();
                match lines.as_slice() {
                    [] => return Ok(None),
                    [one] => one.to_string(),
                    _ => bail!(
                        "{} has {} lines; it holds one Assisted-by value (`LLM [TOOL1] [TOOL2]`)",
                        file.display(),
                        lines.len()
                    ),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| file.display().to_string()),
        },
    };
    let from = if flag.is_some() {
        "--assisted-by".to_string()
    } else {
        file.display().to_string()
    };
    check_assisted_by(&raw)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{from}: {e}"))
}

/// Who sends and signs, and with which trailers.
#[derive(Debug, Clone)]
pub struct Signing {
    pub sender: Identity,
    /// Where the sender came from (`--from`, git config).
    pub source: String,
    /// Why the sender cannot sign off or send, if it cannot.
    pub problem: Option<String>,
    pub signoff: bool,
    pub assisted_by: Option<String>,
}

impl Signing {
    pub fn from_opts(layout: &Layout, o: &Opts) -> Result<Signing> {
        let (sender, source) = sender(layout, o.from.as_deref())?;
        let problem = sender.check().err();
        let assisted_by = assisted_by(o.assisted_by.as_deref(), &layout.patches().join("assisted-by"))?;
        let s = Signing {
            sender,
            source,
            problem,
            signoff: o.signoff,
            assisted_by,
        };
        if let Some(p) = &s.problem {
            // Mails From an identity that is not a person: not even for a dry run, whose
            // output a user would send. Checks alone (--check-only) and --rebase-onto
            // write no mail.
            let mails = !o.check_only && o.rebase_onto.is_none();
            if s.signoff || o.send || mails {
                bail!(
                    "refusing to {}: the sender (from {}) is not a usable identity: {p}.\n\
                     Pass --from \"Your Name <you@your.domain>\" or set git config user.name/user.email to yourself \
                     (--check-only runs the checks without a sender)",
                    if s.signoff {
                        "sign off"
                    } else if o.send {
                        "send"
                    } else {
                        "prepare mails"
                    },
                    s.source
                );
            }
            eprintln!(
                "warning: the sender (from {}) is not a usable identity: {p}; fine for checks, \
                 but mails, --signoff and --send refuse it (use --from)",
                s.source
            );
        }
        Ok(s)
    }
    /// What the generated mails must carry.
    pub fn expect(&self) -> Expect {
        Expect {
            signoff: self.signoff.then(|| self.sender.clone()),
            assisted_by: self.assisted_by.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        Identity::parse(s).unwrap()
    }

    #[test]
    fn usable_identities() {
        for ok in [
            "Jane Developer <jane@kernel-dev.org>",
            "Loopback Test <loopback@khrs-loopback.org>",
            "\"Liam R. Howlett\" <liam@infradead.org>",
            "Andrew Morton <akpm@linux-foundation.org>",
        ] {
            id(ok).check().unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(id("\"Liam R. Howlett\" <liam@infradead.org>").name, "Liam R. Howlett");
        assert_eq!(
            id("Jane Developer <jane@kernel-dev.org>").to_string(),
            "Jane Developer <jane@kernel-dev.org>"
        );
    }

    #[test]
    fn unusable_identities_name_their_cause() {
        let bad = |s: &str, why: &str| {
            let e = id(s).check().expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
        };
        bad(
            "Seed ad2b398b maintainers <maintainers@users.noreply.r-seed-ad2b398b.example>",
            "placeholder author",
        );
        bad("Jane Developer <jane@users.noreply.github.com>", "no-reply");
        bad("Test Submitter <submitter@example.com>", "RFC 2606");
        bad("Test Submitter <submitter@mail.example.org>", "RFC 2606");
        bad("Test Submitter <submitter@example.net>", "RFC 2606");
        bad("Jane <jane@kernel.example>", "RFC 2606");
        bad("Jane <jane@loopback.invalid>", "never valid");
        bad("Jane <jane@kernel.test>", "testing");
        bad("harness <harness@localhost>", "localhost");
        bad("Jane <jane@box.local>", "link-local");
        bad("Jane <jane@mailhost>", "no dot");
        bad("Jane <jane.kernel-dev.org>", "no '@'");
        bad(" <jane@kernel-dev.org>", "name is empty");
        bad("Jane Developer <>", "address is empty");
        bad("Jane <@kernel-dev.org>", "empty part");
        assert!(Identity::parse("jane@kernel-dev.org").is_err());
        assert!(Identity::parse("").is_err());
        // An empty git config gives an empty identity, refused.
        let empty = Identity {
            name: String::new(),
            email: String::new(),
        };
        assert!(empty.check().unwrap_err().contains("empty"));
    }

    #[test]
    fn assisted_by_format() {
        assert_eq!(check_assisted_by("LLM").unwrap(), "LLM");
        assert_eq!(
            check_assisted_by("  Assisted-by:  LLM coccinelle   sparse ").unwrap(),
            "LLM coccinelle sparse"
        );
        assert!(check_assisted_by("").unwrap_err().contains("empty"));
        assert!(check_assisted_by("Assisted-by:").unwrap_err().contains("empty"));
        assert!(check_assisted_by("Jane <jane@kernel-dev.org>")
            .unwrap_err()
            .contains("not a person"));
        assert!(check_assisted_by("bot@example.com").is_err());
        assert!(check_assisted_by("LLM [sparse]").unwrap_err().contains("brackets"));
        assert!(check_assisted_by("-LLM").unwrap_err().contains("start with a word"));

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("assisted-by");
        assert_eq!(assisted_by(None, &f).unwrap(), None);
        fs::write(&f, "# the LLM and the analysis tools\n\nLLM smatch\n").unwrap();
        assert_eq!(assisted_by(None, &f).unwrap().as_deref(), Some("LLM smatch"));
        assert_eq!(assisted_by(Some("LLM"), &f).unwrap().as_deref(), Some("LLM"));
        fs::write(&f, "LLM\nsparse\n").unwrap();
        assert!(assisted_by(None, &f).is_err());
        fs::write(&f, "# nothing yet\n").unwrap();
        assert_eq!(assisted_by(None, &f).unwrap(), None);
    }
}
