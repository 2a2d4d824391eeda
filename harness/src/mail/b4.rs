//! `--b4`: the series through b4 0.12's own sending path, for submitters who use b4.
//! A branch of the mail tree (the series' commits with their trailers, on the
//! stacks below) is enrolled with `b4 prep -e`, gets the generated cover letter
//! (`b4 prep --edit-cover`, with the editor replaced by a copy) and the prefixes,
//! then `b4 send`: `-o DIR` for a dry run (the messages as files), `--reflect`
//! (everything to yourself), or a real send, which b4 confirms on the terminal.
//! The checks are the mail command's (they ran before); b4 only formats and sends.
//! The sender's identity and the SMTP server reach b4's git calls through
//! `GIT_CONFIG_COUNT`, so nothing is written to any git config.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BaseReport, Mailing, Opts, Prepared, Recipients, Signing};
use crate::cmd;

/// What `b4 send` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B4Mode {
    /// `b4 send -o DIR`: write the messages, send nothing.
    DryRun(PathBuf),
    /// `b4 send --reflect`: the full To/Cc headers, delivered to the sender only.
    Reflect,
    /// `b4 send`: to the recipients.
    Send,
}

/// A series for [`b4_send`].
pub struct B4Series<'a> {
    /// A git tree whose HEAD holds the series on top of `fork_point`.
    pub tree: &'a Path,
    pub fork_point: &'a str,
    /// The branch b4 tracks (made anew from HEAD every time).
    pub branch: String,
    /// The cover letter: subject line, blank line, body.
    pub cover: &'a Path,
    /// Words of the subject prefix other than `PATCH` (`RFC`), and the revision.
    pub prefixes: Vec<String>,
    pub revision: u32,
    /// The sender's name and address (b4 takes them from git's user.name, user.email).
    pub sender: (&'a str, &'a str),
    pub to: &'a [String],
    pub cc: &'a [String],
    pub smtp_server: Option<&'a str>,
    pub smtp_port: Option<u16>,
}

/// `user.name`, `user.email` and the SMTP server as `GIT_CONFIG_*` variables for b4's
/// git calls. Without an SMTP server b4 0.12 would pick its web endpoint; a dry run
/// connects to nothing, so any name does.
fn git_config_env(s: &B4Series, editor: &str) -> Vec<(String, String)> {
    let (name, email) = s.sender;
    let mut kv = vec![
        ("user.name", name.to_string()),
        ("user.email", email.to_string()),
        ("core.editor", editor.to_string()),
        ("sendemail.smtpserver", s.smtp_server.unwrap_or("localhost").to_string()),
    ];
    if let Some(p) = s.smtp_port {
        kv.push(("sendemail.smtpserverport", p.to_string()));
    }
    let mut env = vec![("GIT_CONFIG_COUNT".to_string(), kv.len().to_string())];
    for (i, (k, v)) in kv.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), k.to_string()));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), v));
    }
    env
}

