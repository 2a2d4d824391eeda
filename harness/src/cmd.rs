//! Running external tools: every failure names the command that failed.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run and capture stdout; fail with stderr if the command fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run with inherited stdio; fail if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    if !st.success() {
        bail!("`{}` failed ({st})", describe(cmd));
    }
    Ok(())
}

pub fn git<I, S>(dir: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new("git");
    c.arg("-C").arg(dir).args(args);
    c
}

/// Last `n` lines of a text file, for error reports.
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(f) = File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(|l| l.ok()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn stage_bar(stage: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix:.bold} {wide_msg}")
            .expect("static template"),
    );
    pb.set_prefix(stage.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Run a long step with its output in `log`, a spinner showing the stage,
/// elapsed time and the log's last line; on failure, the log's tail.
pub fn logged(stage: &str, cmd: &mut Command, log: &Path, timeout: Option<Duration>) -> Result<Duration> {
    use wait_timeout::ChildExt;
    let f = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    let pb = stage_bar(stage);
    let status = loop {
        if let Some(st) = child.wait_timeout(Duration::from_millis(500))? {
            break st;
        }
        let last = tail(log, 1);
        pb.set_message(last.chars().take(100).collect::<String>());
        if let Some(t) = timeout {
            if start.elapsed() > t {
                let _ = child.kill();
                let _ = child.wait();
                pb.finish_and_clear();
                bail!(
                    "{stage}: timed out after {}s and was killed; last lines of {}:\n{}",
                    t.as_secs(),
                    log.display(),
                    tail(log, 30)
                );
            }
        }
    };
    pb.finish_and_clear();
    let took = start.elapsed();
    if !status.success() {
        bail!(
            "{stage} failed ({status}); full log {}; last lines:\n{}",
            log.display(),
            tail(log, 40)
        );
    }
    eprintln!("  {stage}: done in {:.1}s", took.as_secs_f64());
    Ok(took)
}
