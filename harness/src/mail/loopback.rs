//! The loopback round trip: both series, the fixes first and then the RFC
//! on top, through `git send-email` to an SMTP sink on 127.0.0.1, signed
//! off by a loopback sender; what arrives is applied with `git am` onto a
//! fresh clone of the base (the fixes on the base tag, the RFC on the fixes
//! that arrived) and the trees and commit messages are compared with the
//! mail trees'. With b4 installed, the RFC's mbox also goes through
//! `b4 am`.

use anyhow::{anyhow, bail, Context, Result};
use fs_err as fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::base::patch_ids;
use super::checks::{check_mail_patch, header, headers, patch_number, strip_tags};
use super::forbidden::Forbidden;
use super::identity::Identity;
use super::{base_report, format_series, prepare_tree, Mailing, SeriesName, Signing, SYSTEM_PYTHON};
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
            .stdout(f.try_clone()?.into_parts().0)
            .stderr(f.into_parts().0)
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

/// The loopback's sender: it signs off, so that the `--signoff` path
/// (re-authoring, trailers, From:) runs end to end.
pub const LOOPBACK_FROM: &str = "Loopback Test <loopback@khrs-loopback.org>";
/// The loopback's Assisted-by value.
const LOOPBACK_ASSISTED_BY: &str = "LLM";

/// What one series' round trip found.
struct Trip {
    name: &'static str,
    mails: usize,
    patches: usize,
    port: u16,
    tree: String,
    /// The received mails, in order (cover letter first).
    received: Vec<PathBuf>,
}

/// Send both series through `git send-email` to an SMTP sink on 127.0.0.1
/// only, `git am` what arrives onto a fresh clone of the base, and check
/// that the trees (and every commit message and author) equal the mail
/// trees'. The sink is killed after each series, whatever happens.
pub fn loopback_round_trip(layout: &Layout) -> Result<()> {
    let sender = Identity::parse(LOOPBACK_FROM).map_err(|e| anyhow!(e))?;
    sender.check().map_err(|e| anyhow!("the loopback sender: {e}"))?;
    let signing = Signing {
        sender,
        source: "the loopback".into(),
        problem: None,
        signoff: true,
        assisted_by: Some(LOOPBACK_ASSISTED_BY.into()),
    };
    let scratch = layout.cache.join("mail/loopback");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let forbidden = Forbidden::load(layout)?;
    // One clone receives both series: the fixes on the base tag, then the
    // RFC on top of the fixes as they arrived.
    let clone = scratch.join("linux");
    let pb = cmd::stage_bar("loopback");
    pb.set_message("fresh clone of the base");
    crate::base::clone_to(layout, &clone, "loopback")?;
    pb.finish_and_clear();
    let mut trips = Vec::new();
    for series in [SeriesName::Fixes, SeriesName::Rfc] {
        let m = Mailing::new(layout, series, 1)?;
        let t = round_trip(layout, &m, &signing, &forbidden, &scratch, &clone)
            .with_context(|| format!("the {} series", m.name()))?;
        eprintln!(
            "  loopback {}: {} mail(s) through 127.0.0.1:{}, {} patch(es) applied with git am{}: tree {} identical, \
             messages and authors identical, every patch ends with Assisted-by: {LOOPBACK_ASSISTED_BY} and \
             Signed-off-by: {LOOPBACK_FROM}",
            t.name,
            t.mails,
            t.port,
            t.patches,
            if m.below.is_empty() {
                format!(" on {BASE_TAG}")
            } else {
                " on the received fixes".to_string()
            },
            t.tree
        );
        trips.push(t);
    }
    b4_check(layout, &scratch, &trips)?;
    let _ = fs::remove_dir_all(&clone);
    Ok(())
}

