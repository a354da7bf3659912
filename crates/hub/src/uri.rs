//! `hf://` URIs: `hf://[datasets/|spaces/]OWNER/NAME[@REVISION][/PATH]`.
//!
//! The workflow loader hands us the URI as the `url` crate printed it, so the path may be
//! percent-encoded (`%20`); revisions with a slash must be encoded (`refs%2Fpr%2F1`), since the
//! first `/` after the name starts the path.

use std::fmt;

use crate::error::HubError;

/// The form every `hf://` URI must have, for error messages.
pub const FORM: &str = "hf://[datasets/|spaces/]OWNER/NAME[@REVISION][/PATH]";

/// The kind of a Hub repository: it decides the API and download URL prefixes and the cache
/// folder name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoKind {
    Model,
    Dataset,
    Space,
}

impl RepoKind {
    /// `models`, `datasets`, `spaces`: the API path segment and the cache folder prefix.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
            RepoKind::Space => "spaces",
        }
    }

    /// The prefix of web and download URLs: models have none.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
            RepoKind::Space => "spaces/",
        }
    }
}

/// A parsed `hf://` URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HfUri {
    pub kind: RepoKind,
    /// `OWNER/NAME`.
    pub repo: String,
    /// A branch, tag or commit, decoded (`refs/pr/1`); `main` when the URI names none.
    pub revision: String,
    /// A file or folder inside the repository, decoded, without leading or trailing `/`;
    /// empty for the whole repository.
    pub path: String,
}

impl HfUri {
    pub fn parse(uri: &str) -> Result<HfUri, HubError> {
        let bad = |why: &str| HubError::InvalidUri {
            uri: uri.to_string(),
            why: why.to_string(),
        };
        let rest = uri
            .strip_prefix("hf://")
            .ok_or_else(|| bad("it does not start with hf://"))?;
        let (kind, rest) = if let Some(r) = rest.strip_prefix("datasets/") {
            (RepoKind::Dataset, r)
        } else if let Some(r) = rest.strip_prefix("spaces/") {
            (RepoKind::Space, r)
        } else {
            (RepoKind::Model, rest)
        };
        let (owner, rest) = rest
            .split_once('/')
            .ok_or_else(|| bad("it names no OWNER/NAME"))?;
        let (name_rev, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) => (n, Some(r)),
            None => (name_rev, None),
        };
        for (what, part) in [("owner", owner), ("name", name)] {
            check_name(part).map_err(|why| bad(&format!("repository {what} `{part}` {why}")))?;
        }
        let revision = match revision {
            None => "main".to_string(),
            Some(r) => {
                let r = percent_decode(r).map_err(|why| bad(&format!("revision: {why}")))?;
                if r.is_empty() {
                    return Err(bad("the revision after `@` is empty"));
                }
                r
            }
        };
        let path = percent_decode(path).map_err(|why| bad(&format!("path: {why}")))?;
        let path = path.trim_matches('/').to_string();
        if path.split('/').any(|c| c == ".." || c == ".")
            || (!path.is_empty() && path.split('/').any(str::is_empty))
        {
            return Err(bad("the path has an empty, `.` or `..` component"));
        }
        Ok(HfUri {
            kind,
            repo: format!("{owner}/{name}"),
            revision,
            path,
        })
    }

    /// `hf://datasets/OWNER/NAME`: the repository, for messages.
    pub fn repo_uri(&self) -> String {
        format!("hf://{}{}", self.kind.url_prefix(), self.repo)
    }

    /// This URI at `commit`: what a run records, so its lineage says which bytes it used.
    pub fn pinned(&self, commit: &str) -> String {
        HfUri {
            revision: commit.to_string(),
            ..self.clone()
        }
        .to_string()
    }
}

impl fmt::Display for HfUri {
    /// The canonical form: the revision only when it is not `main`, encoded where needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repo_uri())?;
        if self.revision != "main" {
            write!(
                f,
                "@{}",
                self.revision.replace('%', "%25").replace('/', "%2F")
            )?;
        }
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        Ok(())
    }
}

/// The Hub's rule for owner and repository names, so a typo fails here and not as a 404.
fn check_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > 96 {
        return Err("is longer than 96 characters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may hold only letters, digits, `-`, `_` and `.`");
    }
    if s.starts_with(['-', '.']) || s.ends_with(['-', '.']) || s.contains("--") || s.contains("..")
    {
        return Err("may not start or end with `-` or `.`, nor hold `--` or `..`");
    }
    Ok(())
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let v = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`%` at byte {i} is not followed by two hex digits"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "it decodes to invalid UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_datasets_spaces_revisions_and_paths() {
        let u = HfUri::parse("hf://meta-llama/Llama-2-13b-hf").unwrap();
        assert_eq!(
            (
                u.kind,
                u.repo.as_str(),
                u.revision.as_str(),
                u.path.as_str()
            ),
            (RepoKind::Model, "meta-llama/Llama-2-13b-hf", "main", "")
        );
        let u = HfUri::parse("hf://datasets/oscar-corpus/OSCAR-2301/de_meta").unwrap();
        assert_eq!(u.kind, RepoKind::Dataset);
        assert_eq!(u.path, "de_meta");
        let u = HfUri::parse("hf://datasets/LeoLM/MMLU_de@main/test.jsonl").unwrap();
        assert_eq!(
            (u.revision.as_str(), u.path.as_str()),
            ("main", "test.jsonl")
        );
        let u = HfUri::parse("hf://spaces/a/b@refs%2Fpr%2F1/x/y%20z.txt").unwrap();
        assert_eq!(u.kind, RepoKind::Space);
        assert_eq!(
            (u.revision.as_str(), u.path.as_str()),
            ("refs/pr/1", "x/y z.txt")
        );
        assert_eq!(u.to_string(), "hf://spaces/a/b@refs%2Fpr%2F1/x/y z.txt");
        assert_eq!(
            u.pinned("0123"),
            "hf://spaces/a/b@0123/x/y z.txt".to_string()
        );
    }

    #[test]
    fn what_the_workflow_loader_prints_parses_the_same() {
        // The loader stores `url::Url::to_string()`; the owner is the URL's host there.
        for s in [
            "hf://LeoLM/Leo-7B@v1.0/sub dir/a.json",
            "hf://datasets/LeoLM/MMLU_de@refs%2Fpr%2F1/test.jsonl",
        ] {
            let printed = url::Url::parse(s).unwrap().to_string();
            assert_eq!(
                HfUri::parse(&printed).unwrap(),
                HfUri::parse(s).unwrap(),
                "{printed}"
            );
        }
    }

    #[test]
    fn malformed_uris_say_what_is_wrong() {
        for (uri, says) in [
            ("s3://a/b", "does not start with hf://"),
            ("hf://gpt2", "names no OWNER/NAME"),
            ("hf://datasets/a", "names no OWNER/NAME"),
            ("hf://a/b@", "revision after `@` is empty"),
            ("hf://a/b c", "name `b c` may hold only"),
            ("hf://a/b/../c", "`..`"),
            ("hf://a/b@x%2", "two hex digits"),
        ] {
            let e = HfUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(FORM), "{uri}: {e}");
        }
    }
}
