//! Remembering a failed KVM probe for the rest of the host's boot.
//!
//! Where `/dev/kvm` opens and cannot run a guest (a nested software
//! hypervisor), the probe (see [`crate::accel`]) waits its whole timeout, 30 s,
//! before the harness falls back to TCG, and it did so on every `run`: a third
//! of the edit loop on such a host. What made KVM unusable does not change
//! until the host reboots, KVM is reloaded or QEMU is replaced, so a failure
//! is kept in the cache with a key of exactly those ([`HostKey`]) and recalled
//! while the key is the same. `--accel kvm` always probes again; a success is
//! never kept (a working probe takes a second) and clears what was kept; nor
//! is a failure of the harness's own (no busybox, QEMU not started), which
//! says nothing about KVM.

use anyhow::{Context, Result};
use fs_err as fs;
use std::path::{Path, PathBuf};

use crate::accel::{ProbeFailure, Probed};
use crate::guest::Accel;

/// What a KVM verdict depends on besides the kernel: the host's boot, the
/// `/dev/kvm` node (re-created when KVM is reloaded), the QEMU binary and the
/// vCPU count asked for. One line of text, compared as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey(pub String);

impl HostKey {
    /// The key of this host for `qemu` (a name looked up in `PATH`) and `cpus`.
    pub fn current(qemu: &str, cpus: u32) -> HostKey {
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let kvm = stamp(Path::new("/dev/kvm"));
        let binary = which(qemu).map_or_else(|| "not-in-PATH".into(), |p| format!("{}@{}", p.display(), stamp(&p)));
        HostKey(format!("boot_id={boot_id} kvm={kvm} qemu={binary} cpus={cpus}"))
    }
}

/// Inode, size and change time of `path`: "-" if it cannot be read.
fn stamp(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or_else(
        |_| "-".into(),
        |m| format!("{}:{}:{}.{}", m.ino(), m.size(), m.ctime(), m.ctime_nsec()),
    )
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The file that keeps one failed probe: the key on the first line, the
/// failure as printed on the second.
#[derive(Debug, Clone)]
pub struct ProbeMemo {
    pub path: PathBuf,
    pub key: HostKey,
}

impl ProbeMemo {
    /// The failure kept under this key, if any.
    pub fn recall(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let (key, failure) = text.split_once('\n')?;
        (key == self.key.0 && !failure.trim().is_empty()).then(|| failure.trim().to_string())
    }

    fn remember(&self, failure: &str) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let line = failure.replace('\n', "; ");
        fs::write(&self.path, format!("{}\n{line}\n", self.key.0)).context("keeping the failed KVM probe")
    }

    fn forget(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a failure tells about KVM on this host (and so is worth keeping).
fn about_kvm(f: &ProbeFailure) -> bool {
    matches!(
        f,
        ProbeFailure::QemuExit { .. } | ProbeFailure::NoMarker { .. } | ProbeFailure::Cpus { .. }
    )
}

/// Run `probe`, or recall its failure: the probe [`crate::accel::choose`] is given.
/// A kept failure comes back as [`ProbeFailure::Remembered`], which names the
/// file to delete to probe again.
pub fn probe_or_recall(
    requested: Accel,
    memo: &ProbeMemo,
    probe: impl FnOnce() -> Result<Probed, ProbeFailure>,
) -> Result<Probed, ProbeFailure> {
    if requested != Accel::Kvm {
        if let Some(failure) = memo.recall() {
            return Err(ProbeFailure::Remembered {
                failure,
                memo: memo.path.clone(),
            });
        }
    }
    let r = probe();
    match &r {
        Ok(_) => memo.forget(),
        Err(f) if about_kvm(f) => {
            if let Err(e) = memo.remember(&f.to_string()) {
                eprintln!("  warning: {e:#}");
            }
        }
        Err(_) => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn memo(dir: &Path, key: &str) -> ProbeMemo {
        ProbeMemo {
            path: dir.join("kvm-probe/x86_64"),
            key: HostKey(key.into()),
        }
    }

    #[test]
    fn a_failure_is_kept_and_recalled_without_probing_while_the_key_holds() {
        let d = tempfile::tempdir().unwrap();
        let m = memo(d.path(), "boot_id=a kvm=1 qemu=q cpus=2");
        let first = probe_or_recall(Accel::Auto, &m, || Err(ProbeFailure::NoMarker { seconds: 30 }));
        assert_eq!(first, Err(ProbeFailure::NoMarker { seconds: 30 }));
        let ran = Cell::new(false);
        let second = probe_or_recall(Accel::Auto, &m, || {
            ran.set(true);
            Err(ProbeFailure::NoMarker { seconds: 30 })
        });
        assert!(!ran.get(), "the kept failure must be used");
        let f = second.unwrap_err();
        assert_eq!(
            f.to_string(),
            format!(
                "no marker within 30 s (kept from an earlier probe in this host boot: \
                 delete {} to probe again)",
                m.path.display()
            )
        );
    }

    #[test]
    fn another_boot_or_qemu_or_kvm_probes_again() {
        let d = tempfile::tempdir().unwrap();
        let old = memo(d.path(), "boot_id=a kvm=1 qemu=q cpus=2");
        let _ = probe_or_recall(Accel::Auto, &old, || Err(ProbeFailure::Cpus { got: 1, want: 2 }));
        let new = memo(d.path(), "boot_id=b kvm=1 qemu=q cpus=2");
        assert_eq!(new.recall(), None);
        let r = probe_or_recall(Accel::Auto, &new, || Ok(Probed { seconds: 1.0, cpus: 2 }));
        assert_eq!(r, Ok(Probed { seconds: 1.0, cpus: 2 }));
        // The success cleared the file: the old key finds nothing either.
        assert_eq!(old.recall(), None);
    }

    #[test]
    fn accel_kvm_always_probes_and_a_setup_failure_is_not_kept() {
        let d = tempfile::tempdir().unwrap();
        let m = memo(d.path(), "k");
        let _ = probe_or_recall(Accel::Auto, &m, || {
            Err(ProbeFailure::QemuExit {
                status: "exit status: 1".into(),
                stderr: "could not access KVM\nkernel module".into(),
            })
        });
        assert_eq!(
            m.recall().as_deref(),
            Some("qemu exit status: 1 before the marker: could not access KVM; kernel module")
        );
        let ran = Cell::new(false);
        let r = probe_or_recall(Accel::Kvm, &m, || {
            ran.set(true);
            Err(ProbeFailure::Setup("copying busybox: not found".into()))
        });
        assert!(ran.get(), "--accel kvm must probe");
        assert_eq!(r, Err(ProbeFailure::Setup("copying busybox: not found".into())));
        // The setup failure did not replace the KVM one.
        assert!(m.recall().unwrap().starts_with("qemu exit status: 1"));
        m.forget();
        let _ = probe_or_recall(Accel::Auto, &m, || Err(ProbeFailure::Setup("x".into())));
        assert_eq!(m.recall(), None);
    }

    #[test]
    fn the_host_key_names_boot_kvm_qemu_and_cpus() {
        let k = HostKey::current("sh", 2).0;
        assert!(k.starts_with("boot_id="), "{k}");
        assert!(k.contains(" kvm="), "{k}");
        assert!(k.contains(" qemu=/"), "sh is in PATH: {k}");
        assert!(k.ends_with(" cpus=2"), "{k}");
        assert!(HostKey::current("no-such-qemu-binary", 4)
            .0
            .contains("qemu=not-in-PATH"));
        assert_ne!(HostKey::current("sh", 2), HostKey::current("sh", 4));
    }
}
