//! Architectures: the ones with `HAVE_RUST` in 7.3, which `cargo harness cross`
//! builds, and, for those the harness also boots, the [`Machine`] a test guest
//! runs on. Everything that differs between an x86-64 and an arm64 test kernel
//! (kbuild's `ARCH`, the image, QEMU's binary and machine, the console names,
//! the guest's Debian architecture for busybox and the selftests' compiler) is a
//! field here; the stages that build and boot take a `Machine` and have no
//! architecture written into them.

/// An architecture with `HAVE_RUST` in 7.3 (`arch/*/Kconfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Arch {
    #[value(name = "x86_64")]
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
    #[serde(rename = "riscv")]
    Riscv,
    #[serde(rename = "loongarch")]
    Loongarch,
    /// 32-bit ARMv7 with LPAE, HIGHMEM and HIGHPTE (THP needs LPAE).
    #[serde(rename = "arm")]
    Arm,
    /// 64-bit little-endian Book3S (`PTRS_PER_PTE` is a run-time value).
    #[serde(rename = "powerpc")]
    Powerpc,
    /// s390x (`pte_none()` is not "all bits zero").
    #[serde(rename = "s390")]
    S390,
    /// User-mode Linux on x86-64.
    #[serde(rename = "um")]
    Um,
}

impl Arch {
    pub const ALL: [Arch; 8] = [
        Arch::X86_64,
        Arch::Arm64,
        Arch::Riscv,
        Arch::Loongarch,
        Arch::Arm,
        Arch::Powerpc,
        Arch::S390,
        Arch::Um,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
            Arch::Riscv => "riscv",
            Arch::Loongarch => "loongarch",
            Arch::Arm => "arm",
            Arch::Powerpc => "powerpc",
            Arch::S390 => "s390",
            Arch::Um => "um",
        }
    }

    /// Whether the architecture can have transparent huge pages (the series' code needs them).
    pub fn has_thp(self) -> bool {
        self != Arch::Um
    }

    /// The warnings 7.3.4 itself makes on this architecture in every Rust build, as
    /// [`crate::build::warnings`] words them, so that `cargo harness cross` counts them
    /// apart. rustc 1.96 warns about the `-Ctarget-feature` flags of the base's own
    /// `arch/*/Makefile`, once for each crate, with no source location, and no rustc flag
    /// can silence them. On um clang warns about `ioport_map()` of the base's
    /// `include/asm-generic/io.h` in every file that includes it (um keeps
    /// `HAS_IOPORT_MAP` with a NULL `PCI_IOBASE`); [`Arch::make_vars`] makes that one
    /// warning not an error; bindgen's clang prints it too, and clang-22 warns that the
    /// link of um's `stub_exe` does not use `-mno-3dnow`, and the host's ld that its
    /// `vmlinux` has an RWX segment. None is the series': each comes
    /// from a file or a flag of the base that the series does not touch, and on s390 and
    /// powerpc a series-off build prints them alike.
    pub fn base_warnings(self) -> &'static [&'static str] {
        match self {
            // arch/s390/Makefile: KBUILD_RUSTFLAGS += ... -Ctarget-feature=+backchain
            Arch::S390 => &["?: unstable feature specified for `-Ctarget-feature`: `backchain`"],
            // arch/powerpc/Makefile: KBUILD_RUSTFLAGS += -Ctarget-feature=-mma,-vsx,-hard-float,-altivec
            Arch::Powerpc => &[
                "?: unknown and unstable feature specified for `-Ctarget-feature`: `mma`",
                "?: unstable feature specified for `-Ctarget-feature`: `vsx`",
                "?: unknown and unstable feature specified for `-Ctarget-feature`: `hard-float`",
                "?: unstable feature specified for `-Ctarget-feature`: `altivec`",
            ],
            Arch::Um => &[
                "../include/asm-generic/io.h:1209:55: warning: performing pointer arithmetic \
                 on a null pointer has undefined behavior [-Wnull-pointer-arithmetic]",
                // The same, from bindgen's clang (once for each bindings file).
                "clang diag: ../include/asm-generic/io.h:1209:55: warning: performing pointer \
                 arithmetic on a null pointer has undefined behavior [-Wnull-pointer-arithmetic]",
                // arch/um/kernel/skas/Makefile links stub_exe with arch/x86/Makefile.um's
                // KBUILD_CFLAGS, whose -mno-3dnow a link does not use.
                "clang-22: warning: argument unused during compilation: '-mno-3dnow' \
                 [-Wunused-command-line-argument]",
                // scripts/link-vmlinux.sh links um's vmlinux with $(CC), so with the host's
                // ld, and um's linker script has a writable and executable segment.
                "/usr/bin/ld: warning: vmlinux.unstripped has a LOAD segment with RWX permissions",
            ],
            _ => &[],
        }
    }

    /// The `make` variables that select the architecture.
    pub fn make_vars(self) -> Vec<String> {
        let mut v = vec![format!("ARCH={}", self.name())];
        if self == Arch::Um {
            // The top Makefile's own name for the host's x86-64 (`uname -m` with x86_64 made
            // x86); scripts/Makefile.clang knows no `--target` for SUBARCH=x86_64 and stops.
            // arch/x86/um/Kconfig then makes 64BIT the choice (configs/cross/arch-um.config).
            v.push("SUBARCH=x86".into());
            // With CONFIG_WERROR, 7.3.4's um stops at its first C file under clang:
            // `PCI_IOBASE + port` in asm-generic/io.h's ioport_map() (see base_warnings).
            // Only that warning is kept a warning; every other one stays an error.
            v.push("KCFLAGS=-Wno-error=null-pointer-arithmetic".into());
        }
        v
    }

    /// The machine the harness boots this architecture's test kernel on, if it boots it.
    pub fn machine(self) -> Option<&'static Machine> {
        match self {
            Arch::X86_64 => Some(&X86_64_PC),
            Arch::Arm64 => Some(&ARM64_VIRT),
            _ => None,
        }
    }

    /// [`Arch::machine`], or an error that says what the harness does with this architecture.
    pub fn guest_machine(self) -> anyhow::Result<&'static Machine> {
        self.machine().ok_or_else(|| {
            anyhow::anyhow!(
                "no test guest for {}: the harness boots x86_64 and arm64 only \
                 (`cargo harness cross --arch {}` builds it)",
                self.name(),
                self.name()
            )
        })
    }
}

