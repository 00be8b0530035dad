//! Parsers of the values that flags take: addresses given by host name, amounts of cpus and
//! memory, and durations in seconds. Each checks its value and says what is wrong in terms
//! of the flag, so that no value from the command line reaches a conversion that panics
//! (`Duration::from_secs_f64(1e300)` does) or a task with no limit (`--cpus 0`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The most cpus an amount may name: far above any host, far below float trouble.
const MAX_CPUS: f64 = 1_000_000.0;

/// The most MiB an amount may name (1 EiB).
const MAX_MIB: f64 = (1u64 << 40) as f64;

/// The longest duration a flag may name (ten years).
const MAX_SECONDS: f64 = 10.0 * 365.0 * 24.0 * 3600.0;

/// `HOST:PORT`, with `HOST` an address or a name to resolve (`localhost:5050`); an IPv4
/// address is preferred when a name has both kinds.
pub(crate) fn host_port(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !s.contains(':') {
        return Err(format!(
            "{s:?} is not HOST:PORT (for example 127.0.0.1:5050)"
        ));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// A finite number within `min..=max`, or a message about the amount.
fn number(s: &str, what: &str, min_exclusive: Option<f64>, max: f64) -> Result<f64, String> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of {what}"))?;
    if !value.is_finite() {
        return Err(format!("{s:?} is not a finite number of {what}"));
    }
    match min_exclusive {
        Some(min) if value <= min => {
            return Err(format!("{what} must be more than {min}, not {s}"));
        }
        None if value < 0.0 => return Err(format!("{what} cannot be negative ({s})")),
        _ => {}
    }
    if value > max {
        return Err(format!("{s} {what} is more than the most allowed, {max}"));
    }
    Ok(value)
}

/// An amount of cpus: more than 0 (fractions are fine).
pub(crate) fn cpus(s: &str) -> Result<f64, String> {
    number(s, "cpus", Some(0.0), MAX_CPUS)
}

/// An amount of memory in MiB: more than 0.
pub(crate) fn mib(s: &str) -> Result<f64, String> {
    number(s, "MiB", Some(0.0), MAX_MIB)
}

/// An amount of MiB that may be 0 (an agent that offers no disk).
pub(crate) fn mib_or_zero(s: &str) -> Result<f64, String> {
    number(s, "MiB", None, MAX_MIB)
}

/// A duration in seconds, 0 or more (fractions are fine), at most ten years.
pub(crate) fn seconds(s: &str) -> Result<Duration, String> {
    let value = number(s, "seconds", None, MAX_SECONDS)?;
    Duration::try_from_secs_f64(value).map_err(|e| format!("{s} seconds: {e}"))
}

/// A phi-accrual threshold: more than 0.
pub(crate) fn phi(s: &str) -> Result<f64, String> {
    number(s, "phi", Some(0.0), 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so that a failure names the input that caused it.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// A string that looks like a number often and like anything sometimes.
        fn text(&mut self) -> String {
            const SPECIAL: &[&str] = &[
                "",
                "-",
                "0",
                "-0",
                "1e300",
                "-1e300",
                "1e-320",
                "NaN",
                "inf",
                "-inf",
                "+5",
                " 5",
                "0x10",
                "1_000",
                "18446744073709551616",
                "1e308",
                "4.9e-324",
                "١",
            ];
            match self.next() % 4 {
                0 => SPECIAL[(self.next() % SPECIAL.len() as u64) as usize].to_string(),
                1 => f64::from_bits(self.next()).to_string(),
                2 => format!("{}", (self.next() as i64) as f64 / 1000.0),
                _ => (0..self.next() % 12)
                    .map(|_| char::from_u32((self.next() % 0x250) as u32).unwrap_or('?'))
                    .collect(),
            }
        }
    }

    #[test]
    fn every_parser_answers_random_input_without_panicking_and_accepts_only_what_it_says() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let s = rng.text();
            if let Ok(c) = cpus(&s) {
                assert!(c > 0.0 && c <= MAX_CPUS, "{s:?} -> {c}");
            }
            if let Ok(m) = mib(&s) {
                assert!(m > 0.0 && m <= MAX_MIB, "{s:?} -> {m}");
            }
            if let Ok(m) = mib_or_zero(&s) {
                assert!((0.0..=MAX_MIB).contains(&m), "{s:?} -> {m}");
            }
            if let Ok(d) = seconds(&s) {
                assert!(d.as_secs_f64() <= MAX_SECONDS, "{s:?} -> {d:?}");
            }
            if let Ok(p) = phi(&s) {
                assert!(p > 0.0, "{s:?} -> {p}");
            }
            let _ = host_port(&s);
        }
    }

    #[test]
    fn zero_and_negative_amounts_are_refused_with_a_message_about_the_amount() {
        assert_eq!(cpus("0"), Err("cpus must be more than 0, not 0".into()));
        assert!(cpus("-1").unwrap_err().contains("cpus must be more than 0"));
        assert!(mib("0").unwrap_err().contains("MiB must be more than 0"));
        assert_eq!(mib_or_zero("0"), Ok(0.0));
        assert!(seconds("-2").unwrap_err().contains("cannot be negative"));
        assert!(seconds("1e300").unwrap_err().contains("more than the most"));
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(cpus("0.5"), Ok(0.5));
    }

    #[test]
    fn a_host_name_resolves() {
        let addr = host_port("localhost:5050").expect("localhost resolves");
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 5050);
        assert!(host_port("localhost").unwrap_err().contains("HOST:PORT"));
        assert_eq!(host_port("127.0.0.1:1"), Ok("127.0.0.1:1".parse().unwrap()));
    }
}
