//! Choosing the accelerator. `/dev/kvm` existing is not enough: on nested
//! software hypervisors it exists and cannot run a guest. So KVM is used
//! only if a tiny probe guest (busybox and an /init that prints the CPU
//! count and powers off) boots under it within [`PROBE_TIMEOUT`] and sees
//! every vCPU. The decision is [`choose`], a function of what was asked,
//! the device and the probe's outcome, so that every branch is testable on
//! a machine where KVM does not work.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::arch::Machine;
use crate::guest::{self, Accel, Boot};

/// The probe's console line: `KHRS-PROBE cpus=N`.
pub const PROBE_MARKER: &str = "KHRS-PROBE cpus=";

/// A KVM guest reaches /init in about a second; 30 s is a dead KVM.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// After the marker, how long QEMU may take to power off (or reboot, which
/// `-no-reboot` turns into an exit) before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// /init of the probe. The marker goes to the console; `poweroff -f`
/// needs ACPI, and if it does not power off, init exiting panics the
/// kernel, `panic=-1` reboots it and `-no-reboot` ends QEMU.
const PROBE_INIT: &str = r#"#!/bin/sh
# /init of the accelerator probe: print the CPU count, power off.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "KHRS-PROBE cpus=$(/bin/busybox grep -c ^processor /proc/cpuinfo)" >/dev/console
/bin/busybox poweroff -f
"#;

/// Build the probe's initramfs in `dir`: /bin/busybox (a copy of `busybox`, a static one:
/// the probe runs only where KVM can run the guest, i.e. on a host of its architecture),
/// /bin/sh and /init. Returns the gzipped cpio.
pub fn probe_initramfs(dir: &Path, busybox: &Path) -> Result<PathBuf> {
    let root = dir.join("probe-initramfs");
    let _ = fs::remove_dir_all(&root);
    for d in ["bin", "proc", "dev"] {
        fs::create_dir_all(root.join(d)).with_context(|| format!("creating {}", root.join(d).display()))?;
    }
    fs::copy(busybox, root.join("bin/busybox")).context("copying the guest's static busybox")?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
    let init = root.join("init");
    fs::write(&init, PROBE_INIT)?;
    fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = dir.join("probe.cpio.gz");
    guest::cpio_gz(&root, &out)?;
    Ok(out)
}

