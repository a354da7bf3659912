//! What can go wrong, worded so a user knows what to do next. No variant ever holds the token:
//! requests carry it in a header only, and messages say whether one was sent, never what it is.

use std::path::PathBuf;

use crate::uri::FORM;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("`{uri}` is not a valid hf:// URI: {why}; expected {FORM}")]
    InvalidUri { uri: String, why: String },

    #[error(
        "{repo} is a gated repository: accept its conditions at {page} (logged in), then set \
         HF_TOKEN to a read token of that account ({})",
        if *token_sent { "a token was sent, but its account has no access" } else { "no token was sent: HF_TOKEN is not set" }
    )]
    Gated {
        repo: String,
        page: String,
        token_sent: bool,
    },

    #[error(
        "{repo}: no such repository, or it is private and {}",
        if *token_sent { "the token sent (HF_TOKEN) has no access to it" } else { "no token was sent (HF_TOKEN is not set)" }
    )]
    RepoNotFound { repo: String, token_sent: bool },

    #[error("{repo}: no revision `{revision}` (a branch, tag or commit of the repository)")]
    RevisionNotFound { repo: String, revision: String },

    #[error(
        "{uri}: `{path}` is no file or folder of {repo} at {commit}{}",
        close_names(close)
    )]
    EntryNotFound {
        uri: String,
        path: String,
        repo: String,
        commit: String,
        close: Vec<String>,
    },

    #[error("{uri} is not cached in {} and {why}", cache.display())]
    NotCached {
        uri: String,
        cache: PathBuf,
        why: String,
    },

    #[error("{url}: HTTP {status}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        message: Option<String>,
    },

    #[error("{what}: {source}")]
    Network {
        what: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("{uri}: {file} came out wrong ({why}); the partial download was removed, try again")]
    Integrity {
        uri: String,
        file: String,
        why: String,
    },

    #[error("{what}: the transfer ended at byte {have} of {size}")]
    Cut { what: String, have: u64, size: u64 },

    #[error("{uri}: the Hub's answer is not what it should be: {why}")]
    Protocol { uri: String, why: String },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    /// Whether the Hub could not be reached at all (connection refused, DNS, timeout), as
    /// opposed to answering with an error: then a cached snapshot may stand in.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HubError::Network { source, .. }
            if source.is_connect() || source.is_timeout() || source.is_request())
    }

    /// Whether trying again may help (connection trouble, 5xx, a cut transfer).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            HubError::Network { .. } | HubError::Cut { .. } => true,
            HubError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

fn close_names(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!("; close names: {}", close.join(", "))
    }
}

/// `Io` with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HubError {
    let what = what.into();
    move |source| HubError::Io { what, source }
}
