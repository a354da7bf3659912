//! Progress bars for running stages (indicatif), fed by engine events. Without a terminal,
//! plain lines on stderr instead.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use leo_engine::{EngineEvent, Observer};
use leo_state::StageStatus;

pub struct Progress {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    interactive: bool,
}

impl Progress {
    /// `quiet_stdout`: JSON goes to stdout, so everything human stays on stderr (it does anyway).
    pub fn new(_quiet_stdout: bool) -> Progress {
        let interactive = std::io::stderr().is_terminal();
        let target = if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            interactive,
        }
    }

    fn line(&self, text: String) {
        if self.interactive {
            let _ = self.multi.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    pub fn finish(&self) {
        if let Ok(mut bars) = self.bars.lock() {
            for (_, b) in bars.drain() {
                b.finish_and_clear();
            }
        }
    }

    fn bar(&self, stage: &str) -> Option<ProgressBar> {
        let mut bars = self.bars.lock().ok()?;
        Some(
            bars.entry(stage.to_string())
                .or_insert_with(|| {
                    let b = self.multi.add(ProgressBar::new_spinner());
                    b.set_style(spinner_style());
                    b.set_prefix(stage.to_string());
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                })
                .clone(),
        )
    }

    fn remove(&self, stage: &str) {
        if let Some(b) = self.bars.lock().ok().and_then(|mut m| m.remove(stage)) {
            b.finish_and_clear();
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:>12} {elapsed:>5} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("  {prefix:>12} [{bar:30}] {pos}/{len} {msg} {per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Observer for Progress {
    fn on(&self, event: EngineEvent) {
        match event {
            EngineEvent::RunStarted { run_id, stages } => {
                self.line(format!("leo: run {run_id} ({stages} stages)"))
            }
            EngineEvent::StageCached { stage, from_run } => {
                self.line(format!("  cached    {stage}  (from run {from_run})"))
            }
            EngineEvent::StageStarted {
                stage,
                attempt,
                resumed_from_step,
            } => {
                let note = match resumed_from_step {
                    Some(step) => format!(" (resuming from checkpoint step {step})"),
                    None if attempt > 1 => format!(" (attempt {attempt})"),
                    None => String::new(),
                };
                if let Some(b) = self.bar(&stage) {
                    b.set_message(format!("running{note}"));
                }
                if !self.interactive {
                    self.line(format!("  started   {stage}{note}"));
                }
            }
            EngineEvent::Progress {
                stage,
                done,
                total,
                unit,
            } => {
                if let Some(b) = self.bar(&stage) {
                    if let Some(t) = total {
                        if b.length() != Some(t) {
                            b.set_style(bar_style());
                            b.set_length(t);
                        }
                    }
                    b.set_position(done);
                    b.set_message(unit.unwrap_or_default());
                }
            }
            EngineEvent::Checkpoint {
                stage,
                step,
                digest,
            } => {
                self.line(format!(
                    "  checkpoint {stage} step {step}  {}",
                    crate::commands::short_digest(&digest)
                ));
            }
            EngineEvent::JobSubmitted { stage, job } => {
                if let Some(b) = self.bar(&stage) {
                    b.set_message(format!("submitted as {job}"));
                }
                self.line(format!("  submitted {stage} as {job}"));
            }
            EngineEvent::StageWaitingForLease { stage } => {
                self.line(format!(
                    "  waiting   {stage}: another engine is running the same work"
                ));
            }
            EngineEvent::StageRetrying {
                stage,
                attempt,
                error,
                delay_ms,
            } => {
                self.remove(&stage);
                self.line(format!(
                    "  retrying  {stage}: attempt {attempt} in {:.1}s after: {}",
                    delay_ms as f64 / 1000.0,
                    first_line(&error)
                ));
            }
            EngineEvent::StageFinished {
                stage,
                status,
                seconds,
                error,
            } => {
                self.remove(&stage);
                let mark = match status {
                    StageStatus::Succeeded => "done     ",
                    StageStatus::Failed => "FAILED   ",
                    StageStatus::Cancelled => "cancelled",
                    _ => status.as_str(),
                };
                let mut text = format!(
                    "  {mark} {stage}  {}",
                    crate::commands::format_seconds(seconds)
                );
                if let Some(e) = error {
                    text.push_str(&format!(": {}", first_line(&e)));
                }
                self.line(text);
            }
            EngineEvent::Cancelling => self.line("leo: cancelling running stages…".to_string()),
        }
    }
}

fn first_line(s: &str) -> String {
    elide_middle(s.lines().next().unwrap_or(""), 300)
}

/// At most `max` characters of a one-line message: its start (the reason) and its end (where a
/// failing process's log tail puts the actual error) with ` … ` between, so a long run of
/// progress lines before the error cannot push the error out of view.
pub(crate) fn elide_middle(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_string();
    }
    let head = max / 3;
    let tail = max - head - 3;
    let start: String = s.chars().take(head).collect();
    let end: String = s.chars().skip(count - tail).collect();
    format!("{start} … {end}")
}

#[cfg(test)]
mod tests {
    use super::elide_middle;

    #[test]
    fn a_long_failure_keeps_its_reason_and_its_last_words() {
        let msg = format!(
            "exited with code 1: {} | Error: disk full",
            "step 1/9 ".repeat(80)
        );
        let short = elide_middle(&msg, 120);
        assert_eq!(short.chars().count(), 120);
        assert!(short.starts_with("exited with code 1: "), "{short}");
        assert!(short.ends_with("Error: disk full"), "{short}");
        assert_eq!(elide_middle("short", 120), "short");
    }
}
