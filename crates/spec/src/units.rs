//! Human units in workflow files: durations (`"90s"`, `"2h 30m"`) and memory (`"16GiB"`).

use std::time::Duration;

/// Parses a duration such as `"30s"`, `"2h"`, `"1h 30m"` or `"3days"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. \"90s\", \"2h\" or \"3days\"")
    })
}

/// Parses a memory size: a plain number of bytes or a number with a unit
/// (`K`/`KB`/`KiB`, `M`, `G`, `T`; decimal units are powers of 1000, `i` units of 1024).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a memory size; write e.g. \"512MiB\" or \"16GB\""))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0_f64.powi(4),
        other => {
            return Err(format!(
                "unknown memory unit `{other}` in `{text}`; use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB"
            ))
        }
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("`{text}` is not a positive memory size"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("512").unwrap(), 512);
        assert_eq!(parse_memory("2KiB").unwrap(), 2048);
        assert_eq!(parse_memory("1.5 GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_memory("16GiB").unwrap(), 16 << 30);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("3 parsecs").is_err());
        assert!(parse_memory("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
    }
}
