//! The clang/LLVM the kernels are built with: rustc's own LLVM when Debian has it (the C
//! helpers are then inlined into Rust), Debian 12's clang otherwise, with the reason.

use anyhow::Result;
use std::path::Path;

use super::apt_get;

/// The clang/LLVM the kernels are built with, by its major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Llvm {
    pub major: u32,
}

/// rustc-web 1.96's own LLVM (22.1.8), packaged for Debian 12 in bookworm-security.
/// With clang on the same LLVM as rustc, `RUSTC_CLANG_LLVM_COMPATIBLE` holds and
/// `CONFIG_RUST_INLINE_HELPERS` inlines the C helpers into the Rust code.
pub const MATCHED_LLVM: Llvm = Llvm { major: 22 };
/// Debian 12's own clang, when clang-22 is not installable: the helpers stay out of line.
pub const FALLBACK_LLVM: Llvm = Llvm { major: 19 };

impl Llvm {
    pub fn packages(self) -> Vec<String> {
        ["clang", "lld", "llvm", "libclang"]
            .iter()
            .map(|p| match *p {
                "libclang" => format!("libclang-{}-dev", self.major),
                _ => format!("{p}-{}", self.major),
            })
            .collect()
    }

    /// An LLVM program by its unversioned name (`llvm-objdump` -> `/usr/bin/llvm-objdump-22`).
    pub fn tool(self, name: &str) -> String {
        format!("/usr/bin/{name}-{}", self.major)
    }

    fn libclang(self) -> String {
        format!("/usr/lib/llvm-{}/lib", self.major)
    }

    pub(super) fn tools(self) -> Vec<(String, String)> {
        vec![
            (self.tool("clang"), format!("clang-{}", self.major)),
            (self.tool("ld.lld"), format!("lld-{}", self.major)),
            (self.tool("llvm-ar"), format!("llvm-{}", self.major)),
            (
                format!("{}/libclang.so", self.libclang()),
                format!("libclang-{}-dev", self.major),
            ),
        ]
    }

    fn installed(self) -> bool {
        self.tools().iter().all(|(path, _)| Path::new(path).exists())
    }

    /// Whether the kernel's C helpers can be inlined into Rust with this LLVM.
    pub fn inlines_helpers(self) -> bool {
        self == MATCHED_LLVM
    }

    /// The make variables that select it. bindgen loads libclang at run time;
    /// `LIBCLANG_PATH` makes it the same LLVM as the C compiler.
    pub(super) fn make_vars(self) -> Vec<String> {
        vec![
            format!("LLVM=-{}", self.major),
            format!("CC=ccache clang-{}", self.major),
            format!("LIBCLANG_PATH={}", self.libclang()),
        ]
    }
}

/// Which LLVM to build with: `KHRS_LLVM` (19 or 22) if set, else the matched one when it is
/// installed, else the fallback with the reason, which is printed once.
pub fn choose_llvm(env: Option<&str>, matched_installed: bool) -> Result<(Llvm, Option<String>), String> {
    match env {
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n == MATCHED_LLVM.major => Ok((MATCHED_LLVM, None)),
            Ok(n) if n == FALLBACK_LLVM.major => Ok((
                FALLBACK_LLVM,
                Some(format!(
                    "KHRS_LLVM={n}: building with clang {n}, not rustc's LLVM {}; the C helpers stay out of line",
                    MATCHED_LLVM.major
                )),
            )),
            _ => Err(format!(
                "KHRS_LLVM={v}: the harness builds with LLVM {} (rustc's) or {} (Debian 12's own)",
                MATCHED_LLVM.major, FALLBACK_LLVM.major
            )),
        },
        None if matched_installed => Ok((MATCHED_LLVM, None)),
        None => Ok((
            FALLBACK_LLVM,
            Some(format!(
                "clang-{m} is not installed (bookworm-security; `cargo harness install`): building with clang {f}, \
                 whose LLVM is not rustc's, so CONFIG_RUST_INLINE_HELPERS is off and the C helpers stay out of line",
                m = MATCHED_LLVM.major,
                f = FALLBACK_LLVM.major
            )),
        )),
    }
}

pub(super) fn llvm_choice() -> &'static Result<Llvm, String> {
    static CHOICE: std::sync::OnceLock<Result<Llvm, String>> = std::sync::OnceLock::new();
    CHOICE.get_or_init(|| {
        let env = std::env::var("KHRS_LLVM").ok();
        choose_llvm(env.as_deref(), MATCHED_LLVM.installed()).map(|(llvm, why)| {
            if let Some(why) = why {
                eprintln!("toolchain: {why}");
            }
            llvm
        })
    })
}

/// The LLVM every build uses (see [`choose_llvm`]; [`check`] fails on a bad `KHRS_LLVM`).
pub fn llvm() -> Llvm {
    llvm_choice().clone().unwrap_or(FALLBACK_LLVM)
}

/// Install the matched LLVM (or, with `KHRS_LLVM=19`, the fallback). When the matched one
/// cannot be installed, say why and install the fallback: the builds then keep the helpers
/// out of line (see [`choose_llvm`]).
pub(super) fn install_llvm(updated: bool) -> Result<()> {
    let want = match std::env::var("KHRS_LLVM").ok().as_deref() {
        None => MATCHED_LLVM,
        env => choose_llvm(env, false).map_err(anyhow::Error::msg)?.0,
    };
    if want.installed() {
        return Ok(());
    }
    if !updated {
        apt_get(&["update"])?;
    }
    let pkgs = want.packages();
    eprintln!("installing clang/LLVM {}: {}", want.major, pkgs.join(" "));
    let mut args = vec!["install"];
    args.extend(pkgs.iter().map(String::as_str));
    match apt_get(&args) {
        Ok(()) => Ok(()),
        Err(e) if want == MATCHED_LLVM && !FALLBACK_LLVM.installed() => {
            eprintln!(
                "toolchain: cannot install clang/LLVM {} ({e:#}); installing Debian 12's clang {} instead: \
                 the C helpers will not be inlined into Rust",
                want.major, FALLBACK_LLVM.major
            );
            let pkgs = FALLBACK_LLVM.packages();
            let mut args = vec!["install"];
            args.extend(pkgs.iter().map(String::as_str));
            apt_get(&args)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matched_llvm_unless_it_is_missing_or_overridden() {
        assert_eq!(choose_llvm(None, true), Ok((MATCHED_LLVM, None)));
        let (llvm, why) = choose_llvm(None, false).unwrap();
        assert_eq!(llvm, FALLBACK_LLVM);
        assert!(why.unwrap().contains("clang-22 is not installed"));
        assert_eq!(choose_llvm(Some("22"), false).unwrap().0, MATCHED_LLVM);
        let (llvm, why) = choose_llvm(Some("19"), true).unwrap();
        assert_eq!(llvm, FALLBACK_LLVM);
        assert!(why.unwrap().contains("out of line"));
        assert!(choose_llvm(Some("18"), true).unwrap_err().contains("KHRS_LLVM=18"));
        assert!(MATCHED_LLVM.inlines_helpers() && !FALLBACK_LLVM.inlines_helpers());
        assert_eq!(
            MATCHED_LLVM.make_vars(),
            ["LLVM=-22", "CC=ccache clang-22", "LIBCLANG_PATH=/usr/lib/llvm-22/lib"]
        );
        assert_eq!(
            FALLBACK_LLVM.packages(),
            ["clang-19", "lld-19", "llvm-19", "libclang-19-dev"]
        );
    }
}
