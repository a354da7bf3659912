//! Phase 1: the model under test answers both turns of each question, prompted with its own chat
//! template (leo-chat renders it as transformers would), on libtorch with a KV cache.

use std::path::Path;

use anyhow::{bail, Context, Result};
use leo_chat::ChatTemplate;
use leo_llama::tch::{self, Device, Kind};
use leo_llama::{Finish, GenerateOptions, Llama, Tokenizer};
use sha2::{Digest, Sha256};

use crate::judge::Message;
use crate::params::{DeviceChoice, Dtype};
use crate::questions::Question;

pub struct Answerer {
    model: Llama,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    stop_tokens: Vec<i64>,
}

/// One generated turn.
pub struct Turn {
    pub text: String,
    pub finish: &'static str,
    pub tokens: usize,
}

pub fn device(choice: DeviceChoice) -> Result<Device> {
    let cuda = tch::Cuda::is_available();
    Ok(match choice {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda if !cuda => bail!("device = \"cuda\" but libtorch sees no CUDA device"),
        DeviceChoice::Cuda | DeviceChoice::Auto if cuda => Device::Cuda(0),
        _ => Device::Cpu,
    })
}

pub fn kind(dtype: Dtype, device: Device) -> Kind {
    match dtype {
        Dtype::Float32 => Kind::Float,
        Dtype::Bfloat16 => Kind::BFloat16,
        Dtype::Float16 => Kind::Half,
        Dtype::Auto if device.is_cuda() => Kind::BFloat16,
        Dtype::Auto => Kind::Float,
    }
}

impl Answerer {
    /// The chat checkpoint at `dir`: weights, `tokenizer.json`, and the chat template with its
    /// special tokens. Generation stops at the config's EOS and at the template's `eos_token`
    /// (the sft stage's `<|im_end|>`), whichever comes first.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Answerer> {
        let template = ChatTemplate::from_dir(dir)
            .with_context(|| format!("the chat template of {}", dir.display()))?;
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))
            .with_context(|| format!("the tokenizer of {}", dir.display()))?;
        let model =
            Llama::load(dir, device, kind).with_context(|| format!("loading {}", dir.display()))?;
        let mut stop_tokens: Vec<i64> = model.config.eos_token_id.into_iter().collect();
        if let Some(id) = template.eos_token().and_then(|t| tokenizer.token_to_id(t)) {
            if !stop_tokens.contains(&i64::from(id)) {
                stop_tokens.push(i64::from(id));
            }
        }
        if stop_tokens.is_empty() {
            bail!("{} names no end-of-sequence token (config.json eos_token_id, tokenizer_config.json eos_token): answers would never stop", dir.display());
        }
        Ok(Answerer {
            model,
            tokenizer,
            template,
            stop_tokens,
        })
    }

    /// Both turns as FastChat asks them: turn 2's prompt holds turn 1's question and answer.
    pub fn answer(
        &self,
        q: &Question,
        system_prompt: Option<&str>,
        max_new_tokens: usize,
        temperature: f64,
        seed: u64,
    ) -> Result<[Turn; 2]> {
        let mut messages: Vec<Message> = system_prompt
            .map(|s| Message::new("system", s))
            .into_iter()
            .collect();
        let mut turns = Vec::with_capacity(2);
        for (i, question) in q.turns.iter().enumerate() {
            messages.push(Message::new("user", question.as_str()));
            let turn = self
                .generate(
                    &messages,
                    max_new_tokens,
                    temperature,
                    turn_seed(seed, &q.id, i as u8 + 1),
                )
                .with_context(|| format!("question {} turn {}", q.id, i + 1))?;
            messages.push(Message::new("assistant", turn.text.as_str()));
            turns.push(turn);
        }
        let [t1, t2]: [Turn; 2] = turns.try_into().map_err(|_| anyhow::anyhow!("two turns"))?;
        Ok([t1, t2])
    }

    fn generate(
        &self,
        messages: &[Message],
        max_new_tokens: usize,
        temperature: f64,
        seed: i64,
    ) -> Result<Turn> {
        let prompt = self.template.render(messages, true)?;
        let add_special = self.template.add_special_tokens(&prompt);
        let ids: Vec<i64> = self
            .tokenizer
            .encode(&prompt, add_special)?
            .into_iter()
            .map(i64::from)
            .collect();
        let context = self.model.config.max_position_embeddings as usize;
        if ids.len() >= context {
            bail!(
                "the prompt has {} tokens, the model's context is {context}",
                ids.len()
            );
        }
        // A long first answer leaves less room for the second; fewer new tokens rather than
        // no answer (the judge sees it was cut).
        let opts = GenerateOptions {
            max_new_tokens: max_new_tokens.min(context - ids.len()),
            temperature,
            top_p: 1.0,
            stop_tokens: self.stop_tokens.clone(),
            stop_strings: Vec::new(),
            seed,
        };
        let g = self.model.generate_text(&self.tokenizer, &ids, &opts)?;
        Ok(Turn {
            text: g.text.trim().to_string(),
            finish: match g.finish {
                Finish::Stop => "stop",
                Finish::Length => "length",
            },
            tokens: g.tokens.len(),
        })
    }
}

/// The seed of one turn's sampling: a hash of the stage's seed, the question and the turn, so
/// that an answer regenerated alone (after a resume) is the one the first attempt would have
/// made.
pub fn turn_seed(seed: u64, question_id: &str, turn: u8) -> i64 {
    let h = Sha256::digest(
        serde_json::json!([seed, question_id, turn])
            .to_string()
            .as_bytes(),
    );
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    i64::from_le_bytes(b)
}
