//! Progress when standard error is not a terminal (CI, a pipe), where the
//! indicatif spinners draw nothing for the whole kernel build: every
//! [`INTERVAL`] a line `  <stage>: <elapsed>s, last: <last output>` from a
//! background thread that stops with the step.

use indicatif::WeakProgressBar;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cmd;

pub const INTERVAL: Duration = Duration::from_secs(45);

/// How much of the last output a heartbeat line shows.
const LAST_CHARS: usize = 100;

/// How often the thread looks whether a spinner's step has finished.
const POLL: Duration = Duration::from_millis(250);

/// Where a step's last output comes from.
pub enum Source {
    /// The last non-empty line of the step's log (kbuild: the last target).
    Log(PathBuf),
    /// The spinner's message; the heartbeat also stops when it finishes.
    Bar(WeakProgressBar),
}

impl Source {
    /// The last output, or None once the spinner is finished or gone.
    fn last(&self) -> Option<String> {
        match self {
            Source::Log(p) => Some(cmd::last_line(p).unwrap_or_default()),
            Source::Bar(w) => w.upgrade().filter(|b| !b.is_finished()).map(|b| b.message()),
        }
    }
}

/// `  <stage>: <elapsed>s, last: <last>`, `last` trimmed to about 100 chars.
pub fn line(stage: &str, elapsed: Duration, last: &str) -> String {
    let last = last.trim();
    let mut short: String = last.chars().take(LAST_CHARS).collect();
    if short.len() < last.len() {
        short.push_str("...");
    }
    if short.is_empty() {
        short.push_str("(no output yet)");
    }
    format!("  {stage}: {}s, last: {short}", elapsed.as_secs())
}

/// The thread; stopped (and joined) by [`Heartbeat::stop`] or on drop.
pub struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Beat every `interval` from `start`, writing each line with `out`.
    pub fn start(
        stage: &str,
        source: Source,
        start: Instant,
        interval: Duration,
        out: impl Fn(&str) + Send + 'static,
    ) -> Heartbeat {
        let (tx, rx) = mpsc::channel::<()>();
        let stage = stage.to_string();
        let thread = std::thread::spawn(move || {
            let mut next = start + interval;
            loop {
                let now = Instant::now();
                let wait = next.saturating_duration_since(now).min(POLL);
                match rx.recv_timeout(wait) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let Some(last) = source.last() else { return };
                let now = Instant::now();
                if now >= next {
                    out(&line(&stage, now - start, &last));
                    while next <= now {
                        next += interval;
                    }
                }
            }
        });
        Heartbeat {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn heartbeat_line_format() {
        assert_eq!(
            line(
                "build kernel",
                Duration::from_millis(90_400),
                "  CC      mm/khugepaged.o\n"
            ),
            "  build kernel: 90s, last: CC      mm/khugepaged.o"
        );
        assert_eq!(
            line("guest", Duration::from_secs(45), ""),
            "  guest: 45s, last: (no output yet)"
        );
        let long = "x".repeat(300);
        let l = line("s", Duration::ZERO, &long);
        assert_eq!(l, format!("  s: 0s, last: {}...", "x".repeat(100)));
        // Trimmed by characters, not bytes.
        let wide = "é".repeat(150);
        assert_eq!(
            line("s", Duration::ZERO, &wide),
            format!("  s: 0s, last: {}...", "é".repeat(100))
        );
    }

    fn collector() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Send + 'static) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        (lines, move |s: &str| l.lock().unwrap().push(s.to_string()))
    }

    fn wait_for(lines: &Mutex<Vec<String>>, n: usize) {
        let t = Instant::now();
        while lines.lock().unwrap().len() < n && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn heartbeat_reports_the_log_and_stops_with_the_step() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("build.log");
        fs_err::write(&log, "  CC      mm/khugepaged.o\n\n").unwrap();
        let (lines, out) = collector();
        let hb = Heartbeat::start(
            "build kernel",
            Source::Log(log.clone()),
            Instant::now(),
            Duration::from_millis(30),
            out,
        );
        wait_for(&lines, 2);
        hb.stop();
        let n = lines.lock().unwrap().len();
        assert!(n >= 2, "{:?}", lines.lock().unwrap());
        assert!(lines.lock().unwrap()[0].starts_with("  build kernel: 0s, last: CC      mm/khugepaged.o"));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(lines.lock().unwrap().len(), n, "a beat after stop");
    }

    #[test]
    fn heartbeat_shows_the_spinner_message_and_ends_with_it() {
        let pb = indicatif::ProgressBar::hidden();
        pb.set_message("khugepaged all:shmem");
        let (lines, out) = collector();
        let hb = Heartbeat::start(
            "guest",
            Source::Bar(pb.downgrade()),
            Instant::now(),
            Duration::from_millis(30),
            out,
        );
        wait_for(&lines, 1);
        assert_eq!(lines.lock().unwrap()[0], "  guest: 0s, last: khugepaged all:shmem");
        pb.finish_and_clear();
        // The thread ends by itself once the spinner is finished.
        let t = Instant::now();
        while hb.thread.as_ref().is_some_and(|t| !t.is_finished()) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(hb.thread.as_ref().unwrap().is_finished());
    }
}
