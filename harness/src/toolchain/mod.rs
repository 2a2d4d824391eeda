//! The toolchain: Debian packages (and bindgen from crates.io), installed by
//! the project itself, and checked against the kernel's minimum versions
//! before any long step.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::arch::Machine;
use crate::cmd;
use crate::layout::Layout;

mod llvm;
pub use llvm::{choose_llvm, llvm, Llvm, FALLBACK_LLVM, MATCHED_LLVM};
use llvm::{install_llvm, llvm_choice};

/// Debian 12 packages from the machine's own suites.
pub const PACKAGES: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "rust-web-clippy",
    "rustfmt-web",
    "build-essential",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "xz-utils",
    "kmod",
    "rsync",
    "ccache",
    "busybox-static",
    "e2fsprogs",
    "git-email",
    "b4",
    "codespell",
    "python3-aiosmtpd",
    "python3-ply",
    "python3-git",
];
pub const BINDGEN_VERSION: &str = "0.73.2";
const APT_SOURCES: &str = "/etc/apt/sources.list.d/khugepaged-rs-backports.sources";
const APT_PIN: &str = "/etc/apt/preferences.d/khugepaged-rs-backports";

/// The make variables every kbuild call gets: Debian's rustc (rustup's,
/// first on PATH, has no library source) and the chosen clang/LLVM.
pub fn make_vars(layout: &Layout) -> Vec<String> {
    let mut v = llvm().make_vars();
    v.extend([
        "RUSTC=/usr/bin/rustc".into(),
        "HOSTRUSTC=/usr/bin/rustc".into(),
        "RUSTDOC=/usr/bin/rustdoc".into(),
        "RUSTFMT=/usr/bin/rustfmt".into(),
        "CLIPPY_DRIVER=/usr/bin/clippy-driver".into(),
        format!("BINDGEN={}", layout.bindgen().display()),
    ]);
    v
}

/// The toolchain's programs and libraries that `make_vars` selects, for the configure stamp
/// ([`crate::config_stamp`]): when one of them changes, Kconfig's probes may answer otherwise.
pub fn binaries(layout: &Layout) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = llvm().tools().into_iter().map(|(path, _)| path.into()).collect();
    v.extend(["/usr/bin/rustc", "/usr/bin/rustdoc"].map(PathBuf::from));
    v.push(layout.bindgen());
    v
}

struct Tool {
    name: &'static str,
    path: &'static str,
    /// Debian package (or how to get it) that provides it.
    fix: &'static str,
}

const TOOLS: &[Tool] = &[
    Tool {
        name: "rustc",
        path: "/usr/bin/rustc",
        fix: "apt-get install rustc-web",
    },
    Tool {
        name: "rust library source",
        path: "/usr/lib/rustlib/src/rust/library/core/src/lib.rs",
        fix: "apt-get install rust-web-src",
    },
    Tool {
        name: "rustfmt",
        path: "/usr/bin/rustfmt",
        fix: "apt-get install rustfmt-web",
    },
    Tool {
        name: "clippy-driver",
        path: "/usr/bin/clippy-driver",
        fix: "apt-get install rust-web-clippy",
    },
    Tool {
        name: "flex",
        path: "/usr/bin/flex",
        fix: "apt-get install flex",
    },
    Tool {
        name: "bison",
        path: "/usr/bin/bison",
        fix: "apt-get install bison",
    },
    Tool {
        name: "bc",
        path: "/usr/bin/bc",
        fix: "apt-get install bc",
    },
    Tool {
        name: "libelf",
        path: "/usr/include/libelf.h",
        fix: "apt-get install libelf-dev",
    },
    Tool {
        name: "openssl headers",
        path: "/usr/include/openssl/ssl.h",
        fix: "apt-get install libssl-dev",
    },
    Tool {
        name: "cpio",
        path: "/usr/bin/cpio",
        fix: "apt-get install cpio",
    },
    Tool {
        name: "rsync",
        path: "/usr/bin/rsync",
        fix: "apt-get install rsync",
    },
    Tool {
        name: "ccache",
        path: "/usr/bin/ccache",
        fix: "apt-get install ccache",
    },
    Tool {
        name: "busybox (static)",
        path: HOST_BUSYBOX,
        fix: "apt-get install busybox-static",
    },
    Tool {
        name: "mkfs.ext4",
        path: "/sbin/mkfs.ext4",
        fix: "apt-get install e2fsprogs",
    },
    Tool {
        name: "mkswap",
        path: "/sbin/mkswap",
        fix: "apt-get install util-linux",
    },
    Tool {
        name: "git send-email",
        path: "/usr/lib/git-core/git-send-email",
        fix: "apt-get install git-email",
    },
];

/// Tools that are absent, each with the fix.
fn missing(layout: &Layout) -> Vec<String> {
    let mut v: Vec<String> = TOOLS
        .iter()
        .filter(|t| !Path::new(t.path).exists())
        .map(|t| format!("{} ({}): {}", t.name, t.path, t.fix))
        .collect();
    for (path, pkg) in llvm().tools() {
        if !Path::new(&path).exists() {
            v.push(format!("{path}: apt-get install {pkg}"));
        }
    }
    if !layout.bindgen().exists() {
        v.push(format!(
            "bindgen ({}): cargo install --locked bindgen-cli --version {BINDGEN_VERSION} --root {}",
            layout.bindgen().display(),
            layout.cache.join("bindgen").display()
        ));
    }
    v
}

