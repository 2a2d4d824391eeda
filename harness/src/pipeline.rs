//! The first stage of every guest run, benchmark and control: from what to build
//! ([`BuildOpts`]) to a built kernel ([`Built`]): install what is missing, unpack the base,
//! apply the stacks, configure, build.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::arch::{Arch, Machine};
use crate::config::{self, Variant};
use crate::failure::Failure;
use crate::layout::Layout;
use crate::{base, build, series, toolchain};

/// What kernel to build.
#[derive(clap::Args, Clone, Debug)]
pub struct BuildOpts {
    /// The guest's architecture: x86_64 (QEMU's PC) or arm64 (QEMU's virt board, contpte).
    #[arg(long, value_enum, default_value = "x86_64")]
    pub arch: Arch,
    /// Lock/debug configuration.
    #[arg(long = "config", value_enum, default_value = "default")]
    pub variant: Variant,
    /// Which kernel: the series, or the broken negative control.
    #[arg(long, value_enum, default_value = "series")]
    pub kernel: series::Kernel,
    /// Discard work-tree changes that are not in patches/.
    #[arg(long)]
    pub force: bool,
    /// Build the mailed series only, without patches/local/.
    #[arg(long)]
    pub mailed_only: bool,
    /// An extra kconfig fragment, merged after the configuration's own (e.g.
    /// configs/extra/trace.config for a look at the collapses with ftrace); its symbols are
    /// checked like the others'. The build goes to build-<arch>-<config>+<fragment's name>,
    /// so the ordinary build directory stays as it is.
    #[arg(long = "fragment")]
    pub fragments: Vec<PathBuf>,
}

impl BuildOpts {
    /// The build directory's configuration name: the variant's, `+` each extra fragment's
    /// file stem.
    pub fn config_name(&self) -> String {
        let mut name = self.variant.name().to_string();
        for f in &self.fragments {
            name.push('+');
            name.push_str(&f.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default());
        }
        name
    }

    /// The test kernel of `arch` and `variant` with the series and the local stack.
    pub fn series(arch: Arch, variant: Variant) -> BuildOpts {
        BuildOpts {
            arch,
            variant,
            kernel: series::Kernel::Series,
            force: false,
            mailed_only: false,
            fragments: Vec::new(),
        }
    }
}

/// Seconds per stage, in the order they ran.
#[derive(Debug, Default, Clone)]
pub struct Stages(pub Vec<(String, f64)>);

impl Stages {
    /// Run `f` as the stage `name`, timing it.
    pub fn timed<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = f()?;
        self.0.push((name.to_string(), t.elapsed().as_secs_f64()));
        Ok(r)
    }

    pub fn seconds(&self) -> BTreeMap<String, f64> {
        self.0.iter().cloned().collect()
    }

    /// `install 0.1s, unpack 0.0s, ...`
    pub fn line(&self) -> String {
        self.0
            .iter()
            .map(|(n, s)| format!("{n} {s:.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A built kernel.
#[derive(Debug, Clone)]
pub struct Built {
    pub machine: &'static Machine,
    pub opts: BuildOpts,
    /// The source tree (the series' work tree, or the negative control's).
    pub tree: PathBuf,
    /// kbuild's `O=` directory.
    pub out: PathBuf,
    /// The boot image.
    pub image: PathBuf,
    /// The resulting `.config`.
    pub config: BTreeMap<String, config::Want>,
}

impl Built {
    /// Whether `.config` has `symbol=y`.
    pub fn has(&self, symbol: &str) -> bool {
        config::has(&self.config, symbol)
    }
}

/// Install what is missing, apply, configure, build.
/// Install what `arches`' guests and the builds need (Debian packages, bindgen, QEMU, a
/// cross compiler and busybox), unpack the base and check the toolchain against it.
pub fn install(layout: &Layout, arches: &[Arch]) -> Result<()> {
    for a in arches {
        toolchain::install(layout, a.guest_machine()?)?;
    }
    base::ensure(layout)?;
    toolchain::check(layout, &layout.base_repo())
}

pub fn prepare(layout: &Layout, o: &BuildOpts, stages: &mut Stages) -> Result<Built> {
    let machine = o.arch.guest_machine().context(Failure::Setup)?;
    let with_series = o.kernel == series::Kernel::Series;
    let (tree, out) = setup(layout, o, machine, with_series, stages).context(Failure::Setup)?;
    let (image, _) = stages
        .timed("build", || build::kernel(layout, &tree, &out, machine))
        .context(Failure::Build)?;
    let config_path = out.join(".config");
    let text = fs_err::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    Ok(Built {
        machine,
        opts: o.clone(),
        tree,
        out,
        image,
        config: config::parse(&text),
    })
}

/// Everything before kbuild: returns the tree and its build directory, configured.
fn setup(
    layout: &Layout,
    o: &BuildOpts,
    machine: &'static Machine,
    with_series: bool,
    stages: &mut Stages,
) -> Result<(PathBuf, PathBuf)> {
    stages.timed("install", || {
        let ready = base::is_ready(layout)
            && toolchain::check(layout, &layout.base_repo()).is_ok()
            && toolchain::check_machine(layout, machine).is_ok();
        if !ready {
            toolchain::install(layout, machine)?;
        }
        Ok(())
    })?;
    stages.timed("unpack", || base::ensure(layout))?;
    let tree = stages.timed("apply", || {
        if with_series {
            series::apply(layout, !o.mailed_only, o.force)
        } else {
            series::apply_broken(layout)
        }
    })?;
    toolchain::check(layout, &tree)?;
    // The negative control's tree is a tree of its own: its build directory has the
    // variant's name too, and the same relative paths, so ccache shares the base's objects.
    let out = Layout::build_dir(&tree, &machine.build_name(&o.config_name()));
    let extra = extra_fragments(&o.fragments)?;
    stages.timed("configure", || {
        toolchain::rust_available(layout, &tree, &out)?;
        config::configure(layout, &tree, &out, machine, o.variant, with_series, &extra)
    })?;
    Ok((tree, out))
}

/// The `--fragment` files as absolute paths: merge_config.sh runs in the kernel tree, where
/// a path relative to the caller's directory means nothing.
fn extra_fragments(fragments: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fragments
        .iter()
        .map(|f| {
            let abs = f
                .canonicalize()
                .with_context(|| format!("--fragment {}", f.display()))?;
            if !abs.is_file() {
                anyhow::bail!("--fragment {}: not a file", f.display());
            }
            Ok(abs)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extra_fragment_is_passed_on_by_its_absolute_path_and_a_missing_one_is_an_error() {
        let got = extra_fragments(&[PathBuf::from("../configs/extra/trace.config")]).expect("the fragment exists");
        assert!(
            got[0].is_absolute() && got[0].ends_with("configs/extra/trace.config"),
            "{got:?}"
        );
        let err = extra_fragments(&[PathBuf::from("configs/extra/no-such.config")]).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("--fragment configs/extra/no-such.config: "),
            "{err:#}"
        );
        assert!(extra_fragments(&[PathBuf::from("../configs/extra")]).is_err());
    }
}
