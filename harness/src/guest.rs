//! The guest: a busybox initramfs with the selftests, two virtio disks (swap
//! and an ext4 filesystem for `all:file`), booted in QEMU with a hard
//! timeout. The kernel console goes to one log, the tests' output to another.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::arch::{Machine, TestsPort};
use crate::{accel, cmd, probe_memo};

/// One command the guest runs, with the name the verdict reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Case {
    pub name: String,
    pub command: String,
}

/// Mount point of the ext4 filesystem in the guest, for `all:file`.
pub const FILE_DIR: &str = "/mnt/file";

/// The `khugepaged` invocations of run_vmtests.sh, read from the tree so
/// that they follow upstream. `${SPLIT_HUGE_PAGE_TEST_XFS_PATH}` becomes the
/// guest's ext4 mount.
pub fn khugepaged_cases(run_vmtests: &str) -> Vec<Case> {
    run_vmtests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CATEGORY=\"thp\" run_test "))
        .filter(|c| c.starts_with("./khugepaged"))
        .map(|c| {
            let command = c.replace("${SPLIT_HUGE_PAGE_TEST_XFS_PATH}", FILE_DIR);
            Case {
                name: command.trim_start_matches("./").to_string(),
                command,
            }
        })
        .collect()
}

/// The selftests of the series that race collapse against PTE installers
/// (`thp` category programs other than khugepaged that the series adds).
pub const RACE_PROGRAMS: &[&str] = &["collapse_retract_race"];

/// The guest command line of `-- CMD...`: one argument is a shell command line as it is
/// (`-- 'dmesg | tail'`); several are a program and its arguments, each quoted for the
/// guest's sh, so that `-- sh -c "a | b"` runs what it says there.
pub fn command_line(args: &[String]) -> String {
    if let [one] = args {
        return one.clone();
    }
    let plain = |a: &str| !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "_./=:,+@%-".contains(c));
    args.iter()
        .map(|a| {
            if plain(a) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Race tests listed in run_vmtests.sh's `thp` category, with `extra`
/// arguments (e.g. a longer duration).
pub fn race_cases(run_vmtests: &str, extra: &str) -> Vec<Case> {
    run_vmtests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CATEGORY=\"thp\" run_test ./"))
        .filter(|c| RACE_PROGRAMS.iter().any(|p| c.split_whitespace().next() == Some(p)))
        .map(|c| {
            let command = format!("./{c} {extra}").trim().to_string();
            Case {
                name: command.trim_start_matches("./").to_string(),
                command,
            }
        })
        .collect()
}

pub struct Initramfs<'a> {
    /// A static busybox for the guest's architecture.
    pub busybox: &'a Path,
    pub init: &'a Path,
    /// Host file -> path under /khrs in the guest.
    pub files: Vec<(PathBuf, String)>,
    pub cases: &'a [Case],
    pub setup: Option<String>,
}

