//! `leo metrics`: every metric event of a run, as CSV or as TensorBoard event files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use leo_state::{MetricRecord, State};

use super::state_location;
use crate::cli::MetricsFormat;

pub async fn metrics(
    state_flag: Option<String>,
    run: &str,
    stage: Option<&str>,
    format: MetricsFormat,
    out: Option<&Path>,
) -> Result<ExitCode> {
    let state = State::open_existing(&state_location(state_flag, None)).await?;
    let run = super::find_run(&state, run).await?;
    if let Some(stage) = stage {
        if !state.stages(&run.id).await?.iter().any(|s| s.name == stage) {
            bail!("run {} has no stage `{stage}`", run.id);
        }
    }
    let metrics = state.run_metrics(&run.id, stage).await?;
    match format {
        MetricsFormat::Csv => {
            let text = csv(&metrics);
            match out {
                Some(path) => std::fs::write(path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
        }
        MetricsFormat::Tensorboard => {
            let out = out.context("--format tensorboard writes files: name a folder with --out")?;
            let created_s = run.created_at / 1000;
            for (stage, records) in by_stage(&metrics) {
                let (path, bytes) = event_file(out, stage, created_s, &records);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&path, bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}  ({} metrics)", path.display(), records.len());
            }
            if metrics.is_empty() {
                eprintln!("leo: run {} has no metrics", run.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `stage,attempt,step,name,value,time_ms`, one line per metric event (the step empty when the
/// plugin gave none).
fn csv(metrics: &[MetricRecord]) -> String {
    let mut text = String::from("stage,attempt,step,name,value,time_ms\n");
    for m in metrics {
        let step = m.step.map(|s| s.to_string()).unwrap_or_default();
        // `{:?}`: the shortest text that reads back as the same number, with an exponent
        // for very small and very large values (`2.5e-5`, `1520.0`).
        text.push_str(&format!(
            "{},{},{step},{},{:?},{}\n",
            csv_field(&m.stage),
            m.attempt,
            csv_field(&m.name),
            m.value,
            m.at
        ));
    }
    text
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn by_stage(metrics: &[MetricRecord]) -> BTreeMap<&str, Vec<&MetricRecord>> {
    let mut stages: BTreeMap<&str, Vec<&MetricRecord>> = BTreeMap::new();
    for m in metrics {
        stages.entry(&m.stage).or_default().push(m);
    }
    stages
}

/// A stage's TensorBoard event file: `OUT/STAGE/events.out.tfevents.SECONDS.leo` (SECONDS: when
/// the run started), so TensorBoard shows each stage as a run of its own. Every attempt's
/// metrics are in it, in order; a metric without a step is at step 0.
fn event_file(
    out: &Path,
    stage: &str,
    created_s: i64,
    metrics: &[&MetricRecord],
) -> (PathBuf, Vec<u8>) {
    let path = out
        .join(stage)
        .join(format!("events.out.tfevents.{created_s}.leo"));
    let mut bytes = Vec::new();
    let first_wall = metrics.first().map_or(created_s as f64, |m| seconds(m.at));
    write_record(&mut bytes, &tfevents::file_version_event(first_wall));
    for m in metrics {
        write_record(
            &mut bytes,
            &tfevents::scalar_event(seconds(m.at), m.step.unwrap_or(0), &m.name, m.value as f32),
        );
    }
    (path, bytes)
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// A TFRecord: length, masked CRC-32C of the length, data, masked CRC-32C of the data.
fn write_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&tfevents::masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&tfevents::masked_crc(data).to_le_bytes());
}

/// The few protobuf messages of TensorBoard's event format, encoded by hand:
/// `Event { wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
/// summary = 5 (Summary) }`, `Summary { value = 1 (repeated Value) }`,
/// `Value { tag = 1 (string), simple_value = 2 (float) }`.
mod tfevents {
    const WIRE_VARINT: u8 = 0;
    const WIRE_FIXED64: u8 = 1;
    const WIRE_LEN: u8 = 2;
    const WIRE_FIXED32: u8 = 5;

    pub fn file_version_event(wall_time: f64) -> Vec<u8> {
        let mut event = Vec::new();
        key(&mut event, 1, WIRE_FIXED64);
        event.extend_from_slice(&wall_time.to_le_bytes());
        len_field(&mut event, 3, b"brain.Event:2");
        event
    }

    pub fn scalar_event(wall_time: f64, step: u64, tag: &str, value: f32) -> Vec<u8> {
        let mut value_msg = Vec::new();
        len_field(&mut value_msg, 1, tag.as_bytes());
        key(&mut value_msg, 2, WIRE_FIXED32);
        value_msg.extend_from_slice(&value.to_le_bytes());
        let mut summary = Vec::new();
        len_field(&mut summary, 1, &value_msg);

        let mut event = Vec::new();
        key(&mut event, 1, WIRE_FIXED64);
        event.extend_from_slice(&wall_time.to_le_bytes());
        key(&mut event, 2, WIRE_VARINT);
        varint(&mut event, step);
        len_field(&mut event, 5, &summary);
        event
    }

    fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, u64::from(field << 3 | u32::from(wire)));
    }

    fn len_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        key(out, field, WIRE_LEN);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// TFRecord's masked CRC: rotated right by 15 bits plus a constant.
    pub fn masked_crc(data: &[u8]) -> u32 {
        let crc = crc32c(data);
        crc.rotate_right(15).wrapping_add(0xa282_ead8)
    }

    /// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
    pub fn crc32c(data: &[u8]) -> u32 {
        const TABLE: [u32; 256] = {
            let mut table = [0u32; 256];
            let mut i = 0;
            while i < 256 {
                let mut crc = i as u32;
                let mut bit = 0;
                while bit < 8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0x82f6_3b78
                    } else {
                        crc >> 1
                    };
                    bit += 1;
                }
                table[i] = crc;
                i += 1;
            }
            table
        };
        let mut crc = !0u32;
        for &b in data {
            crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
        !crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_castagnoli_check_values() {
        assert_eq!(tfevents::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(tfevents::crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(tfevents::crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn scalar_events_encode_as_protobuf() {
        let e = tfevents::scalar_event(1.5, 300, "loss", 2.0);
        let mut want = vec![0x09];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0xac, 0x02]); // step 300 as a varint
        want.extend_from_slice(&[0x2a, 0x0d, 0x0a, 0x0b, 0x0a, 0x04]);
        want.extend_from_slice(b"loss");
        want.push(0x15);
        want.extend_from_slice(&2.0f32.to_le_bytes());
        assert_eq!(e, want);
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let m = |name: &str, step| MetricRecord {
            stage: "train".into(),
            attempt: 2,
            seq: 1,
            step,
            name: name.into(),
            value: 2.5e-5,
            at: 1_700_000_000_123,
        };
        assert_eq!(
            csv(&[m("lr", Some(10)), m("a,\"b\"", None)]),
            "stage,attempt,step,name,value,time_ms\n\
             train,2,10,lr,2.5e-5,1700000000123\n\
             train,2,,\"a,\"\"b\"\"\",2.5e-5,1700000000123\n"
        );
    }
}
