//! The model's own thread: it loads the checkpoint and runs one generation at a time, in the
//! order requests arrive. One model on one device gains nothing from running two generations
//! at once on the CPU, and a single owner keeps the tensors away from any locking.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use leo_llama::tch::{Device, Kind};
use leo_llama::{Finish, GenerateOptions, Generation, Llama, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

/// What the server learns about the model once it is loaded.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// `max_position_embeddings`: prompt plus completion must fit.
    pub context: usize,
}

/// One request's generation.
pub struct Job {
    pub prompt: Vec<i64>,
    pub opts: GenerateOptions,
    /// Send [`Event::Text`] deltas as the text grows (streaming requests).
    pub stream: bool,
    pub events: UnboundedSender<Event>,
}

#[derive(Debug)]
pub enum Event {
    /// More of the completion's text: deltas concatenate to the final text.
    Text(String),
    /// The generation, or why it failed.
    Done(Result<Outcome, String>),
}

#[derive(Debug)]
pub struct Outcome {
    pub text: String,
    pub completion_tokens: usize,
    pub finish: Finish,
}

/// Where jobs go; cloned into every request handler.
#[derive(Clone)]
pub struct Queue(mpsc::Sender<Job>);

impl Queue {
    pub fn submit(&self, job: Job) -> Result<()> {
        self.0
            .send(job)
            .map_err(|_| anyhow!("the model thread has stopped"))
    }
}

/// Loads the model on a thread of its own and returns the queue that feeds it, once loaded.
pub fn start(
    dir: PathBuf,
    device: Device,
    kind: Kind,
    tokenizer: Arc<Tokenizer>,
) -> Result<(Queue, ModelInfo)> {
    let (jobs, inbox) = mpsc::channel::<Job>();
    let (ready, loaded) = mpsc::channel::<Result<ModelInfo>>();
    std::thread::Builder::new()
        .name("model".into())
        .spawn(move || {
            let model = match Llama::load(&dir, device, kind)
                .with_context(|| format!("loading the model in {}", dir.display()))
            {
                Ok(m) => m,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let info = ModelInfo {
                context: model.config.max_position_embeddings.max(0) as usize,
            };
            if ready.send(Ok(info)).is_err() {
                return;
            }
            while let Ok(job) = inbox.recv() {
                run(&model, &tokenizer, job);
            }
        })
        .context("starting the model thread")?;
    let info = loaded
        .recv()
        .map_err(|_| anyhow!("the model thread ended while loading"))??;
    Ok((Queue(jobs), info))
}

fn run(model: &Llama, tokenizer: &Tokenizer, job: Job) {
    let Job {
        prompt,
        opts,
        stream,
        events,
    } = job;
    let mut sent = String::new();
    let on_text = |text: &str| -> Result<()> {
        if events.is_closed() {
            anyhow::bail!("the client went away");
        }
        if stream {
            let end = stable_len(text, &opts.stop_strings);
            if end > sent.len() && text[..end].starts_with(sent.as_str()) {
                let delta = text[sent.len()..end].to_string();
                sent.push_str(&delta);
                events
                    .send(Event::Text(delta))
                    .map_err(|_| anyhow!("the client went away"))?;
            }
        }
        Ok(())
    };
    // libtorch errors surface as panics in tch's non-`f_` methods: one bad request must not take
    // the model thread down with it.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        model.generate_text_streaming(tokenizer, &prompt, &opts, on_text)
    }));
    let done = match result {
        Ok(Ok(Generation {
            tokens,
            text,
            finish,
        })) => {
            if stream {
                match text.strip_prefix(sent.as_str()) {
                    Some(rest) if !rest.is_empty() => {
                        let _ = events.send(Event::Text(rest.to_string()));
                    }
                    Some(_) => {}
                    None => tracing::warn!(
                        "streamed text is not a prefix of the final text (the tokenizer's decoding \
                         changed earlier characters); the stream differs from the completion"
                    ),
                }
            }
            Ok(Outcome {
                text,
                completion_tokens: tokens.len(),
                finish,
            })
        }
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => Err(format!(
            "generation failed: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic")
        )),
    };
    let _ = events.send(Event::Done(done));
}

/// How much of `text` can be sent to a streaming client without ever taking it back: up to the
/// first stop string, holding back a tail that may be the start of one (the final text is cut
/// before it) and replacement characters at the end (an incomplete UTF-8 sequence of
/// byte-fallback tokens that the next token completes).
pub fn stable_len(text: &str, stops: &[String]) -> usize {
    let stops: Vec<&str> = stops
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    let mut end = match stops.iter().filter_map(|s| text.find(s)).min() {
        Some(at) => at,
        None => text.len(),
    };
    if end == text.len() {
        for s in &stops {
            let partial = (1..s.len())
                .rev()
                .filter(|&k| s.is_char_boundary(k))
                .find(|&k| text.ends_with(&s[..k]));
            if let Some(k) = partial {
                end = end.min(text.len() - k);
            }
        }
    }
    text[..end].trim_end_matches('\u{FFFD}').len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_holds_back_what_a_stop_string_or_the_next_token_may_change() {
        let stops = vec!["\nUser:".to_string(), String::new()];
        assert_eq!(stable_len("Hallo Welt", &stops), 10);
        assert_eq!(stable_len("Hallo\nUs", &stops), 5);
        assert_eq!(stable_len("Hallo\nUser: x", &stops), 5);
        assert_eq!(stable_len("Gr\u{FFFD}", &stops), 2);
        assert_eq!(stable_len("Grü", &["üß".to_string()]), 2);
        assert_eq!(stable_len("", &stops), 0);
    }
}