/// Pack the initramfs with cpio (newc) and gzip.
pub fn pack(spec: &Initramfs, dir: &Path) -> Result<PathBuf> {
    let root = dir.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for d in ["bin", "sbin", "proc", "sys", "dev", "tmp", "mnt", "khrs", "root"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy(spec.busybox, root.join("bin/busybox"))
        .with_context(|| format!("copying {} (busybox-static)", spec.busybox.display()))?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
    fs::copy(spec.init, root.join("init"))?;
    for (src, name) in &spec.files {
        let dst = root.join("khrs").join(name);
        fs::create_dir_all(dst.parent().expect("has parent"))?;
        fs::copy(src, &dst).with_context(|| format!("copying {} into the initramfs", src.display()))?;
    }
    let mut list = String::new();
    for c in spec.cases {
        if c.command.contains('\n') || c.name.contains('\t') {
            bail!("guest command {:?} must be one line", c.command);
        }
        list.push_str(&format!("{}\t{}\n", c.name, c.command));
    }
    fs::write(root.join("khrs/tests"), list)?;
    if let Some(s) = &spec.setup {
        let p = root.join("khrs/setup");
        fs::write(&p, format!("#!/bin/sh\n{s}\n"))?;
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let out = dir.join("initramfs.cpio.gz");
    cpio_gz(&root, &out)?;
    Ok(out)
}

/// Pack the directory `root` into `out`, a gzipped newc cpio owned by root.
pub fn cpio_gz(root: &Path, out: &Path) -> Result<()> {
    cmd::output(Command::new("sh").current_dir(root).arg("-c").arg(format!(
        "find . | cpio -o -H newc --quiet -R 0:0 | gzip -1 > '{}'",
        out.display()
    )))?;
    Ok(())
}

/// A swap disk and an ext4 disk, sparse, made fresh for each run.
pub fn disks(dir: &Path) -> Result<Vec<PathBuf>> {
    let swap = dir.join("swap.img");
    let file = dir.join("file.img");
    for (p, size) in [(&swap, 512u64 << 20), (&file, 1u64 << 30)] {
        let f = fs::File::create(p)?;
        f.set_len(size)?;
    }
    cmd::output(Command::new("mkswap").arg("-q").arg(&swap).stderr(Stdio::null()))
        .or_else(|_| cmd::output(Command::new("/sbin/mkswap").arg(&swap)))?;
    cmd::output(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "nodiscard"])
            .arg(&file),
    )
    .or_else(|_| cmd::output(Command::new("/sbin/mkfs.ext4").args(["-q", "-F"]).arg(&file)))?;
    Ok(vec![swap, file])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Accel {
    /// KVM if /dev/kvm opens and a probe guest boots under it, else TCG.
    Auto,
    Kvm,
    Tcg,
}

pub struct Boot<'a> {
    /// The stage's name in the progress output (`guest`; `guest2` for one of several).
    pub name: &'a str,
    pub machine: &'a Machine,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub disks: &'a [PathBuf],
    pub cpus: u32,
    pub mem_mb: u32,
    pub accel: Accel,
    /// Kernel command-line arguments after the machine's own ([`Machine::base_append`]).
    pub append: &'a str,
    pub timeout: Duration,
    pub console: PathBuf,
    pub tests: PathBuf,
    /// More QEMU arguments (e.g. `-icount shift=auto` for the benchmark).
    pub extra_args: &'a [String],
}

#[derive(Debug, serde::Serialize)]
pub struct BootOutcome {
    pub timed_out: bool,
    pub exit_code: Option<i32>,
    pub seconds: f64,
}

