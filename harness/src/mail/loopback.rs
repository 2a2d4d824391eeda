//! The loopback round trip: the series through an SMTP sink on 127.0.0.1.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::checks::{header, headers, patch_number, strip_tags};
use super::{base_report, cover_letter_file, format_series, prepare_tree, SYSTEM_PYTHON};
use crate::cmd;
use crate::layout::{Layout, BASE_TAG};

// ---------------------------------------------------------------------------
// Loopback round trip

/// An SMTP sink on 127.0.0.1 (Debian's aiosmtpd, Maildir handler), killed
/// when dropped.
struct Sink {
    child: Child,
}

impl Sink {
    fn start(port: u16, maildir: &Path, log: &Path) -> Result<Sink> {
        let f = fs::File::create(log)?;
        let child = Command::new(SYSTEM_PYTHON)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .context("cannot start the SMTP sink (apt-get install python3-aiosmtpd)")?;
        let mut sink = Sink { child };
        let start = Instant::now();
        loop {
            if let Some(st) = sink.child.try_wait()? {
                bail!("the SMTP sink exited ({st}):\n{}", cmd::tail(log, 20));
            }
            if std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
            {
                return Ok(sink);
            }
            if start.elapsed() > Duration::from_secs(15) {
                bail!(
                    "the SMTP sink did not listen on 127.0.0.1:{port} within 15 s:\n{}",
                    cmd::tail(log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Identity for the loopback's git commands, which run without the user's
/// git config.
pub const LOOPBACK_IDENT: &[(&str, &str)] = &[
    ("GIT_AUTHOR_NAME", "khugepaged-rs loopback"),
    ("GIT_AUTHOR_EMAIL", "sender@loopback.invalid"),
    ("GIT_COMMITTER_NAME", "khugepaged-rs loopback"),
    ("GIT_COMMITTER_EMAIL", "sender@loopback.invalid"),
];

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The messages of a Maildir, as (number m of `[.. m/n]`, total n, path),
/// sorted by m.
pub fn maildir_messages(maildir: &Path) -> Result<Vec<(u32, u32, PathBuf)>> {
    let mut v = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(rd) = fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for e in rd {
            let p = e?.path();
            let text = fs::read_to_string(&p)?;
            let h = headers(&text);
            let subject = header(&h, "Subject").with_context(|| format!("{} has no Subject", p.display()))?;
            let (m, n) =
                patch_number(subject).with_context(|| format!("{}: no [m/n] in \"{subject}\"", p.display()))?;
            v.push((m, n, p));
        }
    }
    v.sort();
    Ok(v)
}

/// Send the mailed series through `git send-email` to an SMTP sink on
/// 127.0.0.1 only, `git am` what arrives onto a fresh clone of the base,
/// and check that the tree (and every commit message) equals the mail
/// tree's. The sink is killed afterwards, whatever happens.
pub fn loopback_round_trip(layout: &Layout) -> Result<()> {
    let (tree, commits) = prepare_tree(layout)?;
    let scratch = layout.cache.join("mail/loopback");
    let _ = fs::remove_dir_all(&scratch);
    let out = scratch.join("patches");
    let base = base_report(layout, &tree)?;
    let files = format_series(layout, &tree, 1, &out, &base)?;
    if files.len() != commits.len() + 1 {
        bail!("format-patch wrote {} files for {} commits", files.len(), commits.len());
    }
    let maildir = scratch.join("maildir");
    let port = free_port()?;
    let sink = Sink::start(port, &maildir, &scratch.join("smtp-sink.log"))?;
    eprintln!("  loopback: SMTP sink on 127.0.0.1:{port} (pid {})", sink.child.id());
    // Hermetic: no global or system git config (no sendemail.* from the
    // user), an explicit loopback server, no auth, no TLS, only a local
    // recipient, no Cc of anyone.
    let mut send = Command::new("git");
    send.current_dir(&tree)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .envs(LOOPBACK_IDENT.iter().copied())
        .args([
            "send-email",
            "--smtp-server=127.0.0.1",
            &format!("--smtp-server-port={port}"),
        ])
        .args([
            "--no-smtp-auth",
            "--smtp-encryption=none",
            "--confirm=never",
            "--suppress-cc=all",
            "--no-annotate",
        ])
        .args([
            "--no-format-patch",
            "--8bit-encoding=UTF-8",
            "--from=khugepaged-rs loopback <sender@loopback.invalid>",
        ])
        .args(["--to=khugepaged-rs loopback <mailbox@loopback.invalid>"])
        .args(&files)
        .stdin(Stdio::null());
    let res = send.output().context("cannot run git send-email")?;
    let sent = format!(
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    fs::write(scratch.join("send-email.log"), &sent)?;
    if !res.status.success() {
        bail!(
            "git send-email to the loopback SMTP sink failed ({}):\n{sent}",
            res.status
        );
    }
    let start = Instant::now();
    let msgs = loop {
        let m = maildir_messages(&maildir)?;
        if m.len() >= files.len() || start.elapsed() > Duration::from_secs(10) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(sink);
    let n = commits.len() as u32;
    let numbers: Vec<u32> = msgs.iter().map(|(m, _, _)| *m).collect();
    if numbers != (0..=n).collect::<Vec<_>>() || msgs.iter().any(|(_, t, _)| *t != n) {
        bail!(
            "the sink received {} message(s) numbered {numbers:?}; expected 0..={n}\nsend-email said:\n{sent}",
            msgs.len()
        );
    }
    // The cover letter arrived with the subject from cover-letter.txt.
    let cover_text = fs::read_to_string(&msgs[0].2)?;
    let want = fs::read_to_string(cover_letter_file(layout))?;
    let want = want.lines().next().unwrap_or("").trim();
    let got = header(&headers(&cover_text), "Subject").unwrap_or("").to_string();
    if strip_tags(&got) != want {
        bail!("the cover letter arrived with subject \"{got}\", expected \"{want}\"");
    }
    // Apply onto a fresh clone at the base tag.
    let clone = scratch.join("linux");
    let pb = cmd::stage_bar("loopback");
    pb.set_message("fresh clone of the base");
    crate::base::clone_to(layout, &clone, "loopback")?;
    pb.finish_and_clear();
    for (m, _, p) in &msgs[1..] {
        let r = cmd::output(
            cmd::git(&clone, ["am", "-q"])
                .envs(LOOPBACK_IDENT.iter().copied())
                .arg(p),
        );
        if let Err(e) = r {
            bail!(
                "received patch {m}/{n} ({}) does not apply with git am:\n{e:#}",
                p.display()
            );
        }
    }
    let tree_id =
        |dir: &Path| cmd::output(&mut cmd::git(dir, ["rev-parse", "HEAD^{tree}"])).map(|s| s.trim().to_string());
    let (want_tree, got_tree) = (tree_id(&tree)?, tree_id(&clone)?);
    if want_tree != got_tree {
        let diff = cmd::output(&mut cmd::git(&clone, ["diff", "--stat", &want_tree, &got_tree])).unwrap_or_default();
        bail!("round trip changed the tree: mail tree {want_tree}, received {got_tree}\n{diff}");
    }
    let log = |dir: &Path| {
        cmd::output(&mut cmd::git(
            dir,
            [
                "log",
                "--reverse",
                "--format=%an <%ae>%n%B%x00",
                &format!("{BASE_TAG}..HEAD"),
            ],
        ))
    };
    if log(&tree)? != log(&clone)? {
        bail!("round trip changed an author or a commit message (tree {got_tree} is identical)");
    }
    let _ = fs::remove_dir_all(&clone);
    eprintln!(
        "  loopback: {} mail(s) through 127.0.0.1:{port}, {n} patch(es) applied on {BASE_TAG}: tree {got_tree} identical, messages identical",
        msgs.len()
    );
    Ok(())
}