/// The CPU count of the marker in a console log, if the marker is there.
pub fn parse_marker(console: &str) -> Option<u32> {
    console.lines().find_map(|l| {
        let rest = &l[l.find(PROBE_MARKER)? + PROBE_MARKER.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// A probe guest that printed the marker with the expected CPU count.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    /// From starting QEMU to the marker on the console.
    pub seconds: f64,
    pub cpus: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeFailure {
    /// The initramfs could not be built or QEMU not started.
    Setup(String),
    /// QEMU ended before the marker: its exit status (`exit status: 1`,
    /// `signal: 6 (SIGABRT)`) and standard error.
    QemuExit { status: String, stderr: String },
    /// No marker within the timeout (QEMU was killed).
    NoMarker { seconds: u64 },
    /// The guest saw fewer (or more) CPUs than asked for.
    Cpus { got: u32, want: u32 },
    /// One of the above, kept from an earlier probe in this host boot
    /// (see [`crate::probe_memo`]), as it was printed then.
    Remembered { failure: String, memo: PathBuf },
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ProbeFailure::Setup(e) => write!(f, "{e}"),
            ProbeFailure::QemuExit { status, stderr } => {
                write!(f, "qemu {status} before the marker")?;
                let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                if lines.is_empty() {
                    return Ok(());
                }
                let text = lines.join("; ");
                let mut short: String = text.chars().take(300).collect();
                if short.len() < text.len() {
                    short.push_str("...");
                }
                write!(f, ": {short}")
            }
            ProbeFailure::NoMarker { seconds } => write!(f, "no marker within {seconds} s"),
            ProbeFailure::Cpus { got, want } => write!(f, "cpus={got} of {want}"),
            ProbeFailure::Remembered { failure, memo } => write!(
                f,
                "{failure} (kept from an earlier probe in this host boot: delete {} to probe again)",
                memo.display()
            ),
        }
    }
}

/// Boot `kernel` with the probe initramfs (built in `dir`, which also gets
/// the probe's console log) on `cpus` vCPUs under `accel`.
pub fn run_probe(
    machine: &Machine,
    kernel: &Path,
    dir: &Path,
    busybox: &Path,
    cpus: u32,
    accel: Accel,
    timeout: Duration,
) -> Result<Probed, ProbeFailure> {
    use wait_timeout::ChildExt;
    let setup = |e: anyhow::Error| ProbeFailure::Setup(format!("{e:#}"));
    fs::create_dir_all(dir)
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(setup)?;
    let initramfs = probe_initramfs(dir, busybox).map_err(setup)?;
    let boot = Boot {
        name: "guest",
        machine,
        kernel,
        initramfs: &initramfs,
        disks: &[],
        cpus,
        mem_mb: 256,
        accel,
        append: "",
        timeout,
        console: dir.join("probe-console.log"),
        tests: dir.join("probe-tests.log"),
        extra_args: &[],
    };
    let _ = fs::remove_file(&boot.console);
    let mut c = guest::qemu(&boot, accel);
    let start = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| ProbeFailure::Setup(format!("cannot start `{}`: {e}", crate::cmd::describe(&c))))?;
    let marker = || parse_marker(&fs::read_to_string(&boot.console).unwrap_or_default());
    let mut seen: Option<(u32, f64)> = None;
    let exited = loop {
        let status = child
            .wait_timeout(Duration::from_millis(100))
            .map_err(|e| ProbeFailure::Setup(format!("waiting for qemu: {e}")))?;
        if seen.is_none() {
            seen = marker().map(|n| (n, start.elapsed().as_secs_f64()));
        }
        if let Some(st) = status {
            break Some(st);
        }
        let limit = match seen {
            Some((_, t)) => Duration::from_secs_f64(t) + EXIT_GRACE,
            None => timeout,
        };
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
    };
    match (seen, exited) {
        (Some((got, _)), _) if got != cpus => Err(ProbeFailure::Cpus { got, want: cpus }),
        (Some((got, seconds)), _) => Ok(Probed { seconds, cpus: got }),
        (None, None) => Err(ProbeFailure::NoMarker {
            seconds: timeout.as_secs(),
        }),
        (None, Some(st)) => {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            Err(ProbeFailure::QemuExit {
                status: st.to_string(),
                stderr,
            })
        }
    }
}

/// What `/dev/kvm` is to this process, for the guest's architecture.
#[derive(Debug, Clone, PartialEq)]
pub enum KvmDevice {
    /// KVM cannot run the guest's architecture on this host (why).
    WrongHost(String),
    Missing,
    /// It exists but does not open read-write (the error).
    Unopenable(String),
    Openable,
}

pub fn kvm_device(path: &Path) -> KvmDevice {
    if !path.exists() {
        return KvmDevice::Missing;
    }
    match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => KvmDevice::Openable,
        Err(e) => KvmDevice::Unopenable(e.to_string()),
    }
}

/// The accelerator chosen and why, printed as `accel: kvm (why)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub accel: Accel,
    pub reason: String,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let name = match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::Auto => "auto",
        };
        write!(f, "accel: {name} ({})", self.reason)
    }
}

