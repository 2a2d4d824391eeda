//! Running external tools: every failure names the command that failed.

use anyhow::{bail, Context, Result};
use fs_err::File;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, IsTerminal, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::heartbeat::{self, Heartbeat};

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Make the child `cmd` starts die (SIGKILL) when the thread that starts it dies: a QEMU
/// guest must not outlive a harness that was killed (a SIGTERM, a CI job's timeout) and go on
/// using the CPUs and the run's files. Linux's `PR_SET_PDEATHSIG` is per thread, so start such
/// a child from a thread that outlives it (the harness waits for its guests where it starts
/// them).
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: The closure runs in the child between fork and exec. It calls only prctl(2) and
    // getppid(2), which are async-signal-safe, and builds its errors from an errno value
    // (`last_os_error`, `from_raw_os_error`: no allocation), so it takes no lock and touches no
    // state that another thread of the parent may have held at the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nothing will send the signal.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    }
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

/// For tests: `git args` in `dir`, its output; a failure panics with the command and its stderr.
#[cfg(test)]
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    output(&mut git(dir, args)).unwrap_or_else(|e| panic!("{e:#}"))
}

/// For tests: a new repository in `dir` on `branch`, committer `name <email>`, with one
/// commit "base" of `file` holding `text`. Returns that commit's id.
#[cfg(test)]
pub fn git_repo_with_base(dir: &Path, branch: &str, (name, email): (&str, &str), (file, text): (&str, &str)) -> String {
    fs_err::create_dir_all(dir).unwrap();
    git_ok(dir, &["init", "-q", "-b", branch]);
    git_ok(dir, &["config", "user.name", name]);
    git_ok(dir, &["config", "user.email", email]);
    fs_err::write(dir.join(file), text).unwrap();
    git_ok(dir, &["add", file]);
    git_ok(dir, &["commit", "-q", "-m", "base"]);
    git_ok(dir, &["rev-parse", "HEAD"]).trim().to_string()
}

/// Last `n` lines of a text file, for error reports.
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(f) = File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(|l| l.ok()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last non-empty line of a text file (of its last 64 KiB, so that a
/// big build log is cheap to poll), trimmed; None if there is none.
pub fn last_line(path: &Path) -> Option<String> {
    const TAIL_BYTES: u64 = 64 << 10;
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf)
        .split(['\n', '\r'])
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
}

/// Is standard error a terminal? If not (CI, a pipe), the spinners draw
/// nothing and a stage prints its start, a heartbeat and its end instead.
fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A stage's spinner (the methods of [`ProgressBar`] through `Deref`). When
/// standard error is not a terminal it prints `  <stage>: started`, every
/// 45 s a heartbeat line (see [`heartbeat`]) and `  <stage>: ended after Ns`.
pub struct Stage {
    bar: ProgressBar,
    name: String,
    start: Instant,
    beat: Mutex<Option<Heartbeat>>,
}

impl Stage {
    fn new(stage: &str, source: impl FnOnce(&ProgressBar) -> heartbeat::Source) -> Stage {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix:.bold} {wide_msg}")
                .expect("static template"),
        );
        bar.set_prefix(stage.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        let start = Instant::now();
        let beat = (!stderr_is_terminal()).then(|| {
            eprintln!("  {stage}: started");
            Heartbeat::start(stage, source(&bar), start, heartbeat::INTERVAL, |l| eprintln!("{l}"))
        });
        Stage {
            bar,
            name: stage.to_string(),
            start,
            beat: Mutex::new(beat),
        }
    }

    /// Stop the spinner (and the heartbeat); without a terminal, print
    /// `  <stage>: <how> after Ns` unless `how` is None.
    fn end(&self, how: Option<&str>) {
        let beat = self.beat.lock().map(|mut b| b.take()).unwrap_or(None);
        self.bar.finish_and_clear();
        if let Some(b) = beat {
            b.stop();
            if let Some(how) = how {
                eprintln!("  {}: {how} after {}s", self.name, self.start.elapsed().as_secs());
            }
        }
    }

    pub fn finish_and_clear(&self) {
        self.end(Some("ended"));
    }
}

