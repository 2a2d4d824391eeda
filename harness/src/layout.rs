//! Where things live: the clone (patches, configs, guest files), the ignored
//! work area inside it (work trees with their build directories), and the
//! cache outside it that survives `git clean` (toolchain extras, base, ccache).

use std::path::{Path, PathBuf};

/// Tag of the pristine base commit in the base repository.
pub const BASE_TAG: &str = "v7.3.4-debian";

/// Build directories are `<tree>/build-<config>` (see [`Layout::build_dir`]).
pub const BUILD_DIR_PREFIX: &str = "build-";
/// The `.git/info/exclude` and `git clean -e` pattern for them.
pub const BUILD_DIR_PATTERN: &str = "/build-*/";

#[derive(Debug, Clone)]
pub struct Layout {
    /// The project clone (workspace root).
    pub repo: PathBuf,
    /// Cache outside the clone: toolchain extras, base source, ccache.
    pub cache: PathBuf,
}

impl Layout {
    pub fn discover() -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("harness crate lives inside the workspace")
            .to_path_buf();
        let cache = std::env::var_os("KHRS_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("khugepaged-rs")))
            .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/khugepaged-rs")))
            .unwrap_or_else(|| PathBuf::from("/var/tmp/khugepaged-rs"));
        Layout { repo, cache }
    }

    pub fn patches(&self) -> PathBuf {
        self.repo.join("patches")
    }
    pub fn configs(&self) -> PathBuf {
        self.repo.join("configs")
    }
    pub fn guest_files(&self) -> PathBuf {
        self.repo.join("guest")
    }
    /// The git work tree the series is applied to (ignored by the clone).
    pub fn work_tree(&self) -> PathBuf {
        self.repo.join("work/linux")
    }
    /// The negative control's tree (base + patches/broken), also ignored.
    pub fn broken_tree(&self) -> PathBuf {
        self.repo.join("work/linux-broken")
    }
    /// Per-run results: console logs and JSON verdicts.
    pub fn runs(&self) -> PathBuf {
        self.repo.join("work/runs")
    }
    pub fn bindgen(&self) -> PathBuf {
        self.cache.join("bindgen/bin/bindgen")
    }
    pub fn base_dir(&self) -> PathBuf {
        self.cache.join("base")
    }
    /// The pristine base as a git repository with one tagged commit.
    pub fn base_repo(&self) -> PathBuf {
        self.base_dir().join("linux-source-7.3")
    }
    /// The `O=` directory of a build of `tree`: a direct child of the tree, so
    /// that kbuild's srctree is `..` and every path in a compiler command line is
    /// relative. ccache's hash then does not depend on where the clone is, and a
    /// fresh clone (CI's) or the negative control's tree hits what another clone
    /// compiled. `git status` and `git clean` in the tree leave these alone
    /// ([`BUILD_DIR_PATTERN`] is in the tree's `.git/info/exclude`).
    pub fn build_dir(tree: &Path, config: &str) -> PathBuf {
        tree.join(format!("{BUILD_DIR_PREFIX}{config}"))
    }
    /// A KVM probe that failed on this host, kept for the rest of its boot
    /// (see [`crate::probe_memo`]); one per guest architecture.
    pub fn kvm_probe_memo(&self, machine: &crate::arch::Machine) -> PathBuf {
        self.cache.join("kvm-probe").join(machine.debian_arch)
    }
    pub fn ccache(&self) -> PathBuf {
        self.cache.join("ccache")
    }
}
