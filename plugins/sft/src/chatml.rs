//! ChatML, LeoLM's chat format, and the Jinja chat template that renders the same text.
//!
//! Every message becomes `<|im_start|>{role}\n{content}<|im_end|>\n`, contents verbatim (no
//! trimming: what the data says is what the model sees). A conversation without a system
//! message gets LeoLM's German default first, the same one the published chat models were
//! trained and are prompted with (LEOLM.md, "Chat SFT"). The template written into
//! `tokenizer_config.json` must render exactly what training saw, or every user of the
//! fine-tuned model (transformers' `apply_chat_template`, serving stacks) prompts it slightly
//! differently from how it was trained; the conformance test compares the two on real data.

use std::ops::Range;

use crate::formats::{Conversation, Role};

/// LeoLM's default system prompt, verbatim from the chat model cards.
pub const LEOLM_SYSTEM_PROMPT: &str = "Dies ist eine Unterhaltung zwischen einem intelligenten, \
hilfsbereitem KI-Assistenten und einem Nutzer.\nDer Assistent gibt ausführliche, hilfreiche und \
ehrliche Antworten.";

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatFormat {
    /// Inserted as the system message of conversations that have none; `None`: nothing is
    /// inserted.
    pub system_prompt: Option<String>,
}

impl Default for ChatFormat {
    fn default() -> Self {
        ChatFormat {
            system_prompt: Some(LEOLM_SYSTEM_PROMPT.to_string()),
        }
    }
}

/// Where one message landed in the rendered text (byte ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    pub role: Role,
    /// `{content}`.
    pub content: Range<usize>,
    /// Its closing `<|im_end|>`.
    pub end: Range<usize>,
}

impl ChatFormat {
    /// The conversation as ChatML text.
    pub fn render(&self, conversation: &Conversation) -> String {
        self.render_spans(conversation).0
    }

    /// The text and where each message's content and closing tag are (the inserted default
    /// system message included).
    pub(crate) fn render_spans(&self, conversation: &Conversation) -> (String, Vec<Span>) {
        let mut text = String::new();
        let mut spans = Vec::with_capacity(conversation.messages.len() + 1);
        let mut push = |role: Role, content: &str| {
            text.push_str(IM_START);
            text.push_str(role.as_str());
            text.push('\n');
            let start = text.len();
            text.push_str(content);
            let content = start..text.len();
            text.push_str(IM_END);
            let end = content.end..text.len();
            text.push('\n');
            spans.push(Span { role, content, end });
        };
        let has_system = conversation
            .messages
            .first()
            .is_some_and(|m| m.role == Role::System);
        if let (false, Some(prompt)) = (has_system, &self.system_prompt) {
            push(Role::System, prompt);
        }
        for m in &conversation.messages {
            push(m.role, &m.content);
        }
        (text, spans)
    }

    /// The Jinja chat template (`chat_template` in `tokenizer_config.json`) that renders what
    /// [`ChatFormat::render`] does; `add_generation_prompt` appends `<|im_start|>assistant\n`.
    pub fn template(&self) -> String {
        let mut t = String::new();
        if let Some(prompt) = &self.system_prompt {
            t.push_str("{%- if not messages or messages[0]['role'] != 'system' -%}");
            t.push_str("{{ '<|im_start|>system\\n' + ");
            t.push_str(&jinja_string(prompt));
            t.push_str(" + '<|im_end|>\\n' }}");
            t.push_str("{%- endif -%}");
        }
        t.push_str("{%- for message in messages -%}");
        t.push_str(
            "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}",
        );
        t.push_str("{%- endfor -%}");
        t.push_str("{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}");
        t
    }
}

/// `s` as a single-quoted Jinja string literal. Jinja decodes literals with Python's
/// `unicode-escape` after `backslashreplace`, so backslashes and quotes are escaped, control
/// characters written as escapes (a raw newline would survive, but `\r\n` would become `\n`),
/// and everything else, umlauts included, is kept as it is.
fn jinja_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::Message;

    fn conv(messages: Vec<Message>) -> Conversation {
        Conversation {
            id: "t".into(),
            messages,
        }
    }

    #[test]
    fn renders_chatml_with_the_default_system_prompt() {
        let c = conv(vec![
            Message::new(Role::User, "Hallo"),
            Message::new(Role::Assistant, "Hallo! Wie kann ich helfen?"),
        ]);
        assert_eq!(
            ChatFormat::default().render(&c),
            "<|im_start|>system\nDies ist eine Unterhaltung zwischen einem intelligenten, \
             hilfsbereitem KI-Assistenten und einem Nutzer.\nDer Assistent gibt ausführliche, \
             hilfreiche und ehrliche Antworten.<|im_end|>\n<|im_start|>user\nHallo<|im_end|>\n\
             <|im_start|>assistant\nHallo! Wie kann ich helfen?<|im_end|>\n"
        );
        assert_eq!(
            ChatFormat {
                system_prompt: None
            }
            .render(&c),
            "<|im_start|>user\nHallo<|im_end|>\n<|im_start|>assistant\nHallo! Wie kann ich helfen?<|im_end|>\n"
        );
    }

    #[test]
    fn a_system_message_of_its_own_replaces_the_default() {
        let c = conv(vec![
            Message::new(Role::System, "Sei knapp."),
            Message::new(Role::User, " a "),
            Message::new(Role::Assistant, "b\n"),
        ]);
        let (text, spans) = ChatFormat::default().render_spans(&c);
        assert_eq!(
            text,
            "<|im_start|>system\nSei knapp.<|im_end|>\n<|im_start|>user\n a <|im_end|>\n<|im_start|>assistant\nb\n<|im_end|>\n"
        );
        assert_eq!(spans.len(), 3);
        assert_eq!(&text[spans[1].content.clone()], " a ");
        assert_eq!(&text[spans[2].content.clone()], "b\n");
        assert_eq!(&text[spans[2].end.clone()], "<|im_end|>");
    }

    #[test]
    fn template_literals_escape_quotes_backslashes_and_control_characters() {
        assert_eq!(
            jinja_string("Sag's \\n\n\t\u{1}ü {{ x }}"),
            "'Sag\\'s \\\\n\\n\\t\\x01ü {{ x }}'"
        );
        let t = ChatFormat::default().template();
        assert!(t.contains("'Dies ist eine Unterhaltung zwischen einem intelligenten, hilfsbereitem KI-Assistenten und einem Nutzer.\\nDer Assistent gibt ausführliche, hilfreiche und ehrliche Antworten.'"));
        assert!(!ChatFormat {
            system_prompt: None
        }
        .template()
        .contains("system"));
    }
}
