//! Requests to the Hub: the token only ever goes to the endpoint's own origin (LFS files
//! redirect to a CDN or a storage bucket, which must never see it), redirects are followed by
//! hand for that reason, and error answers become [`HubError`]s by their `X-Error-Code`.

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::error::HubError;
use crate::settings::HubSettings;
use crate::uri::HfUri;

/// At most this many redirects per request (the Hub needs one or two).
const MAX_REDIRECTS: usize = 10;

pub(crate) struct Http {
    client: reqwest::Client,
    endpoint: Url,
    auth: Option<HeaderValue>,
    pub api_timeout: std::time::Duration,
}

/// What a request was for, to word its errors.
pub(crate) struct Target<'a> {
    pub uri: &'a HfUri,
    pub endpoint: &'a str,
}

impl Http {
    pub fn new(settings: &HubSettings) -> Result<Http, HubError> {
        let endpoint = Url::parse(&settings.endpoint).map_err(|e| HubError::InvalidUri {
            uri: settings.endpoint.clone(),
            why: format!("HF_ENDPOINT is not a URL ({e})"),
        })?;
        let auth = match &settings.token {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    HubError::InvalidUri {
                        uri: settings.endpoint.clone(),
                        why: "the token (HF_TOKEN) holds characters no HTTP header may".into(),
                    }
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.api_timeout)
            .read_timeout(settings.read_timeout)
            .user_agent(concat!(
                "leo/",
                env!("CARGO_PKG_VERSION"),
                "; hf_hub-compatible"
            ))
            .build()
            .map_err(|source| HubError::Network {
                what: "setting up the HTTP client".into(),
                source,
            })?;
        Ok(Http {
            client,
            endpoint,
            auth,
            api_timeout: settings.api_timeout,
        })
    }

    pub fn token_sent(&self) -> bool {
        self.auth.is_some()
    }

    /// `{endpoint}/{segments…}`, each segment percent-encoded (a `/` inside one is encoded).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// Whether `url` is on the endpoint's origin: only then does it get the token.
    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.endpoint.scheme()
            && url.host_str() == self.endpoint.host_str()
            && url.port_or_known_default() == self.endpoint.port_or_known_default()
    }

    /// Sends one request and follows redirects by hand: all of them, or only those that stay on
    /// the endpoint's origin (`stop_at_other_host`, for metadata: the answer that redirects away
    /// carries the file's etag and size). Non-success answers are returned, not errors.
    pub async fn send(
        &self,
        method: Method,
        mut url: Url,
        range_from: Option<u64>,
        timeout: Option<std::time::Duration>,
        stop_at_other_host: bool,
    ) -> Result<Response, HubError> {
        for _ in 0..=MAX_REDIRECTS {
            let mut headers = HeaderMap::new();
            if let (Some(auth), true) = (&self.auth, self.same_origin(&url)) {
                headers.insert(AUTHORIZATION, auth.clone());
            }
            if let Some(from) = range_from.filter(|f| *f > 0) {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes={from}-")) {
                    headers.insert(RANGE, v);
                }
            }
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers);
            if let Some(t) = timeout {
                request = request.timeout(t);
            }
            let response = request.send().await.map_err(|source| HubError::Network {
                what: format!("{method} {}", redact(&url)),
                source,
            })?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let Some(next) = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
            else {
                return Ok(response);
            };
            if stop_at_other_host && !self.same_origin(&next) {
                return Ok(response);
            }
            url = next;
        }
        Err(HubError::Status {
            url: redact(&url),
            status: 310,
            message: Some(format!("more than {MAX_REDIRECTS} redirects")),
        })
    }

    /// The error an unsuccessful answer means, by the Hub's `X-Error-Code` and status.
    pub async fn error_of(&self, response: Response, target: &Target<'_>) -> HubError {
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let code = header("x-error-code");
        let message = header("x-error-message");
        let url = redact(response.url());
        let repo = target.uri.repo_uri();
        let token_sent = self.token_sent();
        match code.as_deref() {
            Some("GatedRepo") => HubError::Gated {
                page: format!(
                    "{}/{}{}",
                    target.endpoint,
                    target.uri.kind.url_prefix(),
                    target.uri.repo
                ),
                repo,
                token_sent,
            },
            Some("RepoNotFound") => HubError::RepoNotFound { repo, token_sent },
            Some("RevisionNotFound") => HubError::RevisionNotFound {
                repo,
                revision: target.uri.revision.clone(),
            },
            Some("EntryNotFound") => HubError::EntryNotFound {
                uri: target.uri.to_string(),
                path: target.uri.path.clone(),
                repo,
                commit: target.uri.revision.clone(),
                close: Vec::new(),
            },
            _ if status == StatusCode::UNAUTHORIZED => HubError::RepoNotFound { repo, token_sent },
            _ => {
                let body = if message.is_none() {
                    response.text().await.ok().map(|t| {
                        let t = t.trim().to_string();
                        t.chars().take(300).collect::<String>()
                    })
                } else {
                    None
                };
                HubError::Status {
                    url,
                    status: status.as_u16(),
                    message: message.or(body).filter(|m| !m.is_empty()),
                }
            }
        }
    }
}

/// A URL as it may appear in messages: without query (signed CDN URLs carry credentials there).
pub(crate) fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    let _ = u.set_password(None);
    u.to_string()
}