fn apt_get(args: &[&str]) -> Result<()> {
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-y", "-q", "--no-install-recommends"])
            .args(args),
    )
}

/// Add trixie-backports (for linux-source-7.3) and bookworm-backports (for a
/// qemu that matches an already backported qemu-utils), both pinned low so
/// nothing else on the system is taken from them.
pub fn ensure_apt_sources() -> Result<bool> {
    if Path::new(APT_SOURCES).exists() && Path::new(APT_PIN).exists() {
        return Ok(false);
    }
    let sources = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie-backports bookworm-backports\n\
                   Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
    let pin = "Package: *\nPin: release n=trixie-backports\nPin-Priority: 100\n\n\
               Package: *\nPin: release n=bookworm-backports\nPin-Priority: 100\n";
    fs::write(APT_SOURCES, sources).with_context(|| format!("cannot write {APT_SOURCES} (run as root)"))?;
    fs::write(APT_PIN, pin).with_context(|| format!("cannot write {APT_PIN} (run as root)"))?;
    Ok(true)
}

/// Install whatever is missing for building, and for booting `machine`'s guest. Needs root
/// for apt.
pub fn install(layout: &Layout, machine: &Machine) -> Result<()> {
    let added = ensure_apt_sources()?;
    let absent_pkgs: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if added || !absent_pkgs.is_empty() {
        apt_get(&["update"])?;
    }
    if !absent_pkgs.is_empty() {
        eprintln!("installing Debian packages: {}", absent_pkgs.join(" "));
        let mut args = vec!["install"];
        args.extend(absent_pkgs);
        apt_get(&args)?;
    }
    install_llvm(added)?;
    if !layout.bindgen().exists() {
        eprintln!("installing bindgen-cli {BINDGEN_VERSION} from crates.io (~1.5 min)");
        cmd::run(
            Command::new("cargo")
                .args([
                    "install",
                    "--locked",
                    "bindgen-cli",
                    "--version",
                    BINDGEN_VERSION,
                    "--root",
                ])
                .arg(layout.cache.join("bindgen")),
        )?;
    }
    install_machine(layout, machine)
}

/// Debian's busybox-static on the host.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// The static busybox of `machine`'s guest: the host's busybox-static for the host's
/// architecture, else Debian's busybox-static:<arch> unpacked into the cache.
pub fn busybox(layout: &Layout, machine: &Machine) -> PathBuf {
    if machine.is_host() {
        PathBuf::from(HOST_BUSYBOX)
    } else {
        layout
            .cache
            .join(format!("busybox-{}/bin/busybox", machine.debian_arch))
    }
}

/// What booting `machine`'s guest needs beyond [`PACKAGES`], missing ones with the fix.
fn missing_for(layout: &Layout, machine: &Machine) -> Vec<String> {
    let mut v = Vec::new();
    let qemu = format!("/usr/bin/{}", machine.qemu);
    if !Path::new(&qemu).exists() {
        v.push(format!(
            "{} ({qemu}): apt-get install {}",
            machine.qemu, machine.qemu_package
        ));
    }
    if !machine.is_host() {
        let gcc = format!("/usr/bin/{}gcc", machine.cross_compile);
        if !Path::new(&gcc).exists() {
            v.push(format!("{gcc}: apt-get install {}", machine.cross_packages.join(" ")));
        }
    }
    let bb = busybox(layout, machine);
    if !bb.exists() {
        v.push(format!(
            "busybox-static for {} ({}): cargo harness install --arch {}",
            machine.debian_arch,
            bb.display(),
            machine.arch.name()
        ));
    }
    v
}

