//! Human sizes: parsing `256K`/`4M`/`1G` (binary units) and printing `1.50 GiB`.

/// Parses a size with an optional binary suffix: `65536`, `64K`, `64k`, `64KiB`, `4M`, `1G`,
/// `1T`. A trailing `B` is accepted (`4MB` means 4 MiB: units are always binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "{s:?} is not a size (expected e.g. 65536, 256K, 4M, 1G)"
        ));
    }
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is too large"))?;
    let suffix = suffix.to_ascii_uppercase();
    let suffix = suffix.strip_suffix('B').unwrap_or(&suffix);
    let suffix = suffix.strip_suffix('I').unwrap_or(suffix);
    let shift = match suffix {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?} has an unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a rate in bytes per second: a size as [`parse_size`] takes it (`10M` is 10 MiB/s,
/// binary units, an optional `/s`), or a bit rate with a decimal (SI) prefix and `bit`, `bps`
/// or `b/s` (`100Mbit`, `1Gbps`, `800kbit`: 10^3, 10^6, 10^9 bits per second).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    // Bits: "bit" in any case, or a lower-case "b" in "bps" and "b/s" ("MB/s" is bytes).
    let bits = ["bit/s", "bits", "bit"]
        .iter()
        .find_map(|suf| lower.strip_suffix(suf))
        .or_else(|| {
            ["bps", "b/s"].iter().find_map(|suf| {
                t.strip_suffix(suf)
                    .map(|_| &lower[..lower.len() - suf.len()])
            })
        });
    let rate = if let Some(num) = bits {
        let (digits, prefix) =
            num.split_at(num.find(|c: char| !c.is_ascii_digit()).unwrap_or(num.len()));
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a rate (expected e.g. 10M, 100Mbit)"))?;
        let mult: u64 = match prefix {
            "" => 1,
            "k" => 1_000,
            "m" => 1_000_000,
            "g" => 1_000_000_000,
            "t" => 1_000_000_000_000,
            _ => return Err(format!("{s:?} has an unknown prefix (use k, M, G or T)")),
        };
        n.checked_mul(mult)
            .ok_or_else(|| format!("{s:?} is too large"))?
            / 8
    } else {
        parse_size(lower.strip_suffix("/s").unwrap_or(&lower)).map_err(|_| {
            format!("{s:?} is not a rate (expected e.g. 10M for 10 MiB/s, or 100Mbit)")
        })?
    };
    if rate == 0 {
        return Err(format!("{s:?}: a rate must be above zero"));
    }
    Ok(rate)
}

/// Formats a byte count in binary units: `512 B`, `16 KiB`, `1.50 GiB`.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut unit = 0;
    let mut v = n as f64;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if n.is_multiple_of(1u64 << (10 * unit)) {
        format!("{} {}", n >> (10 * unit), UNITS[unit])
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod rate_tests {
    use super::parse_rate;

    #[test]
    fn rates_take_byte_sizes_and_bit_rates() {
        assert_eq!(parse_rate("10M"), Ok(10 << 20));
        assert_eq!(parse_rate("10M/s"), Ok(10 << 20));
        assert_eq!(parse_rate("512K"), Ok(512 << 10));
        assert_eq!(parse_rate("100Mbit"), Ok(12_500_000));
        assert_eq!(parse_rate("1Gbps"), Ok(125_000_000));
        assert_eq!(parse_rate("800kbit/s"), Ok(100_000));
        assert_eq!(parse_rate("10MB/s"), Ok(10 << 20), "a capital B is bytes");
        assert_eq!(parse_rate("10Mb/s"), Ok(1_250_000));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10Xbit").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("256k"), Ok(256 << 10));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("4MB"), Ok(4 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("17000000T").is_err());
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(16384), "16 KiB");
        assert_eq!(format_size(20000), "19.53 KiB");
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(3 << 29), "1.50 GiB");
    }
}