impl std::ops::Deref for Stage {
    type Target = ProgressBar;
    fn deref(&self) -> &ProgressBar {
        &self.bar
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.end(Some("ended"));
    }
}

/// A spinner for a stage whose progress is its message.
pub fn stage_bar(stage: &str) -> Stage {
    Stage::new(stage, |bar| heartbeat::Source::Bar(bar.downgrade()))
}

/// Run a long step with its output in `log`, a spinner showing the stage,
/// elapsed time and the log's last line (without a terminal: the start, a
/// heartbeat every 45 s with the log's last line, the end); on failure,
/// the log's tail.
pub fn logged(stage: &str, cmd: &mut Command, log: &Path, timeout: Option<Duration>) -> Result<Duration> {
    use wait_timeout::ChildExt;
    let f = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone()?.into_parts().0)
        .stderr(f.into_parts().0)
        .spawn()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    let pb = Stage::new(stage, |_| heartbeat::Source::Log(log.to_path_buf()));
    let status = loop {
        if let Some(st) = child.wait_timeout(Duration::from_millis(500))? {
            break st;
        }
        let last = last_line(log).unwrap_or_default();
        pb.set_message(last.chars().take(100).collect::<String>());
        if let Some(t) = timeout {
            if start.elapsed() > t {
                let _ = child.kill();
                let _ = child.wait();
                pb.end(Some("timed out"));
                bail!(
                    "{stage}: timed out after {}s and was killed; last lines of {}:\n{}",
                    t.as_secs(),
                    log.display(),
                    tail(log, 30)
                );
            }
        }
    };
    let took = start.elapsed();
    if !status.success() {
        pb.end(Some("failed"));
        bail!(
            "{stage} failed ({status}); full log {}; last lines:\n{}",
            log.display(),
            tail(log, 40)
        );
    }
    pb.end(None);
    eprintln!("  {stage}: done in {:.1}s", took.as_secs_f64());
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_started_by_die_with_parent_dies_with_its_thread() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::thread::spawn(|| die_with_parent(Command::new("sleep").arg("30")).spawn().unwrap())
            .join()
            .unwrap();
        let start = Instant::now();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(start.elapsed() < Duration::from_secs(10));
        // Without it the child lives on.
        let mut plain = std::thread::spawn(|| Command::new("sleep").arg("30").spawn().unwrap())
            .join()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(plain.try_wait().unwrap().is_none());
        plain.kill().unwrap();
        plain.wait().unwrap();
    }

    #[test]
    fn last_line_is_the_last_non_empty_one() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("build.log");
        assert_eq!(last_line(&log), None, "no file");
        fs_err::write(&log, "").unwrap();
        assert_eq!(last_line(&log), None, "empty file");
        fs_err::write(&log, "  CC      mm/memory.o\n  CC      mm/khugepaged.o\n\n   \n").unwrap();
        assert_eq!(last_line(&log).as_deref(), Some("CC      mm/khugepaged.o"));
        fs_err::write(&log, "first\nno newline at the end").unwrap();
        assert_eq!(last_line(&log).as_deref(), Some("no newline at the end"));
        fs_err::write(&log, "progress 10%\rprogress 90%\r").unwrap();
        assert_eq!(last_line(&log).as_deref(), Some("progress 90%"));
        // A log bigger than the part that is read.
        let mut big = "  LD      vmlinux.o\n".repeat(10_000);
        big.push_str("  BUILD   arch/x86/boot/bzImage\n");
        fs_err::write(&log, big).unwrap();
        assert_eq!(last_line(&log).as_deref(), Some("BUILD   arch/x86/boot/bzImage"));
    }
}