/// Decide from the request, the device and (only when both allow KVM) the
/// probe. `--accel kvm` that cannot work is an error naming the reason.
pub fn choose(
    requested: Accel,
    device: &KvmDevice,
    probe: impl FnOnce() -> Result<Probed, ProbeFailure>,
) -> Result<Choice> {
    let tcg = |reason: String| {
        if requested == Accel::Kvm {
            bail!("--accel kvm, but {reason}");
        }
        Ok(Choice {
            accel: Accel::Tcg,
            reason,
        })
    };
    match (requested, device) {
        (Accel::Tcg, _) => tcg("--accel tcg".into()),
        (_, KvmDevice::WrongHost(why)) => tcg(why.clone()),
        (_, KvmDevice::Missing) => tcg("/dev/kvm missing".into()),
        (_, KvmDevice::Unopenable(e)) => tcg(format!("/dev/kvm does not open read-write: {e}")),
        (_, KvmDevice::Openable) => match probe() {
            Ok(p) => Ok(Choice {
                accel: Accel::Kvm,
                reason: format!(
                    "{}probe booted in {:.1} s, {} CPUs",
                    if requested == Accel::Kvm { "--accel kvm, " } else { "" },
                    p.seconds,
                    p.cpus
                ),
            }),
            Err(f) => tcg(format!("KVM probe failed: {f}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn ok() -> Result<Probed, ProbeFailure> {
        Ok(Probed { seconds: 1.23, cpus: 2 })
    }
    fn not_run() -> Result<Probed, ProbeFailure> {
        panic!("the probe must not run here")
    }
    fn reason(r: Result<Choice>) -> String {
        let c = r.expect("a choice");
        assert_eq!(c.accel, Accel::Tcg, "{c}");
        c.to_string()
    }
    fn error(r: Result<Choice>) -> String {
        format!("{:#}", r.expect_err("an error"))
    }

    #[test]
    fn tcg_requested_is_tcg_without_device_or_probe() {
        for d in [
            KvmDevice::Missing,
            KvmDevice::Openable,
            KvmDevice::Unopenable("x".into()),
        ] {
            assert_eq!(reason(choose(Accel::Tcg, &d, not_run)), "accel: tcg (--accel tcg)");
        }
    }

    #[test]
    fn auto_falls_back_to_tcg_and_says_why() {
        assert_eq!(
            reason(choose(Accel::Auto, &KvmDevice::Missing, not_run)),
            "accel: tcg (/dev/kvm missing)"
        );
        assert_eq!(
            reason(choose(
                Accel::Auto,
                &KvmDevice::Unopenable("Permission denied (os error 13)".into()),
                not_run
            )),
            "accel: tcg (/dev/kvm does not open read-write: Permission denied (os error 13))"
        );
        let fails = [
            (
                ProbeFailure::QemuExit {
                    status: "exit status: 1".into(),
                    stderr: "qemu-system-x86_64: failed to initialize kvm: No such device\n\n".into(),
                },
                "accel: tcg (KVM probe failed: qemu exit status: 1 before the marker: \
                 qemu-system-x86_64: failed to initialize kvm: No such device)",
            ),
            (
                // What the nested hypervisor of this project's machine does.
                ProbeFailure::QemuExit {
                    status: "signal: 6 (SIGABRT) (core dumped)".into(),
                    stderr: "qemu-system-x86_64: error: failed to set MSR 0x10a to 0xc000069\n\
                             qemu-system-x86_64: target/i386/kvm/kvm.c:3849: kvm_buf_set_msrs: \
                             Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n"
                        .into(),
                },
                "accel: tcg (KVM probe failed: qemu signal: 6 (SIGABRT) (core dumped) before the marker: \
                 qemu-system-x86_64: error: failed to set MSR 0x10a to 0xc000069; \
                 qemu-system-x86_64: target/i386/kvm/kvm.c:3849: kvm_buf_set_msrs: \
                 Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.)",
            ),
            (
                ProbeFailure::QemuExit {
                    status: "exit status: 0".into(),
                    stderr: String::new(),
                },
                "accel: tcg (KVM probe failed: qemu exit status: 0 before the marker)",
            ),
            (
                ProbeFailure::NoMarker { seconds: 30 },
                "accel: tcg (KVM probe failed: no marker within 30 s)",
            ),
            (
                ProbeFailure::Cpus { got: 1, want: 2 },
                "accel: tcg (KVM probe failed: cpus=1 of 2)",
            ),
            (
                ProbeFailure::Setup("copying /bin/busybox (busybox-static): not found".into()),
                "accel: tcg (KVM probe failed: copying /bin/busybox (busybox-static): not found)",
            ),
        ];
        for (f, want) in fails {
            assert_eq!(reason(choose(Accel::Auto, &KvmDevice::Openable, || Err(f))), want);
        }
    }

    #[test]
    fn auto_uses_kvm_when_the_probe_boots() {
        let c = choose(Accel::Auto, &KvmDevice::Openable, ok).unwrap();
        assert_eq!(c.accel, Accel::Kvm);
        assert_eq!(c.to_string(), "accel: kvm (probe booted in 1.2 s, 2 CPUs)");
    }

    #[test]
    fn kvm_requested_uses_kvm_or_fails_naming_the_reason() {
        let c = choose(Accel::Kvm, &KvmDevice::Openable, ok).unwrap();
        assert_eq!(c.accel, Accel::Kvm);
        assert_eq!(c.to_string(), "accel: kvm (--accel kvm, probe booted in 1.2 s, 2 CPUs)");
        assert_eq!(
            error(choose(Accel::Kvm, &KvmDevice::Missing, not_run)),
            "--accel kvm, but /dev/kvm missing"
        );
        assert_eq!(
            error(choose(Accel::Kvm, &KvmDevice::Unopenable("EACCES".into()), not_run)),
            "--accel kvm, but /dev/kvm does not open read-write: EACCES"
        );
        assert_eq!(
            error(choose(Accel::Kvm, &KvmDevice::Openable, || Err(
                ProbeFailure::NoMarker { seconds: 30 }
            ))),
            "--accel kvm, but KVM probe failed: no marker within 30 s"
        );
        assert_eq!(
            error(choose(Accel::Kvm, &KvmDevice::Openable, || Err(ProbeFailure::Cpus {
                got: 1,
                want: 2
            }))),
            "--accel kvm, but KVM probe failed: cpus=1 of 2"
        );
    }

    #[test]
    fn kvm_device_states() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(kvm_device(&d.path().join("kvm")), KvmDevice::Missing);
        let f = d.path().join("file");
        fs::write(&f, "").unwrap();
        assert_eq!(kvm_device(&f), KvmDevice::Openable);
        // A directory exists and does not open for writing.
        assert!(matches!(kvm_device(d.path()), KvmDevice::Unopenable(_)));
    }

    #[test]
    fn marker_is_found_among_kernel_lines() {
        let console = "[    0.912] Run /init as init process\r\nKHRS-PROBE cpus=2\r\n[    1.0] reboot: Power down\r\n";
        assert_eq!(parse_marker(console), Some(2));
        assert_eq!(parse_marker("[ 1.0] x KHRS-PROBE cpus=16\n"), Some(16));
        assert_eq!(parse_marker("Run /init as init process\n"), None);
        assert_eq!(parse_marker("KHRS-PROBE cpus=\n"), None);
    }

    #[test]
    fn probe_initramfs_holds_busybox_and_an_init_that_prints_the_marker() {
        let d = tempfile::tempdir().unwrap();
        let busybox = d.path().join("a-static-busybox");
        fs::write(&busybox, b"\x7fELF stand-in").unwrap();
        let img = probe_initramfs(d.path(), &busybox).unwrap();
        let list = crate::cmd::output(
            Command::new("sh")
                .arg("-c")
                .arg(format!("gzip -dc '{}' | cpio -t --quiet", img.display())),
        )
        .unwrap();
        let mut names: Vec<&str> = list.lines().collect();
        names.sort();
        assert_eq!(names, [".", "bin", "bin/busybox", "bin/sh", "dev", "init", "proc"]);
        let verbose = crate::cmd::output(
            Command::new("sh")
                .arg("-c")
                .arg(format!("gzip -dc '{}' | cpio -tv --quiet", img.display())),
        )
        .unwrap();
        let init_line = verbose.lines().find(|l| l.ends_with(" init")).unwrap();
        assert!(init_line.starts_with("-rwxr-xr-x"), "{init_line}");
        assert!(init_line.contains(" root "), "{init_line}");
        let init = crate::cmd::output(Command::new("sh").arg("-c").arg(format!(
            "gzip -dc '{}' | cpio -i --quiet --to-stdout init",
            img.display()
        )))
        .unwrap();
        assert!(init.starts_with("#!/bin/sh\n"));
        assert!(init.contains("mount -t proc proc /proc"));
        assert!(init.contains("echo \"KHRS-PROBE cpus=$(/bin/busybox grep -c ^processor /proc/cpuinfo)\""));
        assert!(init.contains("poweroff -f"));
        assert_eq!(
            fs::read(d.path().join("probe-initramfs/bin/busybox")).unwrap(),
            fs::read(&busybox).unwrap()
        );
    }

    /// The real probe path, under TCG, with the default build's bzImage: the clone's, or
    /// the suite's (`cargo harness test` builds it before it runs the unit tests).
    /// Skipped, with a message on stderr, when neither image exists.
    #[test]
    fn probe_boots_under_tcg_with_2_cpus_or_skips_without_bzimage() {
        let layout = crate::layout::Layout::discover();
        let m = &crate::arch::X86_64_PC;
        let image_in = |tree: PathBuf| crate::layout::Layout::build_dir(&tree, &m.build_name("default")).join(m.image);
        let images = [
            image_in(layout.work_tree()),
            image_in(layout.with_suite_trees().work_tree()),
        ];
        let Some(image) = images.iter().find(|i| i.exists()) else {
            eprintln!(
                "SKIPPED probe_boots_under_tcg_with_2_cpus_or_skips_without_bzimage: no kernel at {} or {}",
                images[0].display(),
                images[1].display()
            );
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let busybox = Path::new(crate::toolchain::HOST_BUSYBOX);
        let r = run_probe(m, image, d.path(), busybox, 2, Accel::Tcg, Duration::from_secs(60));
        let console = fs::read_to_string(d.path().join("probe-console.log")).unwrap_or_default();
        let p = r.unwrap_or_else(|e| panic!("probe under TCG failed: {e}; console:\n{console}"));
        assert_eq!(p.cpus, 2);
        assert!(console.contains("KHRS-PROBE cpus=2"), "{console}");
        eprintln!("probe under TCG: marker after {:.1} s", p.seconds);
    }
}