/// How the tests' output leaves the guest, apart from the kernel console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestsPort {
    /// A second UART (QEMU's second `-serial`).
    SecondSerial,
    /// A virtio console (`virtio-serial-pci` + `virtconsole`): for machines with one UART.
    VirtioConsole,
}

/// A QEMU machine for one architecture's test kernel.
#[derive(Debug, PartialEq, Eq)]
pub struct Machine {
    pub arch: Arch,
    /// kbuild's `ARCH` for the test kernel. `x86`, not `x86_64`, for the PC: with `ARCH=x86_64`
    /// tinyconfig comes out different (IBT, CET and protection keys off), and the test kernel
    /// is the one a plain `make` on an x86-64 host configures (`CONFIG_64BIT=y` from
    /// configs/guest.config).
    pub kbuild_arch: &'static str,
    /// The kbuild target that makes the boot image, and the image under the build directory.
    pub image_target: &'static str,
    pub image: &'static str,
    /// `configs/guest-<arch>.config`: console, firmware and paravirt options.
    pub guest_fragment: &'static str,
    pub qemu: &'static str,
    /// The Debian package that has [`Machine::qemu`].
    pub qemu_package: &'static str,
    /// `-machine` and the like, for both accelerators.
    pub machine_args: &'static [&'static str],
    /// `-cpu` under TCG (under KVM it is `host`).
    pub tcg_cpu: &'static str,
    /// `std::env::consts::ARCH` of a host whose KVM runs this guest.
    pub kvm_host: &'static str,
    /// The kernel console (`console=`).
    pub console: &'static str,
    /// Where /init writes the tests' output (`khrs_tests=` on the command line).
    pub tests_tty: &'static str,
    pub tests_port: TestsPort,
    /// Debian's name of the architecture (busybox-static:<this>).
    pub debian_arch: &'static str,
    /// The selftests' `CROSS_COMPILE` prefix when the host is not this architecture,
    /// and the Debian packages that provide it with a static libc.
    pub cross_compile: &'static str,
    pub cross_packages: &'static [&'static str],
}

