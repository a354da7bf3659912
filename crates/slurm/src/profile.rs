//! The site profile: what a cluster's users share and workflows should not repeat (partition,
//! account, qos, extra `sbatch` lines), and how leo talks to the cluster.
//!
//! ```toml
//! # ~/.config/leo/slurm.toml
//! partition = "booster"
//! account = "laion"
//! extra = ["--exclusive"]
//! leo = "/shared/bin/leo"        # leo as the compute nodes see it (default: this leo)
//! poll_interval = "5s"           # how often a running job's state is asked for
//! heartbeat_timeout = "10m"      # a running job whose rank 0 is silent this long is restarted
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use leo_spec::{parse_duration, RawSlurm, SlurmOptions};

/// Where the profile is looked for: `$LEO_SLURM_PROFILE`, else
/// `$XDG_CONFIG_HOME/leo/slurm.toml`, else `~/.config/leo/slurm.toml`.
pub const PROFILE_ENV: &str = "LEO_SLURM_PROFILE";

#[derive(Debug, Clone)]
pub struct SiteProfile {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// Defaults under what workflows state.
    pub defaults: SlurmOptions,
    /// `leo` on the compute nodes; `None` = the running executable's path.
    pub leo: Option<PathBuf>,
    pub poll_interval: Duration,
    pub heartbeat_timeout: Duration,
}

impl Default for SiteProfile {
    fn default() -> Self {
        SiteProfile {
            path: None,
            defaults: SlurmOptions::default(),
            leo: None,
            poll_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(600),
        }
    }
}

impl SiteProfile {
    /// The profile of this user, or the defaults when there is none.
    pub fn load() -> Result<SiteProfile> {
        match profile_path() {
            Some(path) if path.exists() => SiteProfile::read(&path),
            Some(path) if std::env::var_os(PROFILE_ENV).is_some() => {
                bail!(
                    "{PROFILE_ENV} names {}, which does not exist",
                    path.display()
                )
            }
            _ => Ok(SiteProfile::default()),
        }
    }

    pub fn read(path: &Path) -> Result<SiteProfile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the Slurm profile {}", path.display()))?;
        SiteProfile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<SiteProfile> {
        let shown = path.display();
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        let mut profile = SiteProfile {
            path: Some(path.to_path_buf()),
            ..SiteProfile::default()
        };
        if let Some(v) = table.remove("leo") {
            let s = v
                .as_str()
                .with_context(|| format!("{shown}: leo: expected a path (a string)"))?;
            profile.leo = Some(PathBuf::from(s));
        }
        for (key, slot) in [
            ("poll_interval", &mut profile.poll_interval),
            ("heartbeat_timeout", &mut profile.heartbeat_timeout),
        ] {
            if let Some(v) = table.remove(key) {
                let s = v
                    .as_str()
                    .with_context(|| format!("{shown}: {key}: expected a duration like \"5s\""))?;
                *slot = parse_duration(s).map_err(|e| anyhow::anyhow!("{shown}: {key}: {e}"))?;
                if slot.is_zero() {
                    bail!("{shown}: {key}: must be longer than zero");
                }
            }
        }
        let raw: RawSlurm = toml::Value::Table(table)
            .try_into()
            .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        profile.defaults = raw
            .resolve()
            .map_err(|(field, m)| anyhow::anyhow!("{shown}: {}: {m}", field.join(".")))?;
        Ok(profile)
    }
}

fn profile_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(PROFILE_ENV) {
        return Some(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("leo").join("slurm.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_sets_defaults_and_how_leo_talks_to_the_cluster() {
        let p = SiteProfile::parse(
            Path::new("slurm.toml"),
            "partition = \"booster\"\naccount = \"laion\"\nextra = [\"--exclusive\"]\n\
             leo = \"/shared/bin/leo\"\npoll_interval = \"5s\"\n",
        )
        .unwrap();
        assert_eq!(p.defaults.partition.as_deref(), Some("booster"));
        assert_eq!(p.defaults.extra, ["--exclusive"]);
        assert_eq!(p.leo.as_deref(), Some(Path::new("/shared/bin/leo")));
        assert_eq!(p.poll_interval, Duration::from_secs(5));
        assert_eq!(p.heartbeat_timeout, Duration::from_secs(600));
    }

    #[test]
    fn mistakes_name_the_file_and_the_field() {
        let e = SiteProfile::parse(Path::new("/x/slurm.toml"), "partiton = \"gpu\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/x/slurm.toml: "), "{e}");
        assert!(e.contains("partiton"), "{e}");
        let e = SiteProfile::parse(Path::new("p.toml"), "poll_interval = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml: poll_interval: "), "{e}");
    }
}