/// Install what `machine`'s guest needs: its QEMU (from the suite the installed
/// qemu-utils comes from), the cross compiler and static libc for its programs, and
/// Debian's busybox-static for its architecture (`apt-get download`, unpacked into the
/// cache with `dpkg -x`: nothing of another architecture is installed). Needs root.
pub fn install_machine(layout: &Layout, machine: &Machine) -> Result<()> {
    if missing_for(layout, machine).is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = Vec::new();
    if !Path::new(&format!("/usr/bin/{}", machine.qemu)).exists() {
        pkgs.push(machine.qemu_package);
    }
    if !machine.is_host() && !Path::new(&format!("/usr/bin/{}gcc", machine.cross_compile)).exists() {
        pkgs.extend(machine.cross_packages);
    }
    let bb = busybox(layout, machine);
    let foreign = !machine.is_host() && !bb.exists();
    if foreign {
        let have = cmd::output(Command::new("dpkg").arg("--print-foreign-architectures")).unwrap_or_default();
        if !have.split_whitespace().any(|a| a == machine.debian_arch) {
            cmd::run(Command::new("dpkg").args(["--add-architecture", machine.debian_arch]))?;
        }
    }
    ensure_apt_sources()?;
    apt_get(&["update"])?;
    if !pkgs.is_empty() {
        eprintln!(
            "installing Debian packages for the {} guest: {}",
            machine.arch.name(),
            pkgs.join(" ")
        );
        let utils =
            cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-utils"])).unwrap_or_default();
        let mut args = vec!["install"];
        if utils.contains("bpo12") {
            // A qemu-utils from bookworm-backports breaks bookworm's qemu-system-common.
            args.extend(["-t", "bookworm-backports"]);
        }
        args.extend(pkgs);
        apt_get(&args)?;
    }
    if foreign {
        let dir = bb
            .parent()
            .and_then(Path::parent)
            .context("busybox path has a parent")?;
        let dl = layout.cache.join(format!("deb-{}", machine.debian_arch));
        let _ = fs::remove_dir_all(&dl);
        fs::create_dir_all(&dl)?;
        let pkg = format!("busybox-static:{}", machine.debian_arch);
        cmd::run(Command::new("apt-get").current_dir(&dl).args(["download", &pkg]))
            .with_context(|| format!("apt-get download {pkg}"))?;
        let deb = fs::read_dir(&dl)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .with_context(|| format!("apt-get download {pkg} left no .deb in {}", dl.display()))?;
        let _ = fs::remove_dir_all(dir);
        cmd::run(Command::new("dpkg").arg("-x").arg(&deb).arg(dir))?;
        let _ = fs::remove_dir_all(&dl);
    }
    check_machine(layout, machine)
}

/// Check that `machine`'s guest can be built and booted; name every missing piece.
pub fn check_machine(layout: &Layout, machine: &Machine) -> Result<()> {
    let problems = missing_for(layout, machine);
    if !problems.is_empty() {
        bail!(
            "cannot boot the {} guest (run `cargo harness install --arch {}` as root):\n  {}",
            machine.arch.name(),
            machine.arch.name(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Parse "x.y.z" out of a version banner.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split(|c: char| c.is_whitespace() || c == '-' || c == '(')
        .find_map(|w| {
            let mut it = w.split('.');
            let a = it.next()?.parse().ok()?;
            let b = it.next()?.parse().ok()?;
            let c = it.next().unwrap_or("0").parse().ok()?;
            Some((a, b, c))
        })
}

fn version_of(prog: &str, arg: &str) -> Result<(u32, u32, u32)> {
    let out = cmd::output(Command::new(prog).arg(arg))?;
    parse_version(&out).with_context(|| format!("cannot read a version from `{prog} {arg}`: {out}"))
}

/// The minimum version the kernel tree asks for.
fn min_version(tree: &Path, tool: &str) -> Result<(u32, u32, u32)> {
    let out = cmd::output(
        Command::new("sh")
            .arg(tree.join("scripts/min-tool-version.sh"))
            .arg(tool)
            .env("SRCARCH", "x86"),
    )?;
    parse_version(&out).with_context(|| format!("min-tool-version.sh {tool} printed {out}"))
}

/// Check presence and versions; fail naming every missing or old tool.
pub fn check(layout: &Layout, tree: &Path) -> Result<()> {
    if let Err(e) = llvm_choice() {
        bail!("{e}");
    }
    let mut problems = missing(layout);
    let clang = llvm().tool("clang");
    if problems.is_empty() {
        for (tool, prog, arg) in [
            ("rustc", "/usr/bin/rustc", "--version"),
            ("bindgen", layout.bindgen().to_str().unwrap_or("bindgen"), "--version"),
            ("llvm", clang.as_str(), "--version"),
        ] {
            let have = version_of(prog, arg)?;
            let want = min_version(tree, tool)?;
            if have < want {
                problems.push(format!(
                    "{tool} {}.{}.{} at {prog} is older than the {}.{}.{} that scripts/min-tool-version.sh asks for",
                    have.0, have.1, have.2, want.0, want.1, want.2
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "toolchain incomplete (run `cargo harness install` as root, or fix by hand):\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// `make rustavailable`: the one check that tells whether CONFIG_RUST will stick.
pub fn rust_available(layout: &Layout, tree: &Path, build: &Path) -> Result<()> {
    fs_err::create_dir_all(build)?;
    cmd::output(
        Command::new("make")
            .arg("-C")
            .arg(tree)
            .arg(format!("O={}", build.display()))
            .args(make_vars(layout))
            .arg("rustavailable"),
    )
    .context("`make rustavailable` failed: CONFIG_RUST would be dropped")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_banners() {
        assert_eq!(parse_version("rustc 1.96.0 (ac68faa20 2026-05-25)"), Some((1, 96, 0)));
        assert_eq!(parse_version("bindgen 0.73.2"), Some((0, 73, 2)));
        assert_eq!(
            parse_version("Debian clang version 19.1.7 (3+b1)\nTarget: x86_64-pc-linux-gnu"),
            Some((19, 1, 7))
        );
        assert_eq!(parse_version("no version here"), None);
        assert!(parse_version("rustc 1.95.0") < parse_version("1.96.0"));
    }
}
