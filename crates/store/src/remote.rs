//! Stores on object storage services: `s3://BUCKET[/PREFIX]` (AWS and any S3-compatible
//! service), `gs://BUCKET[/PREFIX]` (Google Cloud Storage), `az://CONTAINER[/PREFIX]` (Azure
//! Blob Storage). Settings and credentials come from each service's usual environment variables
//! (for S3 also the shared `~/.aws/credentials` and `~/.aws/config` files), never from the URL,
//! so the URL recorded with runs holds no secret.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, RetryConfig};

use crate::ArtifactStore;

fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 10,
        retry_timeout: Duration::from_secs(300),
        ..Default::default()
    }
}

/// Opens `location` when it names a remote store; None for local paths and file:// URLs.
pub(crate) fn open(location: &str, settings: &[(&str, String)]) -> Result<Option<ArtifactStore>> {
    let Some((scheme, rest)) = location.split_once("://") else {
        return Ok(None);
    };
    if !matches!(scheme, "s3" | "gs" | "az") {
        return Ok(None);
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.contains('@') || bucket.contains(':') {
        bail!("artifact store: a {scheme}:// URL must not carry credentials (they come from the environment, e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
    }
    if bucket.is_empty() || location.contains('?') {
        bail!("artifact store `{location}`: expected {scheme}://BUCKET[/PREFIX]");
    }
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" => Arc::new(s3(bucket, settings).with_context(|| format!("configuring artifact store {location}"))?),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry())
                .build()
                .with_context(|| format!("configuring artifact store {location} (GOOGLE_SERVICE_ACCOUNT, GOOGLE_APPLICATION_CREDENTIALS)"))?,
        ),
        _ => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retry())
                .build()
                .with_context(|| format!("configuring artifact store {location} (AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY)"))?,
        ),
    };
    let prefix = prefix.trim_matches('/');
    let (inner, url): (Arc<dyn ObjectStore>, String) = if prefix.is_empty() {
        (store, format!("{scheme}://{bucket}"))
    } else {
        (
            Arc::new(object_store::prefix::PrefixStore::new(
                store,
                StorePath::from(prefix),
            )),
            format!("{scheme}://{bucket}/{prefix}"),
        )
    };
    Ok(Some(ArtifactStore {
        inner,
        url,
        local_root: None,
    }))
}

fn s3(bucket: &str, settings: &[(&str, String)]) -> Result<object_store::aws::AmazonS3> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let mut builder = AmazonS3Builder::from_env();
    let given = |name: &str| {
        settings.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
            || std::env::var_os(name).is_some()
    };
    // The shared AWS files fill in what the environment leaves out.
    if let Some(home) = std::env::var_os("HOME") {
        let home = Path::new(&home);
        let profile = settings
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("AWS_PROFILE"))
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("AWS_PROFILE").ok())
            .unwrap_or_else(|| "default".to_string());
        let credentials = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map_or_else(|| home.join(".aws/credentials"), Into::into);
        let config = std::env::var_os("AWS_CONFIG_FILE")
            .map_or_else(|| home.join(".aws/config"), Into::into);
        for (key, value) in profile_settings(&credentials, &config, &profile)? {
            if !given(key) {
                builder = builder.with_config(key.to_ascii_lowercase().parse()?, value);
            }
        }
    }
    for (key, value) in settings {
        if key.eq_ignore_ascii_case("AWS_PROFILE") {
            continue;
        }
        let key: AmazonS3ConfigKey = key
            .to_ascii_lowercase()
            .parse()
            .with_context(|| format!("unknown S3 setting {key}"))?;
        builder = builder.with_config(key, value);
    }
    Ok(builder
        .with_bucket_name(bucket)
        .with_retry(retry())
        .build()?)
}

/// Settings of `profile` from the shared AWS files (INI): keys, session token, region and
/// endpoint, as the environment variables they stand for.
pub(crate) fn profile_settings(
    credentials: &Path,
    config: &Path,
    profile: &str,
) -> Result<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    let read = |path: &Path, section: &str| -> Result<Vec<(String, String)>> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(Vec::new());
        };
        let mut current = None::<String>;
        let mut found = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = Some(name.trim().to_string());
                continue;
            }
            if current.as_deref() == Some(section) {
                if let Some((k, v)) = line.split_once('=') {
                    found.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
        }
        Ok(found)
    };
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let pairs = read(credentials, profile)?
        .into_iter()
        .chain(read(config, &config_section)?);
    for (k, v) in pairs {
        let env = match k.as_str() {
            "aws_access_key_id" => "AWS_ACCESS_KEY_ID",
            "aws_secret_access_key" => "AWS_SECRET_ACCESS_KEY",
            "aws_session_token" => "AWS_SESSION_TOKEN",
            "region" => "AWS_REGION",
            "endpoint_url" => "AWS_ENDPOINT_URL",
            _ => continue,
        };
        if !out.iter().any(|(e, _)| *e == env) {
            out.push((env, v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_come_from_the_shared_aws_files() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s1\n\n\
             [team]\n# a comment\naws_access_key_id=AKTEAM\naws_secret_access_key = s2\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = eu-central-1\n[profile team]\nregion = us-west-2\n\
             endpoint_url = http://minio.internal:9000\n",
        )
        .unwrap();
        let team = profile_settings(&creds, &config, "team").unwrap();
        assert!(team.contains(&("AWS_ACCESS_KEY_ID", "AKTEAM".to_string())));
        assert!(team.contains(&("AWS_SECRET_ACCESS_KEY", "s2".to_string())));
        assert!(team.contains(&("AWS_REGION", "us-west-2".to_string())));
        assert!(team.contains(&("AWS_ENDPOINT_URL", "http://minio.internal:9000".to_string())));
        let default = profile_settings(&creds, &config, "default").unwrap();
        assert!(default.contains(&("AWS_REGION", "eu-central-1".to_string())));
        assert!(default.contains(&("AWS_ACCESS_KEY_ID", "AKDEFAULT".to_string())));
        assert!(profile_settings(&dir.path().join("none"), &config, "x")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn remote_urls_name_their_service_and_never_credentials() {
        assert!(open("/tmp/x", &[]).unwrap().is_none());
        assert!(open("file:///tmp/x", &[]).unwrap().is_none());
        let s = open("s3://bucket/a/b/", &[("AWS_REGION", "us-east-1".into())])
            .unwrap()
            .unwrap();
        assert_eq!(s.url(), "s3://bucket/a/b");
        for bad in ["s3://key:secret@bucket/p", "gs://", "az://c?sig=x"] {
            let err = open(bad, &[]).expect_err(bad);
            assert!(!format!("{err:#}").contains("secret@"), "{err:#}");
        }
    }
}
