//! What kind of failure ended a command, for its exit status: like `kunit.py`, a caller (CI,
//! a bisect script) can tell a kernel that does not build from one that fails its tests.

use std::fmt;

/// Attached to an error with `anyhow::Context`; the outermost one decides the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The tests ran and failed (a verdict, a control that caught nothing, a benchmark that
    /// is not a result).
    Test,
    /// The toolchain, the base, the patches or the configuration: nothing was built.
    Setup,
    /// kbuild failed or warned, for the kernel or the selftests.
    Build,
}

impl Failure {
    /// 1: tests failed; 2: setup (and any error not classified); 3: build.
    pub fn exit_code(self) -> i32 {
        match self {
            Failure::Test => 1,
            Failure::Setup => 2,
            Failure::Build => 3,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Failure::Test => "the tests failed",
            Failure::Setup => "setup failed",
            Failure::Build => "the build failed",
        })
    }
}

/// The exit status for an error: its outermost [`Failure`], else setup's.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    // anyhow finds the outermost context of the type first.
    e.downcast_ref::<Failure>()
        .map_or(Failure::Setup.exit_code(), |f| f.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_outermost_failure_decides() {
        let build: anyhow::Result<()> = Err(anyhow::anyhow!("mm/x.o: error")).context(Failure::Build);
        let e = build.unwrap_err();
        assert_eq!(exit_code(&e), 3);
        assert_eq!(format!("{e:#}"), "the build failed: mm/x.o: error");
        let tests = Err::<(), _>(e).context(Failure::Test).unwrap_err();
        assert_eq!(exit_code(&tests), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("no such file")), 2);
    }
}