fn round_trip(
    layout: &Layout,
    m: &Mailing,
    signing: &Signing,
    forbidden: &Forbidden,
    scratch: &Path,
    clone: &Path,
) -> Result<Trip> {
    let prep = prepare_tree(layout, m, signing)?;
    let tree = prep.tree.clone();
    let dir = scratch.join(m.name());
    let base = base_report(layout, &tree)?;
    let files = format_series(m, &prep, signing, &base, &dir.join("patches"))?;
    if files.len() != prep.commits.len() + 1 {
        bail!(
            "format-patch wrote {} files for {} commits",
            files.len(),
            prep.commits.len()
        );
    }
    for f in &files {
        let text = fs::read_to_string(f)?;
        forbidden
            .check_mail(&text, true)
            .map_err(|e| anyhow!("refusing to mail {}: {e}", f.display()))?;
    }
    let maildir = dir.join("maildir");
    let port = free_port()?;
    let sink = Sink::start(port, &maildir, &dir.join("smtp-sink.log"))?;
    eprintln!(
        "  loopback {}: SMTP sink on 127.0.0.1:{port} (pid {})",
        m.name(),
        sink.child.id()
    );
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
        .args(["--no-format-patch", "--8bit-encoding=UTF-8"])
        .arg(format!("--from={}", signing.sender))
        .args(["--to=khugepaged-rs loopback <mailbox@loopback.invalid>"])
        .args(&files)
        .stdin(Stdio::null());
    let res = send.output().context("cannot run git send-email")?;
    let sent = format!(
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    fs::write(dir.join("send-email.log"), &sent)?;
    if !res.status.success() {
        bail!(
            "git send-email to the loopback SMTP sink failed ({}):\n{sent}",
            res.status
        );
    }
    let start = Instant::now();
    let msgs = loop {
        let got = maildir_messages(&maildir)?;
        if got.len() >= files.len() || start.elapsed() > Duration::from_secs(10) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(sink);
    let n = prep.commits.len() as u32;
    let numbers: Vec<u32> = msgs.iter().map(|(i, _, _)| *i).collect();
    if numbers != (0..=n).collect::<Vec<_>>() || msgs.iter().any(|(_, t, _)| *t != n) {
        bail!(
            "the sink received {} message(s) numbered {numbers:?}; expected 0..={n}\nsend-email said:\n{sent}",
            msgs.len()
        );
    }
    // The cover letter arrived with the subject from cover-letter.txt, and
    // for the RFC with the patch ids of the fixes as they arrived.
    let cover_text = fs::read_to_string(&msgs[0].2)?;
    let want = m.cover_subject()?;
    let got = header(&headers(&cover_text), "Subject").unwrap_or("").to_string();
    if strip_tags(&got) != want {
        bail!("the cover letter arrived with subject \"{got}\", expected \"{want}\"");
    }
    let prereq: Vec<String> = cover_text
        .lines()
        .filter_map(|l| l.strip_prefix("prerequisite-patch-id: "))
        .map(|s| s.trim().to_string())
        .collect();
    let below_ids = patch_ids(clone, &format!("{BASE_TAG}..HEAD"))?;
    if prereq != below_ids {
        bail!(
            "the cover letter's prerequisite-patch-id lines {prereq:?} are not the patch ids of what the \
             clone holds below the series {below_ids:?}"
        );
    }
    if !cover_text.lines().any(|l| l.starts_with("base-commit: ")) {
        bail!("the cover letter arrived without a base-commit: line");
    }
    // Every received patch: the sender in From:, the trailers in order.
    let expect = signing.expect();
    for (i, _, p) in &msgs[1..] {
        let text = fs::read_to_string(p)?;
        check_mail_patch(&text, &expect).map_err(|e| anyhow!("received patch {i}/{n} ({}): {e}", p.display()))?;
    }
    // Apply onto the clone: the base tag for the fixes, the received fixes
    // for the RFC.
    let start_commit = cmd::output(&mut cmd::git(clone, ["rev-parse", "HEAD"]))?
        .trim()
        .to_string();
    for (i, _, p) in &msgs[1..] {
        let r = cmd::output(
            cmd::git(clone, ["am", "-q"])
                .envs(LOOPBACK_IDENT.iter().copied())
                .arg(p),
        );
        if let Err(e) = r {
            cmd::output(&mut cmd::git(clone, ["am", "--abort"])).ok();
            bail!(
                "received patch {i}/{n} ({}) does not apply with git am:\n{e:#}",
                p.display()
            );
        }
    }
    let tree_id = |d: &Path| cmd::output(&mut cmd::git(d, ["rev-parse", "HEAD^{tree}"])).map(|s| s.trim().to_string());
    let (want_tree, got_tree) = (tree_id(&tree)?, tree_id(clone)?);
    if want_tree != got_tree {
        let diff = cmd::output(&mut cmd::git(clone, ["diff", "--stat", &want_tree, &got_tree])).unwrap_or_default();
        bail!("round trip changed the tree: mail tree {want_tree}, received {got_tree}\n{diff}");
    }
    let log = |d: &Path, from: &str| {
        cmd::output(&mut cmd::git(
            d,
            [
                "log",
                "--reverse",
                "--format=%an <%ae>%n%B%x00",
                &format!("{from}..HEAD"),
            ],
        ))
    };
    if log(&tree, &prep.below)? != log(clone, &start_commit)? {
        bail!("round trip changed an author or a commit message (tree {got_tree} is identical)");
    }
    Ok(Trip {
        name: m.name(),
        mails: msgs.len(),
        patches: n as usize,
        port,
        tree: got_tree,
        received: msgs.into_iter().map(|(_, _, p)| p).collect(),
    })
}

/// With b4 installed: the RFC's mails as an mbox through `b4 am`, applied
/// onto the base with the received fixes, must give the same tree. Without
/// it, say that b4 was not checked (nothing is installed for it).
fn b4_check(layout: &Layout, scratch: &Path, trips: &[Trip]) -> Result<()> {
    let have_b4 = Command::new("sh")
        .args(["-c", "command -v b4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_b4 {
        eprintln!("  loopback: b4 is not installed: the RFC's mbox was NOT checked with `b4 am` (only git am)");
        return Ok(());
    }
    let (Some(fixes), Some(rfc)) = (trips.first(), trips.get(1)) else {
        bail!("the b4 check needs the fixes and the RFC round trips");
    };
    let dir = scratch.join("b4");
    fs::create_dir_all(&dir)?;
    let mbox = dir.join("rfc.mbox");
    let mut text = String::new();
    for p in &rfc.received {
        text.push_str("From loopback@khrs-loopback.org Thu Jan  1 00:00:00 1970\n");
        for l in fs::read_to_string(p)?.lines() {
            // mboxo: a body line that starts with "From " would start a new message.
            if l.trim_start_matches('>').starts_with("From ") {
                text.push('>');
            }
            text.push_str(l);
            text.push('\n');
        }
        text.push('\n');
    }
    fs::write(&mbox, text)?;
    let out = dir.join("out");
    // b4 0.12 does not make its output directory.
    fs::create_dir_all(&out)?;
    let log = cmd::output(
        Command::new("b4")
            .current_dir(&dir)
            .args(["am", "-m"])
            .arg(&mbox)
            .arg("-o")
            .arg(&out)
            .args(["-n", "rfc"]),
    )
    .context("b4 am on the RFC's mbox")?;
    fs::write(dir.join("b4-am.log"), &log)?;
    let mbx = out.join("rfc.mbx");
    if !mbx.is_file() {
        bail!("b4 am wrote no {}:\n{log}", mbx.display());
    }
    let clone = dir.join("linux");
    crate::base::clone_to(layout, &clone, "b4")?;
    for p in &fixes.received[1..] {
        cmd::output(
            cmd::git(&clone, ["am", "-q"])
                .envs(LOOPBACK_IDENT.iter().copied())
                .arg(p),
        )
        .with_context(|| format!("the received fix {} does not apply", p.display()))?;
    }
    cmd::output(
        cmd::git(&clone, ["am", "-q"])
            .envs(LOOPBACK_IDENT.iter().copied())
            .arg(&mbx),
    )
    .context("b4 am's mbox of the RFC does not apply with git am on the base + fixes")?;
    let got = cmd::output(&mut cmd::git(&clone, ["rev-parse", "HEAD^{tree}"]))?
        .trim()
        .to_string();
    if got != rfc.tree {
        bail!("b4 am of the RFC gives tree {got}, git am gave {}", rfc.tree);
    }
    let _ = fs::remove_dir_all(&clone);
    eprintln!("  loopback: b4 am of the RFC's mbox, applied on the received fixes: tree {got} identical");
    Ok(())
}