/// The PC. Under TCG, `max` without ERMS/FSRM: with them the guest kernel clears and copies
/// pages with `rep stosb`/`rep movsb`, which QEMU 7.2's TCG runs one byte per iteration (the
/// edit loop measured 94.5/92.4 s with them, 79.7/77.2 s without, same kernel).
pub const X86_64_PC: Machine = Machine {
    arch: Arch::X86_64,
    kbuild_arch: "x86",
    image_target: "bzImage",
    image: "arch/x86/boot/bzImage",
    guest_fragment: "guest-x86_64.config",
    qemu: "qemu-system-x86_64",
    qemu_package: "qemu-system-x86",
    machine_args: &[],
    tcg_cpu: "max,-erms,-fsrm",
    kvm_host: "x86_64",
    console: "ttyS0",
    tests_tty: "/dev/ttyS1",
    tests_port: TestsPort::SecondSerial,
    debian_arch: "amd64",
    cross_compile: "x86_64-linux-gnu-",
    cross_packages: &["gcc-x86-64-linux-gnu", "libc6-dev-amd64-cross"],
};

/// arm64 on QEMU's `virt` board: GICv3 (`gic-version=max`, which KVM hosts need too),
/// one PL011, PCIe. `pauth-impdef` keeps TCG's pointer authentication cheap.
pub const ARM64_VIRT: Machine = Machine {
    arch: Arch::Arm64,
    kbuild_arch: "arm64",
    image_target: "Image",
    image: "arch/arm64/boot/Image",
    guest_fragment: "guest-arm64.config",
    qemu: "qemu-system-aarch64",
    qemu_package: "qemu-system-arm",
    machine_args: &["-machine", "virt,gic-version=max"],
    tcg_cpu: "max,pauth-impdef=on",
    kvm_host: "aarch64",
    console: "ttyAMA0",
    tests_tty: "/dev/hvc0",
    tests_port: TestsPort::VirtioConsole,
    debian_arch: "arm64",
    cross_compile: "aarch64-linux-gnu-",
    cross_packages: &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"],
};

impl Machine {
    /// Whether this host builds the guest's programs natively.
    pub fn is_host(&self) -> bool {
        std::env::consts::ARCH == self.kvm_host
    }

    /// Why KVM cannot run this guest on this host, if it cannot whatever /dev/kvm says.
    pub fn kvm_impossible(&self) -> Option<String> {
        (!self.is_host()).then(|| {
            format!(
                "KVM runs {} guests only on an {} host, this one is {}",
                self.arch.name(),
                self.kvm_host,
                std::env::consts::ARCH
            )
        })
    }

    /// The `make` variables of this machine's test kernel.
    pub fn make_vars(&self) -> Vec<String> {
        vec![format!("ARCH={}", self.kbuild_arch)]
    }

    /// The `O=` directory name of a configuration of this machine's kernel.
    pub fn build_name(&self, config: &str) -> String {
        format!("{}-{config}", self.arch.name())
    }

    /// The kernel command line every boot starts with.
    pub fn base_append(&self) -> String {
        format!("console={} khrs_tests={} panic=-1", self.console, self.tests_tty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_x86_64_and_arm64_have_a_guest() {
        let booted: Vec<&str> = Arch::ALL
            .iter()
            .filter(|a| a.machine().is_some())
            .map(|a| a.name())
            .collect();
        assert_eq!(booted, ["x86_64", "arm64"]);
        let e = Arch::Riscv.guest_machine().unwrap_err().to_string();
        assert!(e.contains("no test guest for riscv"), "{e}");
        for a in Arch::ALL.iter().filter_map(|a| a.machine()) {
            assert_eq!(a.arch.machine(), Some(a));
            assert!(a.image.ends_with(a.image_target), "{}", a.image);
            assert!(a.guest_fragment.contains(a.arch.name()));
        }
    }

    #[test]
    fn kvm_needs_a_host_of_the_same_architecture() {
        let host = std::env::consts::ARCH;
        for m in [&X86_64_PC, &ARM64_VIRT] {
            assert_eq!(m.kvm_impossible().is_none(), m.kvm_host == host);
        }
        if host == "x86_64" {
            assert_eq!(
                ARM64_VIRT.kvm_impossible().as_deref(),
                Some("KVM runs arm64 guests only on an aarch64 host, this one is x86_64")
            );
        }
    }

    #[test]
    fn the_command_line_names_both_outputs() {
        assert_eq!(X86_64_PC.base_append(), "console=ttyS0 khrs_tests=/dev/ttyS1 panic=-1");
        assert_eq!(
            ARM64_VIRT.base_append(),
            "console=ttyAMA0 khrs_tests=/dev/hvc0 panic=-1"
        );
        assert_eq!(ARM64_VIRT.build_name("default"), "arm64-default");
        assert_eq!(X86_64_PC.make_vars(), ["ARCH=x86"]);
        assert_eq!(ARM64_VIRT.make_vars(), ["ARCH=arm64"]);
    }
}
