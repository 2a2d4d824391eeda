//! Where things live: the clone (patches, configs, guest files), the ignored
//! work area inside it (work trees with their build directories), and the
//! cache outside it that survives `git clean` (toolchain extras, base, ccache,
//! and the suite's own kernel trees, see [`Layout::for_suite`]).

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
    /// Where the kernel trees (and their build directories) are: the clone's
    /// `work/`, or the cache's `suite/` for `cargo harness test`.
    pub trees: PathBuf,
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
        Layout::new(repo, cache)
    }

    /// The layout of a clone at `repo` with its cache at `cache`; the trees in the clone.
    pub fn new(repo: PathBuf, cache: PathBuf) -> Self {
        let trees = repo.join("work");
        Layout { repo, cache, trees }
    }

    /// This layout with the kernel trees in the cache (`<cache>/suite/`), for
    /// `cargo harness test`. The suite's trees hold only what `patches/` makes (the
    /// suite applies with `--force`), so they need not be in the clone; kept in the
    /// cache, a fresh clone (CI's) finds them applied, configured and built, and kbuild
    /// has only what the patches changed since to rebuild, where in a new tree it builds
    /// every Rust crate again (ccache caches only the C objects). `git checkout` and
    /// `git am` rewrite only the files they change, so make's view of what changed
    /// stays right. The trees are locked for as long as the returned guard lives: a
    /// second suite, from any clone, waits for the first.
    pub fn for_suite(&self) -> std::io::Result<(Layout, TreesLock)> {
        let suite = self.with_suite_trees();
        std::fs::create_dir_all(&suite.trees)?;
        let lock = TreesLock::acquire(&suite.trees.join(".lock"))?;
        Ok((suite, lock))
    }

    /// This layout with the trees where the suite keeps them, unlocked: for reading what
    /// a suite built; [`Layout::for_suite`] to use them.
    pub fn with_suite_trees(&self) -> Layout {
        Layout {
            trees: self.cache.join("suite"),
            ..self.clone()
        }
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
        self.trees.join("linux")
    }
    /// The negative control's tree (base + patches/broken), also ignored.
    pub fn broken_tree(&self) -> PathBuf {
        self.trees.join("linux-broken")
    }
    /// The cross builds' tree (base + fixes + the mailed series).
    pub fn cross_tree(&self) -> PathBuf {
        self.trees.join("cross-tree")
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

/// An exclusive lock on a file (`File::lock`, flock(2) on Linux), held until dropped; the
/// kernel drops it when the process ends, however it ends.
#[must_use = "the trees are unlocked when this is dropped"]
pub struct TreesLock {
    _file: std::fs::File,
}

impl TreesLock {
    /// Lock `path` (created if missing), waiting, with a line that says so, while another
    /// process holds it; the holder's pid is in the file.
    pub fn acquire(path: &Path) -> std::io::Result<TreesLock> {
        use std::io::{Read, Seek, Write};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                file.read_to_string(&mut holder).ok();
                eprintln!(
                    "waiting for process {} to unlock {} (another `cargo harness test` uses those trees)",
                    holder.trim(),
                    path.display()
                );
                file.lock()?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(TreesLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suite_keeps_its_trees_in_the_cache_and_the_rest_in_the_clone() {
        let t = tempfile::tempdir().unwrap();
        let l = Layout::new(t.path().join("clone"), t.path().join("cache"));
        assert_eq!(l.work_tree(), t.path().join("clone/work/linux"));
        let (s, _lock) = l.for_suite().unwrap();
        assert_eq!(s.work_tree(), t.path().join("cache/suite/linux"));
        assert_eq!(s.broken_tree(), t.path().join("cache/suite/linux-broken"));
        assert_eq!(s.cross_tree(), t.path().join("cache/suite/cross-tree"));
        // What a person reads stays in the clone.
        assert_eq!(s.runs(), l.runs());
        assert_eq!(s.repo, l.repo);
    }

    #[test]
    fn a_second_holder_waits_for_the_first() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("lock");
        let first = TreesLock::acquire(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let second = std::thread::spawn(move || {
            // flock(2) locks belong to the open file: another open() contends, as another
            // process would.
            let l = TreesLock::acquire(&p).unwrap();
            tx.send(()).unwrap();
            drop(l);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(),
            "the second lock was taken while the first was held"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second lock is taken once the first is dropped");
        second.join().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
    }
}
