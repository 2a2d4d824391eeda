//! The base: Debian's linux-source-7.3 from trixie-backports, checked against
//! recorded checksums, unpacked once into the cache and committed as one
//! tagged commit that every work tree starts from.

use anyhow::{bail, Context, Result};
use fs_err as fs;
use std::path::Path;
use std::process::Command;

use crate::cmd;
use crate::layout::{Layout, BASE_TAG, BUILD_DIR_PATTERN};

pub const PACKAGE: &str = "linux-source-7.3";
pub const VERSION: &str = "7.3.4-1~bpo13+1";
pub const DEB_SHA256: &str = "703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3";
pub const TARBALL: &str = "linux-source-7.3.tar.xz";
pub const TARBALL_SHA256: &str = "76df1affb19f24926949369be1d74b60071c963c598ce8780bddd4bbf0fc3bc4";
/// Fixed dates make the base commit id the same on every machine.
const BASE_DATE: &str = "2026-11-15T22:30:00Z";

fn sha256(path: &Path) -> Result<String> {
    let out = cmd::output(Command::new("sha256sum").arg(path))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_string())
}

fn verify(path: &Path, want: &str) -> Result<()> {
    let got = sha256(path)?;
    if got != want {
        bail!(
            "{} has sha256 {got}, expected {want}: corrupt download or a different package version",
            path.display()
        );
    }
    Ok(())
}

/// The base repository exists and carries the base tag.
pub fn is_ready(layout: &Layout) -> bool {
    cmd::output(&mut cmd::git(
        &layout.base_repo(),
        ["rev-parse", "-q", "--verify", &format!("refs/tags/{BASE_TAG}")],
    ))
    .is_ok()
}

pub fn ensure(layout: &Layout) -> Result<()> {
    if is_ready(layout) {
        return Ok(());
    }
    let dir = layout.base_dir();
    fs::create_dir_all(&dir)?;
    let deb = dir.join(format!("{PACKAGE}_{}_all.deb", VERSION.replace(':', "%3a")));
    if !deb.exists() {
        crate::toolchain::ensure_apt_sources()?;
        cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
        cmd::run(
            Command::new("apt-get")
                .current_dir(&dir)
                .args(["download", "-q", &format!("{PACKAGE}={VERSION}")]),
        )
        .with_context(|| format!("cannot download {PACKAGE} {VERSION} from trixie-backports"))?;
    }
    verify(&deb, DEB_SHA256)?;
    let tarball = dir.join(TARBALL);
    cmd::run(Command::new("sh").current_dir(&dir).arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -xO ./usr/src/{TARBALL} > {TARBALL}",
        deb.display()
    )))?;
    verify(&tarball, TARBALL_SHA256)?;
    let repo = layout.base_repo();
    if repo.exists() {
        fs::remove_dir_all(&repo)?;
    }
    cmd::logged(
        "unpack base",
        Command::new("tar").current_dir(&dir).arg("-xf").arg(TARBALL),
        &dir.join("unpack.log"),
        None,
    )?;
    fs::remove_file(&tarball)?;
    // Debian's packaging appends "/*" and "!/debian/" to .gitignore, which
    // hides every file of the tree from git; drop them as upstream has none.
    let gi = repo.join(".gitignore");
    let text = fs::read_to_string(&gi)?;
    if let Some(i) = text.find("# Debian packaging") {
        fs::write(&gi, format!("{}\n", text[..i].trim_end()))?;
    }
    let git = |args: &[&str]| {
        let mut c = cmd::git(&repo, args);
        c.env("GIT_AUTHOR_DATE", BASE_DATE)
            .env("GIT_COMMITTER_DATE", BASE_DATE)
            .env("GIT_AUTHOR_NAME", "Debian kernel team")
            .env("GIT_AUTHOR_EMAIL", "debian-kernel@lists.debian.org")
            .env("GIT_COMMITTER_NAME", "Debian kernel team")
            .env("GIT_COMMITTER_EMAIL", "debian-kernel@lists.debian.org");
        c
    };
    cmd::output(&mut git(&["init", "-q", "-b", "base"]))?;
    // -f: the tree's own .gitignore hides files it ships (.gitattributes,
    // .clang-format, ...); the base must hold every file of the tarball.
    cmd::output(&mut git(&["add", "-f", "-A", "."]))?;
    let msg = format!(
        "Linux 7.3.4 (Debian {PACKAGE} {VERSION})\n\nUnpacked from {TARBALL} (sha256 {TARBALL_SHA256}).\n\
         The trailing Debian packaging lines of .gitignore ('/*', '!/debian/') are\ndropped so that git sees new files, as upstream."
    );
    cmd::output(&mut git(&["commit", "-q", "-m", &msg]))?;
    cmd::output(&mut git(&["tag", BASE_TAG]))?;
    Ok(())
}

/// Clone the base repository into `dest` (objects shared, nothing copied) and check out
/// a new branch `branch` at the base tag.
pub fn clone_to(layout: &Layout, dest: &Path, branch: &str) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    cmd::output(
        Command::new("git")
            .args(["clone", "-q", "--shared", "--no-checkout"])
            .arg(layout.base_repo())
            .arg(dest),
    )?;
    cmd::output(&mut cmd::git(dest, ["checkout", "-q", "-b", branch, BASE_TAG]))?;
    exclude_build_dirs(dest)
}

/// Keep the tree's build directories (`build-<config>`, see `Layout::build_dir`) out of
/// `git status`; `git clean` gets the same pattern with `-e` ([`clean`]).
pub fn exclude_build_dirs(tree: &Path) -> Result<()> {
    let exclude = tree.join(".git/info/exclude");
    let text = fs::read_to_string(&exclude).unwrap_or_default();
    if !text.lines().any(|l| l == BUILD_DIR_PATTERN) {
        if let Some(dir) = exclude.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&exclude, format!("{text}{BUILD_DIR_PATTERN}\n"))?;
    }
    Ok(())
}

/// `git clean -fdx` of a derived tree, keeping its build directories (and so its
/// incremental builds).
pub fn clean(tree: &Path) -> Result<()> {
    cmd::output(&mut cmd::git(tree, ["clean", "-q", "-fdx", "-e", BUILD_DIR_PATTERN]))?;
    Ok(())
}