fn b4(tree: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let mut c = Command::new("b4");
    c.current_dir(tree).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Single-quote `p` for the shell-like split b4 applies to `core.editor`.
fn quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Enroll, set the cover letter and prefixes, and `b4 send` in `mode`. The tree is back
/// on the branch it was on afterwards. Returns the messages a dry run wrote, in order.
pub fn b4_send(s: &B4Series, mode: &B4Mode) -> Result<Vec<PathBuf>> {
    let editor = format!("cp {}", quoted(s.cover));
    let env = git_config_env(s, &editor);
    let was = cmd::output(&mut cmd::git(s.tree, ["rev-parse", "--abbrev-ref", "HEAD"]))?
        .trim()
        .to_string();
    cmd::output(&mut cmd::git(s.tree, ["checkout", "-q", "-B", &s.branch]))?;
    let res = (|| -> Result<()> {
        cmd::output(&mut b4(s.tree, &env, &["prep", "-e", s.fork_point])).context("b4 prep -e (enroll the branch)")?;
        cmd::output(&mut b4(s.tree, &env, &["prep", "--edit-cover"])).context("b4 prep --edit-cover")?;
        if !s.prefixes.is_empty() {
            let mut args = vec!["prep", "--set-prefixes"];
            args.extend(s.prefixes.iter().map(String::as_str));
            cmd::output(&mut b4(s.tree, &env, &args)).context("b4 prep --set-prefixes")?;
        }
        if s.revision > 1 {
            let rev = s.revision.to_string();
            cmd::output(&mut b4(s.tree, &env, &["prep", "--force-revision", &rev]))
                .context("b4 prep --force-revision")?;
        }
        let mut args = vec!["send".to_string(), "--no-sign".to_string()];
        if !s.to.is_empty() {
            args.push("--to".into());
            args.extend(s.to.iter().cloned());
        }
        if !s.cc.is_empty() {
            args.push("--cc".into());
            args.extend(s.cc.iter().cloned());
        }
        match mode {
            B4Mode::DryRun(dir) => {
                let _ = fs::remove_dir_all(dir);
                fs::create_dir_all(dir)?;
                args.push("-o".into());
                args.push(dir.display().to_string());
            }
            B4Mode::Reflect => args.push("--reflect".into()),
            B4Mode::Send => {}
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = b4(s.tree, &env, &args);
        match mode {
            // b4 asks "Press Enter to proceed" before anything leaves: the submitter answers.
            B4Mode::Reflect | B4Mode::Send => cmd::run(&mut c).context("b4 send")?,
            B4Mode::DryRun(_) => {
                cmd::output(&mut c).context("b4 send -o")?;
            }
        }
        Ok(())
    })();
    let back = cmd::output(&mut cmd::git(s.tree, ["checkout", "-q", &was]));
    res?;
    back?;
    let B4Mode::DryRun(dir) = mode else {
        return Ok(Vec::new());
    };
    let mut mails: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    mails.sort();
    if mails.is_empty() {
        bail!("b4 send -o wrote no message into {}", dir.display());
    }
    Ok(mails)
}

/// The checked series of the mail command through `b4 send`, in the mode its options ask for.
pub fn send(
    m: &Mailing,
    prep: &Prepared,
    base: &BaseReport,
    r: &Recipients,
    s: &Signing,
    o: &Opts,
    expected: usize,
) -> Result<()> {
    let template =
        fs::read_to_string(&m.cover_letter).with_context(|| format!("cannot read {}", m.cover_letter.display()))?;
    let (subject, body) = super::prepare::cover_blurb(&template, base, super::prerequisite(m)?.as_ref())?;
    let cover = m.out_dir.join("b4-cover-letter.txt");
    fs::write(&cover, format!("{subject}\n\n{body}\n"))?;
    let series = B4Series {
        tree: &prep.tree,
        fork_point: &prep.below,
        branch: format!("b4/khrs-{}", m.name()),
        cover: &cover,
        prefixes: m
            .subject_prefix
            .split_whitespace()
            .filter(|w| *w != "PATCH")
            .map(str::to_string)
            .collect(),
        revision: m.version,
        sender: (&s.sender.name, &s.sender.email),
        to: &r.to,
        cc: &r.cc,
        smtp_server: o.smtp_server.as_deref(),
        smtp_port: o.smtp_port,
    };
    let mode = if o.send {
        B4Mode::Send
    } else if o.reflect {
        B4Mode::Reflect
    } else {
        B4Mode::DryRun(m.out_dir.join("b4"))
    };
    let mails = b4_send(&series, &mode)?;
    match mode {
        B4Mode::DryRun(dir) => {
            if mails.len() != expected {
                bail!(
                    "b4 send -o wrote {} message(s) into {}, format-patch {expected}",
                    mails.len(),
                    dir.display()
                );
            }
            println!(
                "b4 dry run: {} message(s) to {} + {} Cc in {} (b4's base-commit is the fork point {}, \
                 the commit below the series in the mail tree)\nto send with b4: cargo harness mail --series {} -v {} \
                 --b4 --signoff [--reflect | --send] --smtp-server HOST",
                mails.len(),
                r.to.len(),
                r.cc.len(),
                dir.display(),
                &prep.below[..12.min(prep.below.len())],
                m.name(),
                m.version
            );
        }
        B4Mode::Reflect => println!("b4 send --reflect: done (delivered to {} only)", s.sender),
        B4Mode::Send => println!("b4 send: done"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cmd::git_ok as git;

    /// Two commits on a base, through b4 prep and `b4 send -o`: a cover letter and two
    /// patches with the prefix, the revision, the sender, the recipients and the
    /// commits' own trailers; the tree ends on the branch it was on.
    #[test]
    fn b4_writes_the_series_as_it_would_send_it() {
        if Command::new("b4").arg("--version").output().is_err() {
            panic!("b4 is not installed: cargo harness install");
        }
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        let base = cmd::git_repo_with_base(
            &tree,
            "mail",
            ("Someone Else", "else@kernel-dev.org"),
            ("a.c", "int a;\n"),
        );
        for (i, l) in ["int b;", "int c;"].iter().enumerate() {
            fs::write(tree.join("a.c"), format!("int a;\n{l}\n")).unwrap();
            git(
                &tree,
                &[
                    "commit",
                    "-q",
                    "-am",
                    &format!("mm: change {i}\n\nBecause.\n\nSigned-off-by: Jane Developer <jane@kernel-dev.org>"),
                ],
            );
        }
        let cover = t.path().join("cover.txt");
        fs::write(&cover, "mm: two changes\n\nThe blurb of the cover letter.\n").unwrap();
        let to = vec!["linux-mm@kvack.org".to_string()];
        let cc = vec!["Jann Horn <jannh@google.com>".to_string()];
        let s = B4Series {
            tree: &tree,
            fork_point: base.trim(),
            branch: "b4/khrs-test".into(),
            cover: &cover,
            prefixes: vec!["RFC".into()],
            revision: 2,
            sender: ("Jane Developer", "jane@kernel-dev.org"),
            to: &to,
            cc: &cc,
            smtp_server: None,
            smtp_port: None,
        };
        let out = t.path().join("out");
        let mails = b4_send(&s, &B4Mode::DryRun(out.clone())).unwrap();
        assert_eq!(mails.len(), 3, "{mails:?}");
        let text: Vec<String> = mails.iter().map(|m| fs::read_to_string(m).unwrap()).collect();
        assert!(
            text[0].contains("Subject: [PATCH RFC v2 0/2] mm: two changes"),
            "{}",
            text[0]
        );
        assert!(text[0].contains("The blurb of the cover letter."));
        assert!(
            text[1].contains("Subject: [PATCH RFC v2 1/2] mm: change 0"),
            "{}",
            text[1]
        );
        for m in &text {
            assert!(m.contains("From: Jane Developer <jane@kernel-dev.org>"), "{m}");
            assert!(m.contains("To: linux-mm@kvack.org"), "{m}");
            assert!(m.contains("Jann Horn <jannh@google.com>"), "{m}");
        }
        assert!(text[2].contains("Signed-off-by: Jane Developer <jane@kernel-dev.org>"));
        let head = cmd::output(&mut cmd::git(&tree, ["rev-parse", "--abbrev-ref", "HEAD"])).unwrap();
        assert_eq!(head.trim(), "mail");
        // Nothing of the sender went into the tree's config.
        let name = cmd::output(&mut cmd::git(&tree, ["config", "user.name"])).unwrap();
        assert_eq!(name.trim(), "Someone Else");
    }
}
