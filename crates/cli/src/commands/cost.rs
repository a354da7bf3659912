//! `leo plan`'s cost table: the engine's [`CostEstimate`] printed for people, or folded into
//! the plan's JSON entries.

use leo_engine::{CostEstimate, StageCost};
use serde_json::Value;

/// Adds each stage's estimate (with GPU-hours and the hardware they assume) to its plan entry:
/// the JSON stays an array of entries, so readers of the plan need not change.
pub fn with_estimates(mut entries: Value, cost: &CostEstimate) -> Value {
    if let Some(list) = entries.as_array_mut() {
        for entry in list {
            let Some(stage) = entry.get("stage").and_then(Value::as_str) else {
                continue;
            };
            let Some(c) = cost.stages.iter().find(|c| c.stage == stage) else {
                continue;
            };
            if let (Some(obj), Ok(mut e)) = (entry.as_object_mut(), serde_json::to_value(c)) {
                if let Some(m) = e.as_object_mut() {
                    m.remove("stage");
                    m.insert("gpu".into(), cost.hardware.gpu.clone().into());
                    m.insert("peak_tflops".into(), cost.hardware.peak_tflops.into());
                    m.insert("mfu".into(), cost.hardware.mfu.into());
                }
                obj.insert("estimate".into(), e);
            }
        }
    }
    entries
}

/// Prints the table, the totals, and each stage's storage and notes.
pub fn print(cost: &CostEstimate) {
    if cost.stages.is_empty() {
        return;
    }
    let hw = &cost.hardware;
    println!();
    println!(
        "cost estimate: {} at {} TFLOP/s bf16 peak, {}% MFU (--gpu, --mfu); FLOPs = 6·N·D + attention",
        hw.gpu.to_uppercase(),
        hw.peak_tflops,
        fmt_pct(hw.mfu)
    );
    let rows: Vec<[String; 9]> = cost.stages.iter().map(row).collect();
    let header = [
        "stage",
        "parameters",
        "tokens",
        "6·N·D",
        "attention",
        "FLOPs",
        "GPU-hours",
        "wall",
        "storage",
    ]
    .map(String::from);
    let total = [
        "total".to_string(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        sci(Some(cost.total_flops)),
        thousands(cost.total_gpu_hours.round() as u64),
        String::new(),
        bytes(cost.total_storage_bytes),
    ];
    let all: Vec<&[String; 9]> = std::iter::once(&header)
        .chain(rows.iter())
        .chain(std::iter::once(&total))
        .collect();
    let widths: Vec<usize> = (0..9)
        .map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &all {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    if !cost.unestimated.is_empty() {
        println!(
            "no estimate from their plugins (not counted): {}",
            cost.unestimated.join(", ")
        );
    }
    if !cost.incomplete.is_empty() {
        println!(
            "not in the FLOP and GPU-hour totals (unknown): {}",
            cost.incomplete.join(", ")
        );
    }
    for s in &cost.stages {
        for item in &s.estimate.storage {
            println!(
                "  {}: {} × {} = {}  {}",
                s.stage,
                item.count,
                bytes(item.bytes),
                bytes(item.total()),
                item.what
            );
        }
        if let Some(f) = &s.estimate.attention_formula {
            println!("  {}: attention = {f}", s.stage);
        }
        for n in &s.estimate.notes {
            println!("  {}: {n}", s.stage);
        }
    }
}

fn row(s: &StageCost) -> [String; 9] {
    let e = &s.estimate;
    [
        s.stage.clone(),
        e.parameters.map_or("-".into(), thousands),
        e.tokens.map_or("-".into(), thousands),
        sci(e.flops_dense),
        sci(e.flops_attention),
        sci(s.flops),
        s.gpu_hours
            .map_or("-".into(), |h| thousands(h.round() as u64)),
        match s.wall_hours {
            Some(h) => format!("{} h on {}", thousands(h.round() as u64), s.gpus),
            None => "-".into(),
        },
        bytes(s.storage_bytes),
    ]
}

fn fmt_pct(f: f64) -> String {
    let p = f * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round() as i64)
    } else {
        format!("{p}")
    }
}

/// `5.031e21`, or `-`.
fn sci(v: Option<f64>) -> String {
    match v {
        Some(x) if x > 0.0 => format!("{x:.3e}"),
        Some(_) => "0".into(),
        None => "-".into(),
    }
}

/// `13,015,864,320`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Decimal units (1 GB = 1e9 bytes), as disks are sold.
fn bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_people_read_them() {
        assert_eq!(thousands(13_015_864_320), "13,015,864,320");
        assert_eq!(thousands(999), "999");
        assert_eq!(bytes(4_685_711_155_200), "4.7 TB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(sci(Some(5.0306e21)), "5.031e21");
        assert_eq!(fmt_pct(0.45), "45");
        assert_eq!(fmt_pct(0.375), "37.5");
    }
}
