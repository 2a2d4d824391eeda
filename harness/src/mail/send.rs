//! Sending: `git send-email` of a series to its recipients, a dry run unless
//! `--send`.

use anyhow::{Context, Result};
use fs_err as fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::cmd;
use crate::layout::Layout;

/// The logs of real sends of a series.
pub fn sent_logs(layout: &Layout, s: SeriesName) -> Vec<PathBuf> {
    let dir = layout.repo.join("work/mail").join(s.name());
    let Ok(rd) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .map(|e| e.path().join("send-email.log"))
        .filter(|p| p.is_file())
        .collect()
}

/// `git send-email` of a series' files to its recipients: a dry run unless
/// --send. The log goes to `out`.
pub fn send_email(
    tree: &Path,
    out: &Path,
    files: &[PathBuf],
    r: &Recipients,
    s: &Signing,
    o: &Opts,
    series: SeriesName,
) -> Result<()> {
    let mut c = send_email_command(tree, &s.sender, &r.to, &r.cc, o)?;
    c.arg("--suppress-cc=self");
    c.args(files);
    let text = cmd::output(&mut c)?;
    let log = out.join(if o.send {
        "send-email.log"
    } else {
        "send-email-dry-run.log"
    });
    fs::write(&log, &text)?;
    for l in text
        .lines()
        .filter(|l| l.starts_with("Subject: ") || l.starts_with("Dry-OK") || l.starts_with("OK."))
    {
        println!("  {l}");
    }
    if o.send {
        println!(
            "sent {} mail(s) through {}; log {}",
            files.len(),
            o.smtp_server.as_deref().unwrap_or(""),
            log.display()
        );
    } else {
        println!(
            "dry run: {} mail(s) to {} + {} Cc; full log {}\nto really send: cargo harness mail --series {} -v {} --signoff --send --smtp-server HOST [--smtp-port P]",
            files.len(),
            r.to.len(),
            r.cc.len(),
            log.display(),
            series.name(),
            o.version
        );
    }
    Ok(())
}

/// `git send-email` in `tree` from `sender` to `to`/`cc`: a real send to `--smtp-server` with
/// `--send`, else `--dry-run`. Callers add their own `--suppress-cc` and the files.
pub(crate) fn send_email_command(
    tree: &Path,
    sender: &impl std::fmt::Display,
    to: &[String],
    cc: &[String],
    o: &Opts,
) -> Result<Command> {
    let mut c = Command::new("git");
    c.current_dir(tree)
        .args([
            "send-email",
            "--confirm=never",
            "--no-annotate",
            "--no-format-patch",
            "--8bit-encoding=UTF-8",
        ])
        .arg(format!("--from={sender}"));
    for a in to {
        c.arg(format!("--to={a}"));
    }
    for a in cc {
        c.arg(format!("--cc={a}"));
    }
    if o.send {
        let server = o.smtp_server.as_deref().context("--send needs --smtp-server")?;
        c.arg(format!("--smtp-server={server}"));
        if let Some(p) = o.smtp_port {
            c.arg(format!("--smtp-server-port={p}"));
        }
    } else {
        c.arg("--dry-run");
    }
    Ok(c)
}