pub fn qemu(b: &Boot, accel: Accel) -> Command {
    let m = b.machine;
    let mut c = Command::new(m.qemu);
    cmd::die_with_parent(&mut c);
    c.args(m.machine_args);
    match accel {
        Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
        _ => c.args(["-accel", "tcg", "-cpu", m.tcg_cpu]),
    };
    c.args(["-m", &b.mem_mb.to_string(), "-smp", &b.cpus.to_string()])
        .args(["-nographic", "-no-reboot", "-monitor", "none", "-serial"])
        .arg(format!("file:{}", b.console.display()));
    match m.tests_port {
        TestsPort::SecondSerial => c.arg("-serial").arg(format!("file:{}", b.tests.display())),
        TestsPort::VirtioConsole => c
            .args(["-device", "virtio-serial-pci,id=khrs-serial", "-chardev"])
            .arg(format!("file,id=khrs-tests,path={}", b.tests.display()))
            .args(["-device", "virtconsole,chardev=khrs-tests"]),
    };
    c.arg("-kernel")
        .arg(b.kernel)
        .arg("-initrd")
        .arg(b.initramfs)
        .arg("-append")
        .arg(format!("{} {}", m.base_append(), b.append).trim());
    for (i, d) in b.disks.iter().enumerate() {
        c.arg("-drive")
            .arg(format!("file={},if=none,id=khrs-disk{i},format=raw", d.display()))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive=khrs-disk{i}"));
    }
    c.args(b.extra_args);
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// The accelerator to boot `b` with: `--accel tcg` as asked; otherwise KVM
/// only if /dev/kvm opens and a tiny probe guest (see [`accel`]) boots under
/// it and sees all `b.cpus` CPUs. Prints the choice and why. `--accel kvm`
/// that cannot work is an error, not a silent fallback. A failed probe is
/// kept for the rest of the host's boot ([`probe_memo`]).
pub fn resolve_accel(b: &Boot) -> Result<Accel> {
    let dir = b.console.parent().unwrap_or_else(|| Path::new(".")).join("kvm-probe");
    let device = match b.machine.kvm_impossible() {
        Some(why) => accel::KvmDevice::WrongHost(why),
        None => accel::kvm_device(Path::new("/dev/kvm")),
    };
    let memo = probe_memo::ProbeMemo {
        path: crate::layout::Layout::discover().kvm_probe_memo(b.machine),
        key: probe_memo::HostKey::current(b.machine.qemu, b.cpus),
    };
    let choice = accel::choose(b.accel, &device, || {
        probe_memo::probe_or_recall(b.accel, &memo, || {
            // The probe runs only on a host of the guest's architecture: its busybox.
            let busybox = Path::new(crate::toolchain::HOST_BUSYBOX);
            accel::run_probe(
                b.machine,
                b.kernel,
                &dir,
                busybox,
                b.cpus,
                Accel::Kvm,
                accel::PROBE_TIMEOUT,
            )
        })
    })?;
    eprintln!("  {choice}");
    Ok(choice.accel)
}

/// Boot and wait, killing QEMU at the timeout. The spinner shows the test
/// being run (from the tests log).
pub fn run(b: &Boot, accel: Accel) -> Result<BootOutcome> {
    use wait_timeout::ChildExt;
    let _ = fs::remove_file(&b.console);
    let _ = fs::remove_file(&b.tests);
    let mut c = qemu(b, accel);
    let start = Instant::now();
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::describe(&c)))?;
    let pb = cmd::stage_bar(b.name);
    let (timed_out, status) = loop {
        if let Some(st) = child.wait_timeout(Duration::from_millis(500))? {
            break (false, Some(st));
        }
        let current = fs::read_to_string(&b.tests)
            .unwrap_or_default()
            .lines()
            .rfind(|l| l.starts_with("KHRS-BEGIN"))
            .map(|l| l.splitn(3, ' ').nth(2).unwrap_or("").to_string())
            .unwrap_or_else(|| "booting".into());
        pb.set_message(current);
        if start.elapsed() > b.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break (true, None);
        }
    };
    pb.finish_and_clear();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let exit_code = status.and_then(|s| s.code());
    if !timed_out && exit_code != Some(0) {
        bail!("qemu exited with {exit_code:?}: {stderr}");
    }
    Ok(BootOutcome {
        timed_out,
        exit_code,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_line(machine: &Machine, accel: Accel) -> String {
        let disks = [PathBuf::from("/r/swap.img"), PathBuf::from("/r/file.img")];
        let b = Boot {
            name: "guest",
            machine,
            kernel: Path::new("/b/Image"),
            initramfs: Path::new("/r/initramfs.cpio.gz"),
            disks: &disks,
            cpus: 2,
            mem_mb: 2048,
            accel,
            append: "page_table_check=on",
            timeout: Duration::from_secs(1),
            console: PathBuf::from("/r/console.log"),
            tests: PathBuf::from("/r/tests.log"),
            extra_args: &[],
        };
        cmd::describe(&qemu(&b, accel))
    }

    #[test]
    fn a_command_of_several_arguments_keeps_each_argument_whole() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command_line(&args(&["dmesg | tail -3"])), "dmesg | tail -3");
        assert_eq!(command_line(&args(&["cat", "/proc/vmstat"])), "cat /proc/vmstat");
        assert_eq!(
            command_line(&args(&["sh", "-c", "grep -v '^#' /t | head"])),
            r"sh -c 'grep -v '\''^#'\'' /t | head'"
        );
        assert_eq!(command_line(&args(&["echo", ""])), "echo ''");
    }

    /// Both machines boot from the same description; only the fields of [`Machine`] differ.
    #[test]
    fn qemu_command_lines_follow_the_machine() {
        let arm_tcg = qemu_line(&crate::arch::ARM64_VIRT, Accel::Tcg);
        assert!(
            arm_tcg
                .starts_with("qemu-system-aarch64 -machine virt,gic-version=max -accel tcg -cpu max,pauth-impdef=on"),
            "{arm_tcg}"
        );
        assert!(arm_tcg.contains("-device virtio-serial-pci,id=khrs-serial -chardev file,id=khrs-tests,path=/r/tests.log -device virtconsole,chardev=khrs-tests"), "{arm_tcg}");
        assert!(
            arm_tcg.contains("console=ttyAMA0 khrs_tests=/dev/hvc0 panic=-1 page_table_check=on"),
            "{arm_tcg}"
        );
        assert_eq!(arm_tcg.matches(" -serial ").count(), 1, "{arm_tcg}");
        let arm_kvm = qemu_line(&crate::arch::ARM64_VIRT, Accel::Kvm);
        assert!(
            arm_kvm.contains("-machine virt,gic-version=max -accel kvm -cpu host"),
            "{arm_kvm}"
        );
        let pc = qemu_line(&crate::arch::X86_64_PC, Accel::Kvm);
        assert!(
            pc.starts_with("qemu-system-x86_64 -accel kvm -cpu host -m 2048 -smp 2"),
            "{pc}"
        );
        assert!(
            pc.contains("-serial file:/r/console.log -serial file:/r/tests.log"),
            "{pc}"
        );
        assert!(
            pc.contains("console=ttyS0 khrs_tests=/dev/ttyS1 panic=-1 page_table_check=on"),
            "{pc}"
        );
        assert!(!pc.contains("virtconsole"), "{pc}");
        for line in [&arm_tcg, &pc] {
            assert!(
                line.contains(
                    "-drive file=/r/swap.img,if=none,id=khrs-disk0,format=raw -device virtio-blk-pci,drive=khrs-disk0 \
                 -drive file=/r/file.img,if=none,id=khrs-disk1,format=raw -device virtio-blk-pci,drive=khrs-disk1"
                ),
                "{line}"
            );
        }
    }

    /// /init writes the tests' output where the command line says, and stops loudly without it.
    #[test]
    fn init_writes_to_the_device_the_command_line_names() {
        let init = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/init")).unwrap();
        assert!(init.contains("exec 3>\"$khrs_tests\""), "{init}");
        assert!(init.contains("KHRS-ERROR no tests device"), "{init}");
        assert!(!init.contains("ttyS1\n"), "{init}");
    }

    /// The six `thp` invocations of 7.3's run_vmtests.sh (a captured copy).
    #[test]
    fn reads_khugepaged_cases_from_run_vmtests() {
        let text = include_str!("../tests/fixtures/run_vmtests-7.3.4.sh");
        let cases = khugepaged_cases(text);
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "khugepaged",
                "khugepaged -s 2",
                "khugepaged all:shmem",
                "khugepaged -s 4 all:shmem",
                "khugepaged -c 4 mthp_khugepaged:anon",
                "khugepaged all:file /mnt/file",
            ]
        );
        assert_eq!(cases[5].command, "./khugepaged all:file /mnt/file");
        assert!(race_cases(text, "").is_empty());
        let with_race = format!("{text}\nCATEGORY=\"thp\" run_test ./collapse_retract_race\n");
        let r = race_cases(&with_race, "-s 5");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].command, "./collapse_retract_race -s 5");
    }
}
