//! Byte quantities as Kubernetes writes memory (`512Mi`, `1G`, `1073741824`), read by
//! `--max-memory` and by the operator from a pod's memory limit, and the proxy-wide memory
//! budget a limit gives by default.

use crate::defaults::MAX_MEMORY_PERCENT_OF_LIMIT;

/// Bytes of a quantity: an unsigned decimal number, optionally with a fraction, and one of the
/// suffixes `Ki Mi Gi Ti Pi Ei` (powers of 1024) or `k M G T P E` (powers of 1000). The error
/// says what is accepted.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    const UNITS: [(&str, u64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    let bad = || {
        format!(
            "expected bytes, e.g. 536870912, 512Mi or 2Gi (suffixes Ki Mi Gi Ti, or k M G T), got {text:?}"
        )
    };
    let t = text.trim();
    let (number, unit) =
        UNITS.iter().find_map(|(s, m)| t.strip_suffix(s).map(|n| (n, *m))).unwrap_or((t, 1));
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return Err(bad());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let bytes = whole.checked_mul(unit).ok_or_else(bad)?;
    // The fraction's bytes, rounded down: `1.5Gi` is exact, `0.1` bytes is none.
    let digits = &fraction[..fraction.len().min(18)];
    let part = match digits.parse::<u128>() {
        Ok(f) => u128::from(unit) * f / 10u128.pow(digits.len() as u32),
        Err(_) => 0,
    };
    let part = u64::try_from(part).map_err(|_| bad())?;
    bytes.checked_add(part).ok_or_else(bad)
}

/// The budget a memory limit of `limit` bytes gives when `--max-memory` is not set.
pub fn budget_of_limit(limit: u64) -> u64 {
    limit / 100 * MAX_MEMORY_PERCENT_OF_LIMIT
}

/// The memory limit a cgroup file states: a number of bytes, or `None` for "max" (v2), the
/// page-rounded `i64::MAX` that v1 writes for no limit, and anything unreadable.
pub fn cgroup_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    // cgroup v1's "no limit" is i64::MAX rounded down to the page size; no machine has 2^60 B.
    (n < 1 << 60).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_kubernetes_spellings() {
        assert_eq!(parse_bytes("1073741824"), Ok(1 << 30));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("2G"), Ok(2_000_000_000));
        assert_eq!(parse_bytes(" 64k "), Ok(64_000));
        assert_eq!(parse_bytes("0"), Ok(0));
        for bad in ["", "Mi", "-1", "1.2.3", "12MB", "1e9", "20000000000Ei", "lots"] {
            let e = parse_bytes(bad).expect_err(bad);
            assert!(e.contains("expected bytes") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn cgroup_files_and_the_default_share() {
        assert_eq!(cgroup_limit("536870912\n"), Some(512 << 20));
        assert_eq!(cgroup_limit("max\n"), None);
        assert_eq!(cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(cgroup_limit(""), None);
        assert_eq!(budget_of_limit(1 << 30), (1 << 30) / 100 * MAX_MEMORY_PERCENT_OF_LIMIT);
        assert_eq!(budget_of_limit(1000), 500);
    }
}
